// A plain EventSource page on /sse counts messages while the server restarts
// (integration/browser/run.sh). Usage: node sse.mjs BASE_URL EXPECTED
// The page is pages/sse.html, served by mqws itself from http.static_dir under /app/.
// Prints "open" once the stream is open, "welcome N" each time the N-th stream opens (the shell
// waits for it after a restart), then "result {json}" when EXPECTED messages arrived or after
// 60 s: the seqs in arrival order, how often the stream opened, the welcomes'
// `recovered` flags and the errors the page saw.
import { launch, say } from "./launch.mjs";

const [base, expected] = process.argv.slice(2);

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(`${base}/app/sse.html?f=sse/%23`);
  await page.waitForFunction(() => window.welcomes.length >= 1, null, { timeout: 10_000 });
  say("open");
  const want = Number(expected);
  const deadline = Date.now() + 60_000;
  let welcomes = 1;
  while (Date.now() < deadline) {
    const [w, n] = await page.evaluate(() => [window.welcomes.length, window.seqs.length]);
    for (; welcomes < w; welcomes += 1) say(`welcome ${welcomes + 1}`);
    if (n >= want) break;
    await page.waitForTimeout(100);
  }
  await page.waitForTimeout(500); // anything extra (a duplicate) would arrive now
  say(`result ${JSON.stringify(await page.evaluate(() => ({
    seqs: window.seqs, opens: window.opens, errors: window.errors,
    recovered: window.welcomes.map((w) => w.recovered ?? null),
  })))}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
