// The dashboard's bounded model (no DOM): what is kept of a message (a record whose payload
// text is cut at KEEP_CHARS; the parsed payload is dropped at once), bounded JSON text, decayed
// rates, and the topic table: at most MAX_TOPICS topics and about TOPICS_BYTES, evicting the
// least recently updated topic, topics longer than TOPIC_CHARS counted together, the tree at
// most MAX_DEPTH levels deep. dashboard.js renders it; test/dashboard.test.mjs tests it under
// Node.

const TAU_S = 5; // rate smoothing: exponential decay time constant
export const KEEP_CHARS = 1000; // payload text kept per message and per topic's last value
export const TOPIC_CHARS = 1024; // longer topics are counted under "(other topics)" (the server's default limit)
export const MAX_TOPICS = 10000; // beyond this or TOPICS_BYTES, the least recently updated topic goes
export const TOPICS_BYTES = 12 * 1024 * 1024; // the topic table's estimated size (see STAT_BYTES)
const MAX_DEPTH = 16; // tree levels; deeper levels stay joined in the last one's name

// Estimated heap bytes of one topic (stat, last-value record, Map entry) and one tree node
// (object, its entry in the parent's Map, a children Map when it has any), plus 2 bytes per
// character of their strings. Chosen to over-estimate: in V8 (Node 20) 10,000 topics of ~20
// characters with ~70-character values took 5.7 MB (estimated 8.8 MB), with 1,000-character
// two-byte values 24.9 MB (estimated 27.5 MB), 10,000 topics of 5 distinct levels 17.4 MB
// (estimated 20.3 MB). So 10,000 topics with small values fit, and large values are evicted
// before the table passes 12 MiB.
const STAT_BYTES = 400;
const NODE_BYTES = 300;

export const nowS = () => performance.now() / 1000;


// ---------- records: what is kept of a message ----------

/** A copy of `s` that shares nothing: in V8 a slice of a long string keeps the whole string. */
export function own(s) {
  return s.length < 13 ? s : JSON.parse(JSON.stringify(s));
}

/** `s` cut to at most `max` UTF-16 units (not inside a surrogate pair), as an owned copy. */
export function cutText(s, max) {
  if (s.length <= max) return { text: s, cut: false };
  let n = max;
  const c = s.charCodeAt(n - 1);
  if (c >= 0xd800 && c <= 0xdbff) n--;
  return { text: own(s.slice(0, n)), cut: true };
}

/**
 * JSON.stringify(v) for a value from JSON.parse, stopping after `max` characters: the work is
 * bounded by `max`, not by the payload (a 1 MiB payload costs no more than a small one).
 */
export function jsonText(v, max) {
  const out = [];
  let len = 0;
  let cut = false;
  const put = (s) => {
    if (len + s.length > max) {
      out.push(s.slice(0, max - len));
      len = max;
      cut = true;
    } else {
      out.push(s);
      len += s.length;
    }
  };
  // A long string is cut before it is escaped; one more character than fits makes the cut.
  const str = (x) => JSON.stringify(x.length > max - len ? x.slice(0, max - len + 1) : x);
  // Recursion depth is bounded too: every level writes at least one character.
  const walk = (x) => {
    if (typeof x === "string") put(str(x));
    else if (x === null || typeof x !== "object") {
      put(JSON.stringify(x) ?? "null");
    } else if (Array.isArray(x)) {
      put("[");
      for (let i = 0; i < x.length && !cut; i++) {
        if (i) put(",");
        if (!cut) walk(x[i]);
      }
      if (!cut) put("]");
    } else {
      put("{");
      let first = true;
      for (const k in x) {
        if (cut) break;
        if (!Object.hasOwn(x, k)) continue;
        put(`${first ? "" : ","}${str(k)}:`);
        first = false;
        if (!cut) walk(x[k]);
      }
      if (!cut) put("}");
    }
  };
  walk(v);
  const text = out.join("");
  return { text: cut ? own(text) : text, cut };
}

/** Decoded length of a base64 string. */
function b64Bytes(s) {
  const pad = s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0;
  return Math.max(0, Math.floor((s.length * 3) / 4) - pad);
}

/**
 * What the dashboard keeps of message `m`: its metadata and at most `max` characters of its
 * payload as text (`cut` says whether that is all of it; `size` is the whole payload's length in
 * characters for text, in bytes for base64, null for JSON). `topic` replaces m.topic, so that a
 * tracked topic's string is shared rather than kept once per message.
 */
export function compact(m, max = KEEP_CHARS, topic = m.topic) {
  let p;
  let size = null;
  if (m.enc === "json") p = jsonText(m.payload, max);
  else {
    const s = String(m.payload ?? "");
    size = m.enc === "base64" ? b64Bytes(s) : s.length;
    p = cutText(s, m.enc === "base64" ? max - (max % 4) : max);
  }
  return {
    topic: String(topic), seq: m.seq, ts: m.ts, enc: m.enc, retain: !!m.retain, replay: !!m.replay,
    text: p.text, cut: p.cut, size,
  };
}

