// mqws dashboard (GET /): a live view of the bridge built on /mqws.js.
//
// Per message the work is O(1): counters, one Map lookup, an exponentially decayed rate, a
// ring-buffer slot and, when it passes the list filter, a push onto the render queue. The DOM is
// touched only in requestAnimationFrame: at most ROWS_PER_FRAME new rows every LIST_MS (under
// overload the list shows the newest and counts what it skipped), the topic tree and counters at
// most every TREE_MS. Topics and payloads come from publishers, so they only ever reach the page
// through textContent and data attributes.
//
// Memory is bounded in bytes, not only in counts, whatever the publishers send: a message is
// kept as a small record whose payload text is cut at KEEP_CHARS (the parsed payload is dropped
// at once); the list, its queue and the ring hold at most ~2,000 such records (~4 MB at worst);
// the topic table keeps at most MAX_TOPICS topics and about TOPICS_BYTES, evicting the least
// recently updated topic (summed under "(evicted)"). Topics longer than TOPIC_CHARS are counted
// together, and the tree is at most MAX_DEPTH levels deep. Whatever was cut or evicted says so
// on the page.
// The bounded model itself (records, bounded JSON text, the topic table) is in
// dashboard-model.js.

import { connect, topicMatches } from "/mqws.js";
import {
  KEEP_CHARS, MAX_TOPICS, TOPICS_BYTES, TOPIC_CHARS, Topics, bump, compact, cutText, newStat, nowS,
  pretty, rateOf,
} from "/dashboard-model.js";

const MAX_ROWS = 500; // list entries kept
const ROWS_PER_FRAME = 50;
const LIST_MS = 100; // the list takes new rows at most this often (a rebuilt list fills every frame)
const TREE_MS = 500; // topic tree, counters and value refresh
const STATUS_MS = 2000;
const MAX_TREE_NODES = 3000; // rendered at once
const MAX_GAPS_SHOWN = 100;
const PREVIEW = 240;
const TOKEN_KEY = "mqws-dashboard:token";
const SUBS_KEY = "mqws-dashboard:filters";

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
const store = {
  get: (k) => { try { return sessionStorage.getItem(k); } catch { return null; } },
  set: (k, v) => { try { if (v == null) sessionStorage.removeItem(k); else sessionStorage.setItem(k, v); } catch { /* private mode */ } },
};

const total = newStat("");
const topics = new Topics();
let shown = []; // tree nodes with elements on the page

const ring = new Array(MAX_ROWS); // records of the newest MAX_ROWS messages, whatever the list filter
let ringHead = 0;
let ringLen = 0;
let queue = []; // records waiting to become rows (already filtered)
let backfill = 0; // frames left to draw a rebuilt list in full (50 rows each) before sampling
let skipped = 0;
let paused = false;
let pausedNew = 0;
let listFilter = () => true;
let selected = null; // {topic} follows the topic's last value; {message} is fixed
let detailDue = false;

function onMessage(m) {
  const t = nowS();
  bump(total, t);
  const s = topics.touch(m.topic, t);
  bump(s, t);
  const tracked = s !== topics.other;
  // An untracked topic is over TOPIC_CHARS: the list keeps only its beginning.
  const r = compact(m, KEEP_CHARS, tracked ? s.topic : `${cutText(m.topic, TOPIC_CHARS).text}…`);
  if (tracked) topics.setLast(s, r);
  ring[ringHead] = r;
  ringHead = (ringHead + 1) % MAX_ROWS;
  if (ringLen < MAX_ROWS) ringLen++;
  if (selected && selected.topic === m.topic) detailDue = true;
  if (paused) {
    pausedNew++;
  } else if (listFilter(m.topic)) {
    queue.push(r);
    if (queue.length > 2 * MAX_ROWS) {
      skipped += queue.length - MAX_ROWS;
      queue = queue.slice(-MAX_ROWS);
    }
    schedule();
  }
}

/** Last values from the log (client.last) for topics not seen live yet. */
function seed(messages) {
  for (const m of messages) {
    if (!m || typeof m.topic !== "string") continue;
    const s = topics.touch(m.topic);
    if (s !== topics.other && (!s.last || s.last.seq < m.seq)) topics.setLast(s, compact(m, KEEP_CHARS, s.topic));
  }
  if (selected && selected.topic) detailDue = true;
}

// ---------- rendering ----------

