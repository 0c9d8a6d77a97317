// A page using /mqws.js counts messages while the server restarts (integration/browser/run.sh).
// Usage: node resume.mjs BASE_URL EXPECTED
// The page is pages/counter.html, served by mqws itself from http.static_dir under /app/.
// Prints "open" once connected, "welcome N" each time the client opens for the N-th time (the
// shell waits for it after a restart, so each restart is one reconnect however fast the
// publishes go), then "result {json}" when EXPECTED messages arrived or after 60 s: the seqs in
// arrival order and how many times the client opened.
import { launch, say } from "./launch.mjs";

const [base, expected] = process.argv.slice(2);

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(`${base}/app/counter.html?f=resume/%23`);
  await page.waitForFunction(() => window.opens >= 1, null, { timeout: 10_000 });
  say("open");
  const want = Number(expected);
  const deadline = Date.now() + 60_000;
  let opens = 1;
  while (Date.now() < deadline) {
    const [o, n] = await page.evaluate(() => [window.opens, window.seqs.length]);
    for (; opens < o; opens += 1) say(`welcome ${opens + 1}`);
    if (n >= want) break;
    await page.waitForTimeout(100);
  }
  await page.waitForTimeout(500); // anything extra (a duplicate) would arrive now
  say(`result ${JSON.stringify(await page.evaluate(() => ({ seqs: window.seqs, opens: window.opens, gaps: window.gaps })))}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
