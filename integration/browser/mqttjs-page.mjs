// MQTT.js's browser bundle in Chromium over mqws's `/mqtt`: from a page mqws serves it works;
// from a page on another origin the handshake is refused (integration/browser/run.sh).
// Usage: node mqttjs-page.mjs HTTP_PORT MQTT_PORT
// pages/mqtt.html is served by mqws under /app/ (same origin) and by a Node http server in this
// script on another loopback port (another origin); node_modules/mqtt/dist/mqtt.min.js is
// injected into both (no CDN). mosquitto_sub listens on mqttjs-page/# throughout. The
// same-origin page connects to ws://<its host>/mqtt, subscribes to mqttjs-page/#, publishes QoS
// 1 to mqttjs-page/own and waits for it back (and at mosquitto_sub); then mosquitto_pub sends
// mqttjs-page/in, which must reach the page. The other-origin page connects to mqws's /mqtt
// (waiting at most 3 s for the outcome), then tries to publish QoS 1 to mqttjs-page/cross, and
// its outcome is read 3 s after that. Every other wait is at most 5 s.
// Prints "result {json}": what each page reported, the /mqtt handshake errors Chromium logged,
// mqws's mqws_mqtt_ws_refused_total{reason="origin"} before and after, and what mosquitto_sub
// received; or "error …" (exit 1).
import { fileURLToPath } from "node:url";
import { launch, otherOrigin, say } from "./launch.mjs";
import { pub, sub, sleep } from "./mqtt.mjs";

const [httpPort, mqttPort] = process.argv.slice(2);
const mqws = `http://127.0.0.1:${httpPort}`;
const bundle = fileURLToPath(new URL("./node_modules/mqtt/dist/mqtt.min.js", import.meta.url));
const WAIT_MS = 5000;

const other = await otherOrigin("mqtt.html");
const otherBase = other.base;

/** mqws's count of `/mqtt` handshakes refused for their Origin. */
async function originRefusals() {
  const text = await (await fetch(`${mqws}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("mqws_mqtt_ws_refused_total") && l.includes('reason="origin"'));
  return line ? Number(line.trim().split(/\s+/).pop()) : 0;
}

/** Opens `url` with MQTT.js injected, recording Chromium's console errors about `/mqtt`. */
async function open(browser, url) {
  const page = await browser.newPage();
  const handshake = [];
  page.on("console", (m) => { if (m.type() === "error" && m.text().includes("/mqtt")) handshake.push(m.text()); });
  page.on("websocket", (ws) => ws.on("socketerror", (e) => handshake.push(`socketerror ${e}`)));
  await page.goto(url);
  await page.addScriptTag({ path: bundle });
  return { page, handshake };
}

/** Waits until the page has received `topic` with `payload`; resolves with ms since `since`. */
async function received(page, topic, payload, since) {
  const m = await page.waitForFunction(
    ([t, p]) => window.messages.find((x) => x.topic === t && x.payload === p),
    [topic, payload], { timeout: WAIT_MS, polling: 20 }).then((h) => h.jsonValue());
  return { qos: m.qos, ms: m.at - since };
}

const mosq = sub(mqttPort, "mqttjs-page/#", "mqttjs-page/ready");
const browser = await launch();
try {
  await mosq.ready();
  const refusedBefore = await originRefusals();
  const nonce = `${process.pid}-${Date.now()}`;

  const same = await open(browser, `${mqws}/app/mqtt.html`);
  let t = Date.now();
  const sameStart = await same.page.evaluate(() => window.start(undefined, "mqttjs-page/#"));
  const sameConnectMs = Date.now() - t;
  if (!sameStart.ok) {
    const events = await same.page.evaluate(() => window.events);
    throw new Error(`the same-origin page did not connect: ${JSON.stringify(events)}`);
  }
  const own = JSON.stringify({ from: "page", n: nonce });
  t = Date.now();
  const ownPublish = await same.page.evaluate(([p]) => window.publish("mqttjs-page/own", p), [own]);
  const ownBack = await received(same.page, "mqttjs-page/own", own, t);
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline && !mosq.lines.includes(`mqttjs-page/own ${own}`)) await sleep(20);
  const inbound = JSON.stringify({ from: "mosquitto_pub", n: nonce });
  t = Date.now();
  await pub(mqttPort, "mqttjs-page/in", inbound);
  const inArrived = await received(same.page, "mqttjs-page/in", inbound, t);

  const cross = await open(browser, `${otherBase}/mqtt.html`);
  t = Date.now();
  const crossStart = await Promise.race([
    cross.page.evaluate((u) => window.start(u, "mqttjs-page/#"), `ws://127.0.0.1:${httpPort}/mqtt`),
    sleep(3000).then(() => ({ pending: true })),
  ]);
  const crossStartMs = Date.now() - t;
  // Not awaited: MQTT.js queues a publish while it is not connected.
  await cross.page.evaluate(() => {
    window.publish("mqttjs-page/cross", "from another origin").then((r) => { window.crossPublish = r; });
  });
  const crossTried = Date.now();
  while (Date.now() < crossTried + 3000) await sleep(crossTried + 3000 - Date.now()); // timers may fire early
  const watchedMs = Date.now() - t, waitedMs = Date.now() - crossTried;
  const crossEvents = await cross.page.evaluate(() => ({
    events: window.events, messages: window.messages, publish: window.crossPublish ?? "pending",
  }));
  const refusedAfter = await originRefusals();

  say(`result ${JSON.stringify({
    same: {
      start: sameStart, connectMs: sameConnectMs, publish: ownPublish, own: ownBack, inbound: inArrived,
      events: await same.page.evaluate(() => window.events), handshake: same.handshake,
    },
    cross: { start: crossStart, startMs: crossStartMs, watchedMs, waitedMs, ...crossEvents, handshake: cross.handshake },
    refused: { before: refusedBefore, after: refusedAfter },
    received: mosq.lines.filter((l) => !l.startsWith("mqttjs-page/ready ")),
    nonce,
  })}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  mosq.stop();
  other.close();
}