let frameReq = 0;
let treeDue = true;
function schedule() {
  if (!frameReq) frameReq = requestAnimationFrame(frame);
}
let listAt = -Infinity;
function frame(now) {
  frameReq = 0;
  // New rows move every row on screen, so the whole list is painted again: under a fast stream,
  // doing that on every frame costs most of the frame rate, and nobody reads 60 updates a second.
  if (!paused && queue.length && (backfill > 0 || now - listAt >= LIST_MS)) {
    listAt = now;
    renderRows();
  }
  if (treeDue) {
    treeDue = false;
    renderTree();
    renderCounters();
  }
  if (detailDue) {
    detailDue = false;
    if (selected && selected.topic) {
      const s = topics.get(selected.topic);
      if (s && s.last) renderDetail(s.last);
    }
  }
  if (!paused && queue.length) schedule();
}

const rowMsg = new WeakMap(); // row -> record
const liNode = new WeakMap(); // tree item -> node
function pad(n, w = 2) {
  return String(n).padStart(w, "0");
}
function fmtTime(ts) {
  if (!Number.isFinite(ts)) return "";
  const d = new Date(ts);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}
function preview(r) {
  return r.cut || r.text.length > PREVIEW ? `${r.text.slice(0, PREVIEW)}…` : r.text;
}
function row(r) {
  const li = el("li", r.replay ? "replay" : "");
  li.dataset.seq = String(r.seq);
  li.dataset.topic = r.topic;
  li.append(el("span", "ts", fmtTime(r.ts)), el("span", "seq", String(r.seq)), el("span", "topic", r.topic));
  if (r.enc !== "json") li.append(el("span", `enc enc-${r.enc === "base64" ? "b64" : "text"}`, r.enc));
  if (r.retain) li.append(el("span", "enc", "retained"));
  li.append(el("span", "pl", preview(r)));
  rowMsg.set(li, r);
  return li;
}
function renderRows() {
  const list = $("messages");
  if (backfill > 0) backfill--;
  else if (queue.length > ROWS_PER_FRAME) {
    skipped += queue.length - ROWS_PER_FRAME;
    queue = queue.slice(-ROWS_PER_FRAME);
  }
  const batch = queue.splice(0, ROWS_PER_FRAME);
  if (!queue.length) backfill = 0;
  const frag = document.createDocumentFragment();
  for (let i = batch.length - 1; i >= 0; i--) frag.append(row(batch[i])); // newest on top
  list.prepend(frag);
  while (list.childElementCount > MAX_ROWS) list.lastElementChild.remove();
}
/** Refills the list from the ring (after a filter change, resume or clear). */
function rebuildList() {
  $("messages").replaceChildren();
  queue = [];
  for (let i = 0; i < ringLen; i++) {
    const r = ring[(ringHead - ringLen + i + MAX_ROWS) % MAX_ROWS];
    if (listFilter(r.topic)) queue.push(r);
  }
  backfill = Math.ceil(queue.length / ROWS_PER_FRAME);
  schedule();
}

