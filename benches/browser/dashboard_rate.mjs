// Benchmark (not a test): the dashboard at `/` in headless Chromium under a steady MQTT load.
//
// Starts the given mqws binary on free loopback ports with a fresh data dir, opens the page in
// Debian's Chromium (integration/browser/launch.mjs: same flags, downloads nothing), drives
// --rate msg/s for --duration s with publish.py (paho-mqtt, QoS 0, --topics topics, ~110-byte
// JSON) and every --sample s prints: the page's JS heap (CDP Performance.getMetrics
// JSHeapUsedSize), DOM nodes, frames rendered (requestAnimationFrame callbacks counted in the
// page) and the longest gap between two, messages the page received (the dashboard's own
// "N received" counter, refreshed every 500 ms so it trails by up to that; window.received on the
// plain page; "sent" is the publisher's count, reported every 0.25 s), the rate, the renderer's
// main-thread busy time (CDP TaskDuration), and CPU of mqws, Chromium's renderer, the publisher
// and everything else on the machine (from /proc). After the load it waits for the page to drain,
// then forces a GC and reads the heap once more. With --pages dashboard,plain the same load then
// runs against pages/count.html, which only counts messages through /mqws.js, in the same mqws
// process, so the dashboard's own cost is a same-run ratio.
//
// Usage: node dashboard_rate.mjs --mqws-bin PATH [--rate 5000] [--duration 60] [--topics 200]
//          [--payload-bytes N (default ~110)] [--sample 5] [--pages dashboard,plain] [--json FILE]
//          [--static-dir DIR --dashboard-path /app/…/index.html]
// --static-dir replaces pages/ as mqws's http.static_dir (it must hold count.html for the plain
// page): with a copy of the dashboard there, a change can be measured without a rebuild.
// Prints the tables and a Markdown block for benches/RESULTS.md; exits 1 if a page never
// connected or threw. See benches/browser/run.sh.
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { launch } from "../../integration/browser/launch.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const opts = {
  "mqws-bin": null, rate: 5000, duration: 60, topics: 200, "payload-bytes": 0, sample: 5, pages: "dashboard,plain", json: null,
  "static-dir": null, "dashboard-path": "/",
};
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, "");
  if (!(k in opts) || process.argv[i + 1] === undefined) {
    console.error(`unknown or incomplete option ${process.argv[i]}`);
    process.exit(2);
  }
  opts[k] = typeof opts[k] === "number" ? Number(process.argv[i + 1]) : process.argv[i + 1];
}
if (!opts["mqws-bin"]) {
  console.error("--mqws-bin PATH is required");
  process.exit(2);
}
const PAGES = {
  dashboard: { url: opts["dashboard-path"], label: `dashboard (\`${opts["dashboard-path"]}\`)` },
  plain: { url: "/app/count.html", label: "count only (`/mqws.js`, no rendering)" },
};
const pages = opts.pages.split(",").filter(Boolean);
for (const p of pages) if (!PAGES[p]) throw new Error(`unknown page ${p} (known: ${Object.keys(PAGES)})`);

const MB = 1024 * 1024;
const TICK = 100; // /proc/*/stat clock ticks per second (getconf CLK_TCK)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const say = (s = "") => process.stdout.write(`${s}\n`);
const withTimeout = (p, ms, what) =>
  Promise.race([p, sleep(ms).then(() => { throw new Error(`${what}: no answer within ${ms} ms`); })]);

async function freePort() {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const { port } = s.address();
  s.close();
  await once(s, "close");
  return port;
}

// ---------- /proc: CPU and RSS of our processes and of the machine ----------

function readProcs() {
  const out = new Map(); // pid -> {ppid, ticks, rssKiB, cmd}
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, "utf8");
      out.set(Number(d), {
        ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), rssKiB: (Number(f[21]) * 4096) / 1024, cmd,
      });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
