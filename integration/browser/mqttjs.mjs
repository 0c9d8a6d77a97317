// MQTT.js (npm `mqtt`, the client browsers use) in Node over mqws's `/mqtt`
// (integration/browser/run.sh). Usage: node mqttjs.mjs HTTP_PORT MQTT_PORT
// mosquitto_sub listens on mqttjs/# on the MQTT port throughout. For protocolVersion 4 and then
// 5, MQTT.js connects to ws://127.0.0.1:HTTP_PORT/mqtt, subscribes to mqttjs/vN/# at QoS 1,
// publishes QoS 1 to mqttjs/vN/echo and waits for it to come back; mosquitto_pub publishes
// mqttjs/vN/in on the MQTT port, which must reach it; then it publishes QoS 1 to mqttjs/vN/out,
// which mosquitto_sub must receive, and right after that PUBACK a `/ws` client (subprotocol
// mqws.v1.json; `ws`, a dependency of MQTT.js) sends `hello` and asks `history` of
// mqttjs/vN/out, which must hold the message with its seq. Every wait is at most 5 s.
// Prints "result {json}": MQTT.js's version, per protocol version what each step saw and how
// long it took, and what mosquitto_sub received; or "error …" (exit 1).
import { readFileSync } from "node:fs";
import mqtt from "mqtt";
import WebSocket from "ws";
import { say } from "./launch.mjs";
import { pub, sub, sleep } from "./mqtt.mjs";

const [httpPort, mqttPort] = process.argv.slice(2);
const WAIT_MS = 5000;
const { version } = JSON.parse(readFileSync(new URL("./node_modules/mqtt/package.json", import.meta.url)));

/** Resolves with the first value `get()` returns that is not undefined, or rejects after `ms`. */
async function until(get, what, ms = WAIT_MS) {
  const end = Date.now() + ms;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`no ${what} within ${ms} ms`);
    await sleep(20);
  }
}

/** Connects MQTT.js to `/mqtt` (no reconnect); resolves with the client and its CONNACK. */
function connect(protocolVersion) {
  const client = mqtt.connect(`ws://127.0.0.1:${httpPort}/mqtt`, {
    protocolVersion, clientId: `mqttjs-node-v${protocolVersion}-${process.pid}`,
    reconnectPeriod: 0, connectTimeout: WAIT_MS,
  });
  return new Promise((resolve, reject) => {
    client.once("connect", (connack) => resolve({ client, connack }));
    client.once("error", (e) => reject(new Error(`MQTT.js v${protocolVersion}: ${e.message}`)));
    client.once("close", () => reject(new Error(`MQTT.js v${protocolVersion}: closed before CONNACK`)));
  });
}

/** Opens `/ws`, says hello with `filter`, asks `history` of it; resolves with the reply frame. */
function history(filter) {
  const ws = new WebSocket(`ws://127.0.0.1:${httpPort}/ws`, "mqws.v1.json");
  const frames = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`/ws: no history reply in ${WAIT_MS} ms (frames: ${frames.join(" ")})`));
    }, WAIT_MS);
    ws.on("open", () => ws.send(JSON.stringify({ type: "hello", filters: [filter] })));
    ws.on("error", (e) => { clearTimeout(timer); reject(new Error(`/ws: ${e.message}`)); });
    ws.on("message", (data) => {
      const f = JSON.parse(data.toString());
      frames.push(f.type);
      if (f.type === "welcome") {
        ws.send(JSON.stringify({ type: "history", id: 1, filter, from: "earliest", limit: 10 }));
      } else if (f.id === 1 || f.type === "error") {
        clearTimeout(timer);
        ws.close(1000);
        resolve({ protocol: ws.protocol, frames, reply: f });
      }
    });
  });
}

const mosq = sub(mqttPort, "mqttjs/#", "mqttjs/ready");
const results = {};
try {
  await mosq.ready();
  for (const v of [4, 5]) {
    const base = `mqttjs/v${v}`;
    const nonce = `${process.pid}-${Date.now()}`;
    const r = (results[`v${v}`] = { steps: {} });
    let t = Date.now();
    const { client, connack } = await connect(v);
    r.steps.connectMs = Date.now() - t;
    r.connack = {
      returnCode: connack.returnCode, reasonCode: connack.reasonCode, protocolVersion: client.options.protocolVersion,
    };
    const got = [];
    client.on("message", (topic, payload, packet) => {
      got.push({ topic, payload: payload.toString(), qos: packet.qos, at: Date.now() });
    });
    const receive = (topic, payload, what) =>
      until(() => got.find((m) => m.topic === topic && m.payload === payload), what);
    try {
      t = Date.now();
      const granted = await client.subscribeAsync(`${base}/#`, { qos: 1 });
      r.granted = granted.map((g) => ({ topic: g.topic, qos: g.qos }));
      r.steps.subscribeMs = Date.now() - t;

      const echo = JSON.stringify({ from: "mqttjs", v, n: nonce, step: "echo" });
      t = Date.now();
      await client.publishAsync(`${base}/echo`, echo, { qos: 1 });
      const back = await receive(`${base}/echo`, echo, `${base}/echo back in MQTT.js`);
      r.echo = { qos: back.qos, ms: back.at - t };

      const inbound = JSON.stringify({ from: "mosquitto_pub", v, n: nonce });
      t = Date.now();
      await pub(mqttPort, `${base}/in`, inbound);
      const arrived = await receive(`${base}/in`, inbound, `mosquitto_pub's ${base}/in in MQTT.js`);
      r.inbound = { qos: arrived.qos, ms: arrived.at - t };

      const out = JSON.stringify({ from: "mqttjs", v, n: nonce, step: "out" });
      t = Date.now();
      await client.publishAsync(`${base}/out`, out, { qos: 1 });
      r.steps.outPubackMs = Date.now() - t;
      // Right after the PUBACK: the message must already be in the log.
      const h = await history(`${base}/out`);
      r.history = { protocol: h.protocol, frames: h.frames, reply: h.reply, ms: Date.now() - t };
      const line = `${base}/out ${out}`;
      await until(() => (mosq.lines.includes(line) ? true : undefined), `${base}/out at mosquitto_sub`);
      r.outMosquittoSubMs = Date.now() - t;
      r.expected = { out: JSON.parse(out) };
    } finally {
      t = Date.now();
      await client.endAsync();
      r.steps.endMs = Date.now() - t;
    }
  }
  const received = mosq.lines.filter((l) => !l.startsWith("mqttjs/ready "));
  say(`result ${JSON.stringify({ version, ...results, received })}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  say(`partial ${JSON.stringify(results)}`);
  process.exitCode = 1;
} finally {
  mosq.stop();
}