function fmtRate(r) {
  if (r < 0.05) return "0/s";
  return r >= 100 ? `${Math.round(r)}/s` : `${r.toFixed(1)}/s`;
}
function aggregate(n, t) {
  let count = n.stat ? n.stat.count : 0;
  let rate = n.stat ? rateOf(n.stat, t) : 0;
  for (const c of n.children.values()) {
    aggregate(c, t);
    count += c.aggCount;
    rate += c.aggRate;
  }
  n.aggCount = count;
  n.aggRate = rate;
}
function renderTree() {
  const t = nowS();
  aggregate(topics.root, t);
  const ev = topics.evicted;
  const count = $("topic-count");
  setText(count, `${topics.size} topics${ev.topics ? ` · ${ev.topics} evicted` : ""}`);
  count.title = ev.topics
    ? `At most ${MAX_TOPICS} topics and about ${fmtBytes(TOPICS_BYTES)} are kept; beyond that the least recently updated topic is dropped`
    : "";
  if (!topics.shape) {
    for (const n of shown) updateNode(n);
    renderTail();
    return;
  }
  topics.shape = false;
  for (const n of shown) n.el = null;
  shown = [];
  const budget = { left: MAX_TREE_NODES };
  const ul = $("topics");
  ul.replaceChildren(...renderChildren(topics.root, budget, null));
  tail.other = el("li", "muted");
  tail.other.title = `Topics longer than ${TOPIC_CHARS} characters are counted together`;
  tail.evicted = el("li", "muted evicted");
  tail.evicted.title = count.title || "";
  ul.append(tail.other, tail.evicted);
  if (budget.left <= 0) ul.append(el("li", "muted", "… more topics than shown"));
  renderTail();
}
const tail = { other: null, evicted: null }; // the summary lines under the tree
function renderTail() {
  const o = topics.other.count;
  const ev = topics.evicted;
  tail.other.hidden = !o;
  if (o) setText(tail.other, `(other topics) ${o}`);
  tail.evicted.hidden = !ev.topics;
  if (ev.topics) setText(tail.evicted, `(evicted) ${ev.topics} topics, ${ev.count} messages`);
}
/** Writes only a changed text: an unchanged one would still cost a layout. */
function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}
function renderChildren(n, budget, prefix) {
  const out = [];
  const kids = [...n.children.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const c of kids) {
    if (budget.left-- <= 0) break;
    const path = prefix === null ? c.name : `${prefix}/${c.name}`;
    const li = el("li");
    li.setAttribute("role", "treeitem");
    li.dataset.path = path;
    liNode.set(li, c);
    if (c.stat) li.dataset.topic = c.stat.topic;
    if (selected && selected.topic === path && c.stat) li.classList.add("sel");
    const line = el("div", "node");
    const tw = el("button", "tw", c.children.size ? (c.open ? "▾" : "▸") : "");
    tw.type = "button";
    tw.tabIndex = c.children.size ? 0 : -1;
    if (c.children.size) li.setAttribute("aria-expanded", String(c.open));
    const name = el("span", c.name === "" ? "name empty" : "name", c.name === "" ? "(empty)" : c.name);
    const cnt = el("span", "cnt");
    const rate = el("span", "rate");
    line.append(tw, name, cnt, rate);
    li.append(line);
    c.el = { cnt, rate, lastCnt: "", lastRate: "" };
    shown.push(c);
    updateNode(c);
    if (c.open && c.children.size) {
      const group = el("ul");
      group.setAttribute("role", "group");
      group.append(...renderChildren(c, budget, path));
      li.append(group);
    }
    out.push(li);
  }
  return out;
}
function updateNode(n) {
  const c = String(n.aggCount);
  const r = fmtRate(n.aggRate);
  if (c !== n.el.lastCnt) n.el.cnt.textContent = n.el.lastCnt = c;
  if (r !== n.el.lastRate) n.el.rate.textContent = n.el.lastRate = r;
}

function renderCounters() {
  const shown = $("messages").childElementCount;
  let s = `${total.count} received · ${fmtRate(rateOf(total, nowS()))} · ${shown} shown`;
  if (skipped) s += ` · ${skipped} not drawn (too fast)`;
  if (paused) s += ` · paused, ${pausedNew} new`;
  $("counters").textContent = s;
}

function renderDetail(r) {
  $("detail-topic").textContent = r.topic;
  const meta = [`seq ${r.seq}`, fmtTime(r.ts), r.enc];
  if (r.retain) meta.push("retained");
  if (r.replay) meta.push("replay");
  // The page keeps only the beginning of a large payload.
  if (r.cut) {
    const of = r.size == null ? "" : ` of ${r.size}`;
    meta.push(r.enc === "base64" ? `first ${(r.text.length / 4) * 3}${of} bytes kept` : `first ${r.text.length}${of} chars kept`);
  }
  $("detail-meta").textContent = meta.join(" · ");
  $("detail-payload").textContent = pretty(r);
}
function select(sel) {
  selected = sel;
  for (const li of $("topics").querySelectorAll("li.sel")) li.classList.remove("sel");
  if (sel.topic) {
    const s = topics.get(sel.topic);
    $("topics").querySelector(`li[data-path="${CSS.escape(sel.topic)}"]`)?.classList.add("sel");
    if (s && s.last) renderDetail(s.last);
    else {
      $("detail-topic").textContent = sel.topic;
      $("detail-meta").textContent = "";
      $("detail-payload").textContent = "no message yet";
    }
  } else renderDetail(sel.message);
}

// ---------- connection ----------

let token = store.get(TOKEN_KEY) || "";
let filters = parseFilters(store.get(SUBS_KEY) ?? "#");
let client = null;

function parseFilters(text) {
  return [...new Set(String(text).split(/[\s,]+/).filter(Boolean))];
}

