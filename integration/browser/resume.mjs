// A page using /mqws.js counts messages while the server restarts (integration/browser/run.sh).
// Usage: node resume.mjs BASE_URL EXPECTED
// The page is served at BASE_URL/resume-test.html by Playwright's request routing (same
// origin as mqws, so it imports /mqws.js and passes the Origin check); mqws itself is real.
// Prints "open" once connected, then "result {json}" when EXPECTED messages arrived or after
// 60 s: the seqs in arrival order and how many times the client opened.
import { chromium } from "playwright-core";

const [base, expected] = process.argv.slice(2);
const say = (line) => process.stdout.write(`${line}\n`);
const PAGE = `<!doctype html><meta charset="utf-8"><title>resume</title><script type="module">
  import { connect } from "/mqws.js";
  window.seqs = []; window.opens = 0; window.gaps = [];
  const client = connect("ws://" + location.host + "/ws", { filters: ["resume/#"] });
  client.on("state", (s) => { if (s === "open") window.opens += 1; });
  client.on("gap", (g) => window.gaps.push(g));
  client.on("message", (m) => window.seqs.push(m.seq));
</script>`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // A document fulfilled by request routing has no network address, so Chromium's Local
    // Network Access check treats it as public and blocks its WebSocket to 127.0.0.1. Pages
    // mqws really serves (the dashboard, dashboard.mjs) run without this flag.
    "--disable-features=LocalNetworkAccessChecks",
  ],
});
try {
  const page = await browser.newPage();
  await page.route(`${base}/resume-test.html`, (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: PAGE }));
  await page.goto(`${base}/resume-test.html`);
  await page.waitForFunction(() => window.opens >= 1, null, { timeout: 10_000 });
  say("open");
  const want = Number(expected);
  await page.waitForFunction((n) => window.seqs.length >= n, want, { timeout: 60_000, polling: 100 })
    .catch(() => {});
  await page.waitForTimeout(500); // anything extra (a duplicate) would arrive now
  say(`result ${JSON.stringify(await page.evaluate(() => ({ seqs: window.seqs, opens: window.opens, gaps: window.gaps })))}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