function machineTicks() {
  const v = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = v[3] + v[4];
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}
/** CPU ticks and RSS of our processes by role, and of the machine. */
function snapshot(roles) {
  const procs = readProcs();
  const kids = new Map(); // ppid -> [pid]
  for (const [pid, p] of procs) (kids.get(p.ppid) ?? kids.set(p.ppid, []).get(p.ppid)).push(pid);
  const ours = [];
  const stack = [process.pid];
  while (stack.length) {
    const pid = stack.pop();
    ours.push(pid);
    for (const k of kids.get(pid) ?? []) stack.push(k);
  }
  const perPid = new Map();
  let rendererRssKiB = 0;
  for (const pid of ours) {
    const p = procs.get(pid);
    if (!p) continue;
    let role = "chromium";
    if (pid === process.pid) role = "node";
    else if (pid === roles.mqws) role = "mqws";
    else if (pid === roles.publisher) role = "publisher";
    else if (p.cmd.includes("--type=renderer")) role = "renderer";
    perPid.set(pid, { role, ticks: p.ticks });
    if (role === "renderer") rendererRssKiB += p.rssKiB;
  }
  return { perPid, machine: machineTicks(), rendererRssKiB, mqwsRssKiB: procs.get(roles.mqws)?.rssKiB ?? 0, at: Date.now() };
}
/** % of one core per role between two snapshots (a process new in `b` counts from 0). */
function cpuBetween(a, b) {
  const secs = (b.at - a.at) / 1000;
  const by = { mqws: 0, publisher: 0, renderer: 0, chromium: 0, node: 0 };
  let ours = 0;
  for (const [pid, p] of b.perPid) {
    const d = p.ticks - (a.perPid.get(pid)?.ticks ?? 0);
    if (d < 0) continue;
    by[p.role] += d;
    ours += d;
  }
  const pct = (t) => (100 * t) / TICK / secs;
  const out = {};
  for (const k of Object.keys(by)) out[k] = pct(by[k]);
  // Machine busy time is in the same ticks, summed over cores.
  out.other = Math.max(0, pct(b.machine.busy - a.machine.busy - ours));
  return out;
}

// ---------- page-side probes ----------