function start() {
  client?.close();
  hide("notice");
  const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
  const c = connect(wsUrl, { filters, token: token || undefined, key: "mqws-dashboard" });
  client = c;
  let seeded = false;
  const on = (ev, fn) => c.on(ev, (v) => c === client && fn(v));
  on("state", setState);
  on("message", onMessage);
  on("gap", addGap);
  on("welcome", (w) => {
    const s = $("session");
    s.textContent = String(w.session ?? "").slice(0, 14);
    s.title = `session ${w.session}${w.resumed ? " (resumed)" : ""} · ${w.server ?? ""}`;
    filters = c.filters;
    if (document.activeElement !== $("subs")) $("subs").value = filters.join(" ");
    if (!seeded) {
      seeded = true;
      for (const f of filters) c.last(f).then(seed, () => {});
    }
  });
  on("error", onFatal);
}

function setState(s) {
  const b = $("state");
  b.textContent = s;
  b.dataset.state = s;
}

function onFatal(err) {
  if (err.code === "unauthorized" || err.code === "token_expired") {
    needToken(token ? "The token was refused or has expired." : "");
    return;
  }
  const text =
    err.code === "session_taken"
      ? "Another tab or device took over this session; this page stopped."
      : `Stopped: ${err.code}${err.message && err.message !== err.code ? ` — ${err.message}` : ""}`;
  $("notice-text").textContent = text;
  show("notice");
}

function show(id) {
  $(id).hidden = false;
}
function hide(id) {
  $(id).hidden = true;
}

function needToken(why) {
  const form = $("token-form");
  if (why) $("token-result").textContent = why;
  if (form.hidden) {
    show("token-form");
    $("token").focus();
  }
}

let gapCount = 0;
function addGap(g) {
  gapCount++;
  show("gaps-box");
  const ul = $("gaps");
  if (gapCount > MAX_GAPS_SHOWN) {
    let more = ul.querySelector("li.more");
    if (!more) ul.append((more = el("li", "more muted")));
    more.textContent = `… and ${gapCount - MAX_GAPS_SHOWN} more`;
    return;
  }
  const reason = cutText(String(g.reason), 40).text; // from the server, but kept short all the same
  const text =
    reason === "epoch"
      ? "epoch: the log was reset; nothing before it can be replayed"
      : `${reason}: seq ${g.from}–${g.to} (${Number(g.to) - Number(g.from) + 1} lost)`;
  const li = el("li", "", text);
  li.dataset.reason = reason;
  ul.append(li);
}

// ---------- server status ----------

