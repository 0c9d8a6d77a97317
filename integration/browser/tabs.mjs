// Two tabs of the same page and a duplicated tab, all on pages/counter.html (served by mqws from
// http.static_dir). A duplicated tab inherits a copy of sessionStorage, so it holds the same
// session as its original; the client must notice and start its own session instead of the two
// taking the session from each other (close 4002) in a loop.
// Usage: node tabs.mjs BASE_URL ; prints "open" when all three are connected, then, after the
// test publishes one message on tabs/x, "result {json}" with each tab's state, opens, sessions,
// errors and seqs.
import { launch, say } from "./launch.mjs";

const [base] = process.argv.slice(2);
const url = `${base}/app/counter.html?f=tabs/%23`;

const browser = await launch();
try {
  const context = await browser.newContext();
  const first = await context.newPage();
  await first.goto(url);
  await first.waitForFunction(() => window.opens >= 1, null, { timeout: 10_000 });
  // What Chrome's "Duplicate tab" copies: the origin's sessionStorage.
  const copied = await first.evaluate(() => Object.entries(sessionStorage));
  const duplicate = await context.newPage();
  await duplicate.addInitScript((entries) => {
    if (!sessionStorage.length) for (const [k, v] of entries) sessionStorage.setItem(k, v);
  }, copied);
  await duplicate.goto(url);
  const second = await context.newPage();
  await second.goto(url);
  const tabs = { first, duplicate, second };
  for (const p of Object.values(tabs)) {
    await p.waitForFunction(() => window.opens >= 1, null, { timeout: 10_000 });
  }
  // Long enough for a takeover loop (4002, reconnect, 4002…) to show.
  await first.waitForTimeout(3000);
  say("open");
  for (const p of Object.values(tabs)) {
    await p.waitForFunction(() => window.seqs.length >= 1, null, { timeout: 10_000 }).catch(() => {});
  }
  const result = {};
  for (const [name, p] of Object.entries(tabs)) {
    result[name] = await p.evaluate(() => ({
      state: window.state, opens: window.opens, sessions: window.sessions,
      errors: window.errors, seqs: window.seqs,
    }));
  }
  result.copied = copied.map(([k]) => k);
  say(`result ${JSON.stringify(result)}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
