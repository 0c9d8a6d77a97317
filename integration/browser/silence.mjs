// A page using /mqws.js behind a network that goes silent, like a laptop asleep
// (integration/browser/run.sh). Usage: node silence.mjs HTTP_PORT MQTT_PORT
// mqws runs with a short keepalive (ws.ping_interval 1 s, ws.pong_timeout 2 s). The page,
// pages/counter.html, and its WebSocket both go through a TCP proxy in this script, so they
// stay same-origin (Origin and Host both name the proxy). Steps: publish sleep 1..20 with
// mosquitto_pub and wait for them; pause the proxy (no byte forwarded either way, no socket
// closed); publish 21..60; wait until mqws dropped the silent connection (its pong timeout
// counter rises and the proxy sees the upstream socket end) while the page still believes it is
// open; resume the proxy, which resets the page's socket whose upstream ended (what a woken
// laptop gets: the server's FIN/RST); wait for the page to reconnect; publish 61..80. Prints
// "result {json}" (seqs in arrival order, opens, gaps, errors, the state seen while paused,
// pong timeouts, proxied sockets the server closed during the pause, pause length) or
// "error …" (exit 1).
import net from "node:net";
import { launch, say } from "./launch.mjs";
import { pub, sleep } from "./mqtt.mjs";

const [httpPort, mqttPort] = process.argv.slice(2);

/**
 * A TCP proxy to 127.0.0.1:`target` that can go silent. Paused, it keeps reading from both
 * sides (so no socket closes or backs up) but forwards nothing and holds what it read; resumed,
 * it forwards what it held, except on connections whose other side ended meanwhile: those are
 * reset on the side that is still open, with what was held for it dropped.
 */
function pausableProxy(target) {
  const pairs = new Set();
  const proxy = { paused: false, closedWhilePaused: 0 };
  const server = net.createServer((down) => {
    const up = net.connect(Number(target), "127.0.0.1");
    const pair = { down, up, held: { up: [], down: [] }, ended: { up: false, down: false } };
    pairs.add(pair);
    const wire = (from, to, name, other) => {
      const gone = () => {
        if (!pair.ended[name] && proxy.paused && name === "up") proxy.closedWhilePaused += 1;
        pair.ended[name] = true;
      };
      from.on("data", (b) => (proxy.paused ? pair.held[other].push(b) : to.write(b)));
      from.on("end", () => {
        gone();
        if (!proxy.paused) to.end();
      });
      from.on("error", () => {}); // "close" follows
      from.on("close", () => {
        gone();
        if (!proxy.paused) to.end();
        if (pair.ended.up && pair.ended.down) pairs.delete(pair);
      });
    };
    wire(up, down, "up", "down");
    wire(down, up, "down", "up");
  });
  proxy.listen = () => new Promise((r) => server.listen(0, "127.0.0.1", () => r(server.address().port)));
  proxy.pause = () => { proxy.paused = true; proxy.closedWhilePaused = 0; };
  proxy.resume = () => {
    proxy.paused = false;
    for (const p of pairs) {
      for (const [name, sock, other] of [["up", p.down, "down"], ["down", p.up, "up"]]) {
        // `name` ended while paused: reset `sock`, the side still open, and drop its data.
        if (p.ended[name] && !p.ended[other]) {
          p.held[other] = [];
          sock.resetAndDestroy();
        }
      }
      for (const b of p.held.up.splice(0)) if (!p.ended.up) p.up.write(b);
      for (const b of p.held.down.splice(0)) if (!p.ended.down) p.down.write(b);
    }
  };
  proxy.close = () => {
    for (const p of pairs) { p.up.destroy(); p.down.destroy(); }
    server.close();
  };
  return proxy;
}

async function pongTimeouts() {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const m = text.match(/^mqws_ws_pong_timeouts_total(?:\{[^}]*\})?\s+(\S+)/m);
  return m ? Number(m[1]) : 0;
}

async function publish(from, to) {
  for (let i = from; i <= to; i++) await pub(mqttPort, `sleep/${i}`, `m${i}`);
}

async function waitFor(what, cond, timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const proxy = pausableProxy(httpPort);
const proxyPort = await proxy.listen();
const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${proxyPort}/app/counter.html?f=sleep/%23`);
  await page.waitForFunction(() => window.opens >= 1, null, { timeout: 10_000 });
  const seen = () => page.evaluate(() => window.seqs.length);
  await publish(1, 20);
  await waitFor("seqs 1..20 before the pause", async () => (await seen()) >= 20, 10_000);
  const before = await pongTimeouts();
  proxy.pause();
  const pausedAt = Date.now();
  await publish(21, 60);
  await waitFor(
    "mqws to drop the silent connection (mqws_ws_pong_timeouts_total and the upstream socket's end)",
    async () => (await pongTimeouts()) > before && proxy.closedWhilePaused >= 1,
    20_000,
  );
  const whilePaused = await page.evaluate(() => ({ state: window.state, opens: window.opens, seqs: window.seqs.length }));
  const closedWhilePaused = proxy.closedWhilePaused;
  proxy.resume();
  const pausedMs = Date.now() - pausedAt;
  await page.waitForFunction(() => window.opens >= 2, null, { timeout: 15_000 }).catch(async () => {
    const now = await page.evaluate(() => ({ state: window.state, opens: window.opens }));
    throw new Error(`the page did not reconnect within 15 s of the resume: ${JSON.stringify(now)}`);
  });
  await publish(61, 80);
  await page.waitForFunction(() => window.seqs.length >= 80, null, { timeout: 15_000, polling: 100 })
    .catch(() => {});
  await page.waitForTimeout(500); // anything extra (a duplicate) would arrive now
  const r = await page.evaluate(() => ({ seqs: window.seqs, opens: window.opens, gaps: window.gaps, errors: window.errors }));
  Object.assign(r, { whilePaused, pongTimeouts: (await pongTimeouts()) - before, closedWhilePaused, pausedMs });
  say(`result ${JSON.stringify(r)}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  proxy.close();
}