const statusFields = {};
function statusItem(name, label) {
  const wrap = el("span", "stat");
  wrap.append(el("span", "muted", label), (statusFields[name] = el("span", "v")));
  return wrap;
}
function fmtBytes(b) {
  if (!Number.isFinite(b)) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${i ? b.toFixed(1) : b} ${u[i]}`;
}
function fmtUptime(s) {
  if (!Number.isFinite(s)) return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}
const num = (x) => (Number.isFinite(x) ? String(x) : "–");
function renderStatus(s) {
  const box = $("status");
  if (!statusFields.server) {
    box.replaceChildren(
      statusItem("server", ""), statusItem("seq", "seq"), statusItem("log", "log"),
      statusItem("conns", "conn"), statusItem("rates", "rate"), statusItem("up", "up"),
    );
  }
  const c = s.connections ?? {}, r = s.rates ?? {};
  statusFields.server.textContent = String(s.server ?? "mqws");
  statusFields.server.title = `epoch ${s.epoch ?? "?"}`;
  // An empty log (new, or all of it retired) has no first seq: say so instead of "–0".
  statusFields.seq.textContent = s.first_seq == null ? `empty, head ${num(s.head_seq)}` : `${num(s.first_seq)}–${num(s.head_seq)}`;
  statusFields.log.textContent = fmtBytes(s.log_bytes);
  statusFields.conns.textContent = `ws ${num(c.websocket)}${c.sse === undefined ? "" : ` · sse ${num(c.sse)}`} · mqtt ${num(c.mqtt)}`;
  statusFields.conns.title = "connections by kind";
  statusFields.rates.textContent =
    `in ${fmtRate(Number(r.logged_per_s) || 0)} · out ${fmtRate(Number(r.delivered_per_s) || 0)}`;
  statusFields.rates.title = "logged / delivered per second";
  statusFields.up.textContent = fmtUptime(s.uptime_s);
}
function statusText(text) {
  for (const k of Object.keys(statusFields)) delete statusFields[k];
  $("status").replaceChildren(el("span", "muted", text));
}
let polling = false;
let statusRefused = false; // a 401: wait for a new token instead of asking again every 2 s
async function pollStatus() {
  if (polling || statusRefused || document.hidden) return;
  polling = true;
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const res = await fetch("/api/status", { headers, cache: "no-store" });
    if (res.status === 401) {
      statusRefused = true;
      statusText("server status needs a token");
      needToken("");
    } else if (!res.ok) {
      statusText(`server status: HTTP ${res.status}`);
    } else {
      renderStatus(await res.json());
    }
  } catch {
    statusText("server status unavailable");
  } finally {
    polling = false;
  }
}

// ---------- controls ----------

function setListFilter(text) {
  const f = text.trim();
  if (!f) listFilter = () => true;
  else if (f.includes("+") || f.includes("#")) listFilter = (t) => topicMatches(f, t);
  else {
    const low = f.toLowerCase();
    listFilter = (t) => t.toLowerCase().includes(low);
  }
  skipped = 0;
  rebuildList();
}

function wire() {
  $("subs").value = filters.join(" ");
  $("filter").addEventListener("input", (e) => setListFilter(e.target.value));

  $("pause").addEventListener("click", (e) => {
    paused = !paused;
    e.currentTarget.setAttribute("aria-pressed", String(paused));
    e.currentTarget.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      pausedNew = 0;
      rebuildList();
    }
    renderCounters();
  });

  $("clear").addEventListener("click", () => {
    ringLen = 0;
    skipped = 0;
    pausedNew = 0;
    rebuildList();
    renderCounters();
  });

  $("messages").addEventListener("click", (e) => {
    const li = e.target.closest("li");
    if (li && rowMsg.has(li)) select({ message: rowMsg.get(li) });
  });

  $("topics").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-path]");
    const n = li && liNode.get(li);
    if (!n) return;
    if (e.target.closest(".tw") || !n.stat) {
      if (n.children.size) {
        n.open = !n.open;
        topics.shape = true;
        treeDue = true;
        schedule();
      }
      return;
    }
    select({ topic: n.stat.topic });
  });

  $("subs-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const wanted = parseFilters($("subs").value);
    const out = $("subs-result");
    out.className = "result";
    if (!client || client.state === "closed") {
      filters = wanted;
      store.set(SUBS_KEY, filters.join(" "));
      start();
      return;
    }
    const have = new Set(client.filters);
    const add = wanted.filter((f) => !have.has(f));
    const remove = [...have].filter((f) => !wanted.includes(f));
    out.textContent = "…";
    try {
      if (remove.length) await client.unsubscribe(remove);
      if (add.length) await client.subscribe(add);
      out.textContent = add.length || remove.length ? "ok" : "unchanged";
      out.classList.add("ok");
      for (const f of add) client.last(f).then(seed, () => {});
    } catch (err) {
      out.textContent = `${err.code}: ${err.message}`;
      out.classList.add("err");
    }
    filters = client.filters;
    store.set(SUBS_KEY, filters.join(" "));
  });

  $("publish-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("pub-result");
    const text = $("pub-payload").value;
    let payload = text;
    try {
      const v = JSON.parse(text);
      if (v !== null && typeof v === "object") payload = v;
    } catch {
      // not JSON: sent as text
    }
    const topic = $("pub-topic").value;
    const opts = { qos: Number($("pub-qos").value), retain: $("pub-retain").checked };
    const send = $("pub-send");
    send.disabled = true;
    out.className = "result mono";
    out.textContent = "publishing…";
    const t0 = performance.now();
    try {
      await client.publish(topic, payload, opts);
      out.textContent = `puback in ${Math.round(performance.now() - t0)} ms`;
      out.classList.add("ok");
    } catch (err) {
      out.textContent = `${err.code}${err.message && err.message !== err.code ? ` — ${err.message}` : ""}`;
      out.classList.add("err");
    } finally {
      send.disabled = false;
    }
  });

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    store.set(TOKEN_KEY, token || null);
    $("token").value = "";
    $("token-result").textContent = "";
    statusRefused = false;
    hide("token-form");
    start();
    pollStatus();
  });
  $("token-clear").addEventListener("click", () => {
    token = "";
    store.set(TOKEN_KEY, null);
    statusRefused = false;
    $("token-result").textContent = "forgotten";
  });
  $("token-show").addEventListener("click", () => needToken(""));
  $("reconnect").addEventListener("click", () => start());
  $("gaps-clear").addEventListener("click", () => {
    gapCount = 0;
    $("gaps").replaceChildren();
    hide("gaps-box");
  });
}

wire();
start();
pollStatus();
setInterval(pollStatus, STATUS_MS);
setInterval(() => {
  treeDue = true;
  schedule();
}, TREE_MS);
