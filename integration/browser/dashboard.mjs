// Drives the dashboard at `/` in Debian's Chromium for integration/tests/browser.rs.
// Usage: node dashboard.mjs BASE_URL SCREENSHOT_PATH
// Prints one line per step on stdout ("open", "row <epoch ms when seen> …", "published …", "done"); the Rust test
// publishes with mosquitto_pub after "open" and checks mosquitto_sub after "published".
// Any failure prints "error …" and exits 1.
import { launch, say } from "./launch.mjs";

const [base, shot] = process.argv.slice(2);

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  await page.goto(`${base}/`);
  await page.waitForFunction(() => document.querySelector("#state")?.textContent === "open", null, { timeout: 10_000 });
  say("open");
  const row = page.locator('#messages [data-topic="dash/t"]').first();
  await row.waitFor({ timeout: 10_000 });
  say(`row ${Date.now()} ${(await row.textContent()).replace(/\s+/g, " ").trim()}`);
  await page.fill("#pub-topic", "dash/cmd");
  await page.fill("#pub-payload", '{"op":"start"}');
  await page.click("#pub-send");
  await page.waitForFunction(() => /puback|—|_/.test(document.querySelector("#pub-result")?.textContent ?? ""), null, { timeout: 10_000 });
  say(`published ${await page.textContent("#pub-result")}`);
  await page.waitForTimeout(300);
  await page.screenshot({ path: shot, fullPage: true });
  if (problems.length) throw new Error(problems.join("; "));
  say("done");
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