/** The detail pane's text for record `r`. */
export function pretty(r) {
  if (r.enc === "json") {
    if (r.cut) return `${r.text}…`;
    try { return JSON.stringify(JSON.parse(r.text), null, 2); } catch { return r.text; }
  }
  if (r.enc === "base64") {
    let bytes = "";
    try { bytes = atob(r.text); } catch { return r.text; }
    const hex = [];
    for (let i = 0; i < Math.min(bytes.length, 512); i += 16) {
      const chunk = bytes.slice(i, i + 16);
      const h = [...chunk].map((ch) => ch.charCodeAt(0).toString(16).padStart(2, "0")).join(" ");
      const a = [...chunk].map((ch) => (ch >= " " && ch <= "~" ? ch : ".")).join("");
      hex.push(`${i.toString(16).padStart(4, "0")}  ${h.padEnd(47)}  ${a}`);
    }
    if (r.size > 512) hex.push(`… ${r.size} bytes`);
    return hex.join("\n");
  }
  return r.cut ? `${r.text}…` : r.text;
}

// ---------- model ----------

export function newStat(topic, t = nowS()) {
  return { topic, count: 0, rate: 0, t, last: null, node: null, bytes: 0, lastBytes: 0 };
}
export function bump(s, t) {
  s.rate = s.rate * Math.exp((s.t - t) / TAU_S) + 1 / TAU_S;
  s.t = t;
  s.count++;
}
export const rateOf = (s, t) => s.rate * Math.exp((s.t - t) / TAU_S);

const NO_KIDS = new Map(); // shared by every leaf, never written: an empty Map costs ~100 bytes
function newNode(name, parent, depth) {
  return { name, parent, children: NO_KIDS, stat: null, open: depth < 1, depth, el: null, aggCount: 0, aggRate: 0 };
}

/**
 * Topics seen, one stat each (count, rate, last value) in a Map whose order is least recently
 * updated first, and the tree of their levels. Bounded by count and by estimated bytes: going
 * over either evicts the least recently updated topic and prunes its now empty tree nodes.
 */
export class Topics {
  constructor({ maxTopics = MAX_TOPICS, maxBytes = TOPICS_BYTES, maxChars = TOPIC_CHARS, maxDepth = MAX_DEPTH } = {}) {
    this.limits = { maxTopics, maxBytes, maxChars, maxDepth };
    this.stats = new Map(); // topic -> stat
    this.root = newNode("", null, -1);
    this.bytes = 0; // estimated, see STAT_BYTES
    this.other = newStat("(other topics)"); // topics longer than maxChars
    this.evicted = { topics: 0, count: 0 };
    this.shape = true; // the tree's structure changed since the flag was last cleared
  }
  get size() {
    return this.stats.size;
  }
  get(topic) {
    return this.stats.get(topic);
  }
  /** The stat of `topic`, now the most recently updated; `other` for a topic too long to keep. */
  touch(topic, t = nowS()) {
    let s = this.stats.get(topic);
    if (s) {
      this.stats.delete(topic);
      this.stats.set(topic, s);
      return s;
    }
    if (topic.length > this.limits.maxChars) return this.other;
    s = newStat(topic, t);
    s.bytes = STAT_BYTES + 2 * topic.length;
    this.bytes += s.bytes;
    this.stats.set(topic, s);
    s.node = this.#insert(topic, s);
    this.shape = true;
    this.#trim(s);
    return s;
  }
  /** Keeps record `r` (already cut, see compact) as the last value of tracked stat `s`. */
  setLast(s, r) {
    const b = 2 * r.text.length;
    this.bytes += b - s.lastBytes;
    s.lastBytes = b;
    s.last = r;
    this.#trim(s);
  }
  #insert(topic, s) {
    let parts = topic.split("/");
    const d = this.limits.maxDepth;
    if (parts.length > d) parts = [...parts.slice(0, d - 1), parts.slice(d - 1).join("/")];
    let n = this.root;
    for (let i = 0; i < parts.length; i++) {
      let c = n.children.get(parts[i]);
      if (!c) {
        // Owned: a level's name must not keep the (possibly evicted) topic it was cut from.
        c = newNode(own(parts[i]), n, i);
        if (n.children === NO_KIDS) n.children = new Map();
        n.children.set(c.name, c);
        this.bytes += NODE_BYTES + 2 * c.name.length;
      }
      n = c;
    }
    n.stat = s;
    return n;
  }
  #trim(keep) {
    const { maxTopics, maxBytes } = this.limits;
    while (this.stats.size > maxTopics || this.bytes > maxBytes) {
      const [topic, s] = this.stats.entries().next().value;
      if (s === keep) break; // a single topic is far below the budget; never evict the one being updated
      this.#evict(topic, s);
    }
  }
  #evict(topic, s) {
    this.stats.delete(topic);
    this.bytes -= s.bytes + s.lastBytes;
    this.evicted.topics++;
    this.evicted.count += s.count;
    let n = s.node;
    n.stat = null;
    s.node = null;
    while (n.parent && !n.stat && !n.children.size) {
      const p = n.parent;
      p.children.delete(n.name);
      if (!p.children.size && p.parent) p.children = NO_KIDS;
      this.bytes -= NODE_BYTES + 2 * n.name.length;
      n.parent = null;
      n = p;
    }
    this.shape = true;
  }
}
