// Starts Debian's Chromium for the browser checks (playwright-core downloads nothing). The
// flags keep it from reaching out to the network, which is closed here.
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
