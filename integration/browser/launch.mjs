// Starts Debian's Chromium for the browser checks (playwright-core downloads nothing). The
// flags keep it from reaching out to the network, which is closed here.
import http from "node:http";
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

/** Launches headless Chromium (`CHROMIUM` overrides /usr/bin/chromium). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** Writes one line on stdout: the shell script waits for these. */
export const say = (line) => process.stdout.write(`${line}\n`);

/**
 * Serves `pages/NAME` at `/NAME` from a Node server on another loopback port, so the page's
 * origin is not mqws's. Resolves to `{ base, close }`.
 */
export async function otherOrigin(name) {
  const html = readFileSync(new URL(`./pages/${name}`, import.meta.url));
  const server = http.createServer((req, res) => {
    if (req.url === `/${name}`) {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(html);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { base: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}
