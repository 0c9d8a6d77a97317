// POST /publish from a page on another origin is refused; from a page mqws serves it works
// (integration/browser/run.sh). Usage: node crossorigin.mjs HTTP_PORT MQTT_PORT
// pages/post.html is served twice: by a Node http server in this script on another loopback
// port (another origin) and by mqws under /app/ (same origin). mosquitto_sub listens on post/#
// throughout. The other-origin page POSTs the JSON body with Content-Type application/json
// (a CORS request with a preflight) and as a "simple" no-cors text/plain request (no preflight,
// so it reaches /publish itself, whose answer the browser hides from the page but Playwright
// sees). Then the same-origin page POSTs. Waits at least 3 s after the other-origin attempts.
// Prints "result {json}": each attempt's outcome in the page, the HTTP status mqws gave each
// POST, and what mosquitto_sub received; or "error …" (exit 1).
import { launch, otherOrigin, say } from "./launch.mjs";
import { sub, sleep } from "./mqtt.mjs";

const [httpPort, mqttPort] = process.argv.slice(2);
const mqws = `http://127.0.0.1:${httpPort}`;

const other = await otherOrigin("post.html");
const otherBase = other.base;

const mqtt = sub(mqttPort, "post/#", "post/ready");
const browser = await launch();
try {
  await mqtt.ready();
  const statuses = [];
  const watch = (page, who) => page.on("response", (r) => {
    if (new URL(r.url()).pathname === "/publish") statuses.push({ who, method: r.request().method(), status: r.status() });
  });
  const cross = await browser.newPage();
  watch(cross, "cross");
  await cross.goto(`${otherBase}/post.html`);
  const crossJson = await cross.evaluate((b) => window.post(b, "post/cross"), mqws);
  const crossSimple = await cross.evaluate(
    (b) => window.post(b, "post/cross-simple", { contentType: "text/plain", mode: "no-cors" }), mqws);
  const crossDone = Date.now();
  const same = await browser.newPage();
  watch(same, "same");
  await same.goto(`${mqws}/app/post.html`);
  const sameJson = await same.evaluate(() => window.post(location.origin, "post/same"));
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && !mqtt.lines.some((l) => l.startsWith("post/same "))) await sleep(100);
  await sleep(Math.max(0, crossDone + 3000 - Date.now()));
  const shown = await cross.textContent("#out");
  say(`result ${JSON.stringify({
    crossJson, crossSimple, sameJson, statuses, crossShown: shown,
    received: mqtt.lines.filter((l) => !l.startsWith("post/ready ")),
  })}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  mqtt.stop();
  other.close();
}
