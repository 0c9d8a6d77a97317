// A page using /mqws.js behind a TCP balancer in front of two cluster nodes (one NATS
// JetStream log), whose node is killed with -9 (integration/browser/run.sh).
// Usage: node failover.mjs HTTP_A MQTT_A HTTP_B MQTT_B PID_A
// The balancer in this script sends each new connection to node A, or to node B when A refuses
// it, so the page and its WebSocket stay same-origin (both name the balancer). Steps: publish
// fo/1..20 on A with mosquitto_pub and wait for them in the page; kill node A (SIGKILL);
// publish fo/21..40 on B while the page reconnects, through the balancer, to B; publish
// fo/41..50 on B. Prints "result {json}" (seqs in arrival order, opens, sessions, gaps, errors,
// ms from the kill to the page open again and to its 50th message) or "error …" (exit 1).
import net from "node:net";
import { launch, say } from "./launch.mjs";
import { pub, sleep } from "./mqtt.mjs";

const [httpA, mqttA, httpB, mqttB, pidA] = process.argv.slice(2);

/** A TCP balancer: node A while it accepts connections, else node B. */
function balancer() {
  const sockets = new Set();
  const server = net.createServer((down) => {
    sockets.add(down);
    down.pause();
    const to = (port, fallback) => {
      const up = net.connect(Number(port), "127.0.0.1");
      up.once("connect", () => {
        sockets.add(up);
        up.pipe(down);
        down.pipe(up);
        down.resume();
        up.on("close", () => down.destroy());
        down.on("close", () => up.destroy());
      });
      up.once("error", () => (fallback ? to(fallback, null) : down.destroy()));
    };
    down.on("error", () => {});
    to(httpA, httpB);
  });
  return {
    listen: () => new Promise((r) => server.listen(0, "127.0.0.1", () => r(server.address().port))),
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

async function publish(port, from, to) {
  for (let i = from; i <= to; i++) await pub(port, `fo/${i}`, `m${i}`);
}

const lb = balancer();
const lbPort = await lb.listen();
const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${lbPort}/app/counter.html?f=fo/%23`);
  await page.waitForFunction(() => window.opens >= 1, null, { timeout: 10_000 });
  await publish(mqttA, 1, 20);
  await page.waitForFunction(() => window.seqs.length >= 20, null, { timeout: 10_000, polling: 100 });
  process.kill(Number(pidA), "SIGKILL");
  const killedAt = Date.now();
  await publish(mqttB, 21, 40);
  await page.waitForFunction(() => window.opens >= 2 && window.state === "open", null, { timeout: 30_000, polling: 50 })
    .catch(async () => {
      const now = await page.evaluate(() => ({ state: window.state, opens: window.opens }));
      throw new Error(`the page did not reconnect within 30 s of the kill: ${JSON.stringify(now)}`);
    });
  const reopenMs = Date.now() - killedAt;
  await publish(mqttB, 41, 50);
  await page.waitForFunction(() => window.seqs.length >= 50, null, { timeout: 15_000, polling: 50 })
    .catch(() => {});
  const allMs = Date.now() - killedAt;
  await sleep(500); // anything extra (a duplicate) would arrive now
  const r = await page.evaluate(() => ({
    seqs: window.seqs, opens: window.opens, sessions: window.sessions, gaps: window.gaps, errors: window.errors,
  }));
  Object.assign(r, { reopenMs, allMs });
  say(`result ${JSON.stringify(r)}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  lb.close();
}