// Counts requestAnimationFrame callbacks and the longest gap between two (reset per read).
const FRAME_COUNTER = () => {
  window.__bench = { frames: 0, maxGap: 0, last: 0 };
  const tick = (t) => {
    const b = window.__bench;
    if (b.last) b.maxGap = Math.max(b.maxGap, t - b.last);
    b.last = t;
    b.frames++;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
};
const READ_PAGE = () => {
  const b = window.__bench;
  const out = { frames: b.frames, maxGap: b.maxGap, received: null, notDrawn: 0, topics: null };
  b.maxGap = 0;
  if (typeof window.received === "number") out.received = window.received;
  else {
    const c = document.getElementById("counters")?.textContent ?? "";
    const m = /^(\d+) received/.exec(c);
    if (m) out.received = Number(m[1]);
    out.notDrawn = Number(/(\d+) not drawn/.exec(c)?.[1] ?? 0);
    out.topics = document.getElementById("topic-count")?.textContent ?? null;
  }
  return out;
};

async function metrics(cdp) {
  const { metrics: list } = await withTimeout(cdp.send("Performance.getMetrics"), 15000, "Performance.getMetrics");
  return Object.fromEntries(list.map((m) => [m.name, m.value]));
}

// ---------- one page under load ----------

async function runPage(browser, name, base, mqttPort, roles) {
  const spec = PAGES[name];
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  await page.addInitScript(FRAME_COUNTER);
  await page.goto(`${base}${spec.url}`);
  if (name === "dashboard") {
    await page.waitForFunction(() => document.querySelector("#state")?.textContent === "open", null, { timeout: 15000 });
  } else {
    await page.waitForFunction(() => window.state === "open", null, { timeout: 15000 });
  }
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  await cdp.send("HeapProfiler.enable");
  await sleep(2000);
  await cdp.send("HeapProfiler.collectGarbage");
  const m0 = await metrics(cdp);
  const p0 = await page.evaluate(READ_PAGE);
  say(`--- ${spec.label}: ${opts.rate} msg/s for ${opts.duration} s over ${opts.topics} topics${opts["payload-bytes"] ? `, ~${opts["payload-bytes"]}-byte payloads` : ""}; heap after GC ${(m0.JSHeapUsedSize / MB).toFixed(1)} MB, ${m0.Nodes} DOM nodes`);

  const pub = spawn("python3", [
    path.join(HERE, "publish.py"), "--port", String(mqttPort), "--rate", String(opts.rate),
    "--duration", String(opts.duration), "--topics", String(opts.topics), "--payload-bytes", String(opts["payload-bytes"]),
  ], { stdio: ["ignore", "pipe", "inherit"] });
  roles.publisher = pub.pid;
  const pubState = { sent: 0, done: null, ready: false };
  const readyP = new Promise((resolve, reject) => {
    readline.createInterface({ input: pub.stdout }).on("line", (line) => {
      let j;
      try { j = JSON.parse(line); } catch { return; }
      if (j.ready) { pubState.ready = true; resolve(); }
      if (j.error) reject(new Error(`publisher: ${j.error}`));
      if (typeof j.sent === "number") pubState.sent = j.sent;
      if (j.done) pubState.done = j;
    });
    pub.on("exit", (code) => !pubState.ready && reject(new Error(`publisher exited with ${code}`)));
  });
  const pubExit = once(pub, "exit");
  await withTimeout(readyP, 15000, "publisher");

  const rows = [];
  const t0 = Date.now();
  let prev = { t: 0, m: m0, p: p0, s: snapshot(roles), sent: 0 };
  const header = "    t s |     sent |  received | recv/s | heap MB | DOM nodes |  fps | max gap ms | main busy % (script/layout/style) | renderer % | mqws % | pub % | other % | note";
  say(header);
  const sample = async (label) => {
    const s = snapshot(roles);
    const m = await metrics(cdp);
    const p = await withTimeout(page.evaluate(READ_PAGE), 15000, "page.evaluate");
    const t = (Date.now() - t0) / 1000;
    const dt = t - prev.t;
    const cpu = cpuBetween(prev.s, s);
    const row = {
      label, t, sent: pubState.done ? pubState.done.sent : pubState.sent, received: p.received,
      recvRate: p.received != null && prev.p.received != null ? (p.received - prev.p.received) / dt : null,
      heapUsed: m.JSHeapUsedSize, heapTotal: m.JSHeapTotalSize, nodes: m.Nodes,
      fps: (p.frames - prev.p.frames) / dt, maxGap: p.maxGap,
      mainBusy: (100 * (m.TaskDuration - prev.m.TaskDuration)) / dt,
      script: (100 * (m.ScriptDuration - prev.m.ScriptDuration)) / dt,
      layout: (100 * (m.LayoutDuration - prev.m.LayoutDuration)) / dt,
      style: (100 * (m.RecalcStyleDuration - prev.m.RecalcStyleDuration)) / dt,
      rendererRssMB: s.rendererRssKiB / 1024, mqwsRssMB: s.mqwsRssKiB / 1024,
      cpu, notDrawn: p.notDrawn, topics: p.topics,
    };
    rows.push(row);
    prev = { t, m, p, s };
    say(`${label.padStart(7)} | ${String(row.sent).padStart(8)} | ${String(row.received).padStart(9)} | ${row.recvRate == null ? "     -" : row.recvRate.toFixed(0).padStart(6)} | ${(row.heapUsed / MB).toFixed(1).padStart(7)} | ${String(row.nodes).padStart(9)} | ${row.fps.toFixed(1).padStart(4)} | ${row.maxGap.toFixed(0).padStart(10)} | ${`${row.mainBusy.toFixed(0)} (${row.script.toFixed(0)}/${row.layout.toFixed(0)}/${row.style.toFixed(0)})`.padStart(32)} | ${cpu.renderer.toFixed(0).padStart(10)} | ${cpu.mqws.toFixed(0).padStart(6)} | ${cpu.publisher.toFixed(0).padStart(5)} | ${cpu.other.toFixed(0).padStart(7)} | ${row.topics ?? ""}${row.notDrawn ? ` · ${row.notDrawn} not drawn` : ""}`);
    return row;
  };
  for (let k = 1; k * opts.sample <= opts.duration + 1e-9; k++) {
    await sleep(Math.max(0, t0 + k * opts.sample * 1000 - Date.now()));
    await sample((k * opts.sample).toFixed(0));
  }
  await withTimeout(pubExit, 30000, "publisher exit");
  roles.publisher = null;
  const sent = pubState.done?.sent ?? pubState.sent;
  // Drain: until the page has everything, or nothing new for 3 s (at most 15 s).
  let last = rows.at(-1).received;
  let still = Date.now();
  const drainEnd = Date.now() + 15000;
  while (Date.now() < drainEnd) {
    await sleep(500);
    const r = (await page.evaluate(READ_PAGE)).received;
    if (r >= sent) break;
    if (r !== last) { last = r; still = Date.now(); } else if (Date.now() - still > 3000) break;
  }
  await sleep(600); // one more tree/counter refresh on the dashboard
  const end = await sample("end");
  await cdp.send("HeapProfiler.collectGarbage");
  const mg = await metrics(cdp);
  say(`    after GC: heap ${(mg.JSHeapUsedSize / MB).toFixed(1)} MB, ${mg.Nodes} DOM nodes; renderer RSS ${end.rendererRssMB.toFixed(0)} MB; publisher: ${sent} sent in ${pubState.done?.elapsed ?? "?"} s`);
  await context.close();
  const load = rows.filter((r) => r.label !== "end");
  const avg = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const summary = {
    page: name, label: spec.label, rate: opts.rate, duration: opts.duration, topics: opts.topics,
    sent, received: end.received, publisherElapsed: pubState.done?.elapsed ?? null,
    heapStartMB: m0.JSHeapUsedSize / MB,
    heapPeakMB: Math.max(...rows.map((r) => r.heapUsed)) / MB,
    heapEndMB: end.heapUsed / MB,
    heapEndAfterGcMB: mg.JSHeapUsedSize / MB,
    nodesEnd: mg.Nodes,
    fpsMin: Math.min(...load.map((r) => r.fps)), fpsAvg: avg(load.map((r) => r.fps)),
    maxGapMs: Math.max(...load.map((r) => r.maxGap)),
    recvRateMin: Math.min(...load.map((r) => r.recvRate ?? 0)), recvRateAvg: avg(load.map((r) => r.recvRate ?? 0)),
    mainBusyAvg: avg(load.map((r) => r.mainBusy)),
    scriptAvg: avg(load.map((r) => r.script)), layoutAvg: avg(load.map((r) => r.layout)), styleAvg: avg(load.map((r) => r.style)),
    cpuAvg: Object.fromEntries(Object.keys(load[0].cpu).map((k) => [k, avg(load.map((r) => r.cpu[k]))])),
    cpuOtherMax: Math.max(...load.map((r) => r.cpu.other)),
    rendererRssPeakMB: Math.max(...rows.map((r) => r.rendererRssMB)),
    mqwsRssPeakMB: Math.max(...rows.map((r) => r.mqwsRssMB)),
    notDrawn: end.notDrawn, topicsShown: end.topics, problems, rows,
  };
  return summary;
}

// ---------- main ----------

const work = fs.mkdtempSync(path.join(os.tmpdir(), "mqws-dash-bench-"));
const mqttPort = await freePort();
const httpPort = await freePort();
const roles = { mqws: null, publisher: null };
let mqws = null;
let browser = null;
let exitCode = 0;
async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  browser = null;
  if (roles.publisher) try { process.kill(roles.publisher, "SIGKILL"); } catch { /* gone */ }
  if (mqws && mqws.exitCode === null) {
    mqws.kill("SIGTERM");
    await Promise.race([once(mqws, "exit"), sleep(15000)]);
    if (mqws.exitCode === null && mqws.signalCode === null) mqws.kill("SIGKILL");
  }
  fs.rmSync(work, { recursive: true, force: true });
}
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => cleanup().finally(() => process.exit(130)));

try {
  const env = { ...process.env, MQWS_HTTP__STATIC_DIR: path.resolve(opts["static-dir"] ?? path.join(HERE, "pages")) };
  delete env.MQWS_CONFIG;
  const log = fs.openSync(path.join(work, "mqws.log"), "a");
  mqws = spawn(opts["mqws-bin"], [
    "serve", "--mqtt-listen", `127.0.0.1:${mqttPort}`, "--http-listen", `127.0.0.1:${httpPort}`,
    "--data-dir", path.join(work, "data"),
  ], { env, stdio: ["ignore", log, log] });
  roles.mqws = mqws.pid;
  const base = `http://127.0.0.1:${httpPort}`;
  let ready = false;
  for (let i = 0; i < 100 && !ready; i++) {
    try { ready = (await fetch(`${base}/readyz`)).ok; } catch { /* not yet */ }
    if (!ready) await sleep(100);
  }
  if (!ready) throw new Error(`mqws not ready: ${fs.readFileSync(path.join(work, "mqws.log"), "utf8").slice(-2000)}`);
  say(`mqws ${opts["mqws-bin"]} on mqtt 127.0.0.1:${mqttPort}, http ${base}; ${os.cpus().length} CPUs; ${new Date().toISOString()}`);
  // The binary embeds the dashboard at build time: say whether it is the working tree's.
  let embedded = `the dashboard measured is ${opts["dashboard-path"]} from ${opts["static-dir"]}, not the binary's`;
  if (opts["dashboard-path"] === "/") {
    const served = await (await fetch(`${base}/dashboard.js`)).text();
    const tree = fs.readFileSync(path.join(HERE, "../../bridge/assets/dashboard.js"), "utf8");
    embedded = served === tree
      ? "the served /dashboard.js is bridge/assets/dashboard.js"
      : "the served /dashboard.js DIFFERS from bridge/assets/dashboard.js (stale build?)";
  }
  say(embedded);
  browser = await launch();
  say(`chromium ${browser.version()}`);
  const results = [];
  for (const [i, name] of pages.entries()) {
    if (i) await sleep(3000);
    results.push(await runPage(browser, name, base, mqttPort, roles));
  }
  const serverLog = fs.readFileSync(path.join(work, "mqws.log"), "utf8");
  const warnings = serverLog.split("\n").filter((l) => /\b(WARN|ERROR)\b/.test(l));

  say("\nsummary");
  const f1 = (x) => (x == null ? "–" : x.toFixed(1));
  const f0 = (x) => (x == null ? "–" : x.toFixed(0));
  const md = [
    "| page | sent | received | received ÷ sent | recv/s avg (min 5 s window) | JS heap MB start / peak / end / end after GC | DOM nodes end (after GC) | fps avg / min | longest frame gap ms | renderer main thread busy % (script / layout / style) | CPU % renderer / mqws / publisher / other (avg) | renderer RSS peak MB |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of results) {
    md.push(`| ${r.label} | ${r.sent} | ${r.received} | ${(r.received / r.sent).toFixed(4)} | ${f0(r.recvRateAvg)} (${f0(r.recvRateMin)}) | ${f1(r.heapStartMB)} / ${f1(r.heapPeakMB)} / ${f1(r.heapEndMB)} / ${f1(r.heapEndAfterGcMB)} | ${r.nodesEnd} | ${f1(r.fpsAvg)} / ${f1(r.fpsMin)} | ${f0(r.maxGapMs)} | ${f0(r.mainBusyAvg)} (${f0(r.scriptAvg)} / ${f0(r.layoutAvg)} / ${f0(r.styleAvg)}) | ${f0(r.cpuAvg.renderer)} / ${f0(r.cpuAvg.mqws)} / ${f0(r.cpuAvg.publisher)} / ${f0(r.cpuAvg.other)} (max other ${f0(r.cpuOtherMax)}) | ${f0(r.rendererRssPeakMB)} |`);
  }
  if (results.length === 2) {
    const [a, b] = results;
    md.push("");
    md.push(`${a.page} ÷ ${b.page}: heap end after GC ${(a.heapEndAfterGcMB / b.heapEndAfterGcMB).toFixed(2)}×, heap peak ${(a.heapPeakMB / b.heapPeakMB).toFixed(2)}×, renderer CPU ${(a.cpuAvg.renderer / b.cpuAvg.renderer).toFixed(2)}×, main thread busy ${(a.mainBusyAvg / b.mainBusyAvg).toFixed(2)}×, fps avg ${(a.fpsAvg / b.fpsAvg).toFixed(2)}×.`);
  }
  for (const r of results) {
    if (r.topicsShown) md.push(`\n${r.page}: topic panel "${r.topicsShown}"${r.notDrawn ? `, ${r.notDrawn} messages not drawn as rows (too fast; counted)` : ", every message drawn as a row"}.`);
    if (r.problems.length) md.push(`\n${r.page}: page problems: ${r.problems.slice(0, 5).join("; ")}`);
  }
  md.push(`\n${embedded}.`);
  md.push(`\nmqws: ${warnings.length} WARN/ERROR lines in its log${warnings.length ? ` (first: ${warnings[0].slice(0, 200)})` : ""}; peak RSS ${f0(Math.max(...results.map((r) => r.mqwsRssPeakMB)))} MB.`);
  say(md.join("\n"));
  if (opts.json) fs.writeFileSync(opts.json, JSON.stringify({ opts, chromium: browser.version(), results, warnings: warnings.slice(0, 50) }, null, 2));
  if (results.some((r) => r.problems.length)) exitCode = 1;
} catch (e) {
  say(`error ${e.stack ?? e}`);
  exitCode = 1;
} finally {
  await cleanup();
}
process.exit(exitCode);
