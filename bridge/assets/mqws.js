/**
 * mqws.js — browser (and Node 20+) client for mqws, wire contract v1 revision 2, section 5.
 *
 * One `connect(url, opts)` call gives a client that keeps a WebSocket session to mqws
 * (subprotocol `mqws.v1.json`) open for as long as the page lives:
 *
 * - It opens with `hello` carrying the token, the stored server-held session (`session` +
 *   `resume_token`), the client's full filter set and `from` = its stored position, so a
 *   reconnect (or a reload of the tab) replays exactly what was missed. Messages at or below
 *   the position (same epoch) are dropped, so the application sees each message once.
 * - Position, session and resume token persist in `storage` (per tab `sessionStorage` by
 *   default) under `<key>:pos`, `<key>:session`, `<key>:resume_token`; the position is written
 *   at most every 250 ms and on `pagehide`, on hiding the page and on `close()`.
 * - It acks (`{"type":"ack","seq":N}`) what it handed to the application, batched every 200 ms
 *   or 500 messages, only for seqs received on the current connection.
 * - It reconnects with full-jitter exponential backoff (`random() * min(max, min * 2^attempt)`,
 *   0.5 s to 20 s, reset once a connection has been welcomed), at once on the window's `online`
 *   event, when the page becomes visible, and after close 4001. It stops on 4002 (the session
 *   was taken by another tab or device), calls `getToken` on 4003 and on an `unauthorized`
 *   refusal (then retries once), and stops on any other 1008. A connection silent for 45 s gets
 *   an application `ping`; without any answer within 10 s it is abandoned and replaced.
 * - Duplicated tabs: Chrome copies `sessionStorage` into a duplicated tab, so both tabs would
 *   hold one session and take it from each other (4002) forever. When a session is stored, the
 *   client first asks on `BroadcastChannel("mqws:<key>")` whether a live client holds it and
 *   waits 150 ms; if one answers, the copy (session, resume token and position) is discarded and
 *   this client starts a fresh session, live. Each client answers such questions for the
 *   session it holds; when two start at once with the same copy, the lower instance id keeps it.
 * - Requests (`subscribe`, `unsubscribe`, `publish`, `history`, `last`, `ping`) return promises
 *   keyed by a numeric `id`; an `error` frame with that id rejects with an Error whose `.code` is
 *   the contract's code. A request made while the client is not open waits for the connection
 *   for at most `requestWait` ms (default 10 s), then rejects with `unavailable`. A request in
 *   flight when the connection drops rejects with `unavailable` (a publish may or may not have
 *   happened) — except `subscribe`/`unsubscribe`, which are idempotent and are sent again
 *   after the next `welcome`. At most `maxPending` (1,000) requests wait or fly at once; more
 *   reject with `rate_limited`. Nothing else is buffered: no messages are queued while offline.
 *
 * No dependencies, no build step. In Node pass `WebSocket` (e.g. from the `ws` package).
 * @module mqws
 */

const SUBPROTOCOL = "mqws.v1.json";
const EVENTS = ["message", "state", "gap", "caught_up", "error", "welcome", "warning"];
const IDLE_MS = 45000; // silence before an application ping
const PONG_MS = 10000; // wait for any frame after that ping
const ACK_MS = 200;
const ACK_EVERY = 500;
const PERSIST_MS = 250;
const ASK_MS = 150; // duplicated-tab question
const REPLIES = { subscribed: 1, unsubscribed: 1, puback: 1, history: 1, last: 1, pong: 1 };

/**
 * An Error carrying a contract error code (`bad_filter`, `unavailable`, …) in `.code`.
 * @param {string} code
 * @param {string} [message]
 * @returns {Error & {code: string}}
 */
export function mqwsError(code, message) {
  const e = /** @type {Error & {code: string}} */ (new Error(message || code));
  e.code = code;
  return e;
}

/**
 * Whether MQTT topic `topic` matches filter `filter` (`+` one level, `#` the rest including the
 * parent level; wildcards at the first level do not match `$` topics).
 * @param {string} filter
 * @param {string} topic
 * @returns {boolean}
 */
export function topicMatches(filter, topic) {
  const f = filter.split("/");
  const t = topic.split("/");
  if (topic.startsWith("$") && (f[0] === "+" || f[0] === "#")) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return i === f.length - 1;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** A Storage-like object over a Map, for Node and for pages where sessionStorage is denied. */
function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
  };
}

function defaultStorage() {
  try {
    if (globalThis.sessionStorage) return globalThis.sessionStorage;
  } catch {
    // access denied (sandboxed frame, privacy settings)
  }
  return memoryStorage();
}

function validPosition(p) {
  return p && typeof p === "object" && typeof p.epoch === "string" && Number.isSafeInteger(p.seq);
}

/**
 * @typedef {object} ConnectOptions
 * @property {string[]} [filters] initial subscriptions
 * @property {string} [token] credential sent in `hello`
 * @property {() => Promise<string>} [getToken] new token, asked on 4003 and `unauthorized`
 * @property {{getItem(k:string):string|null, setItem(k:string,v:string):void, removeItem(k:string):void}} [storage]
 * @property {string} [key] storage key prefix and BroadcastChannel suffix (default "mqws")
 * @property {any} [WebSocket] WebSocket constructor (default globalThis.WebSocket)
 * @property {any} [BroadcastChannel] constructor, or null to turn duplicate detection off
 * @property {{min:number, max:number}} [backoff] ms, default {min: 500, max: 20000}
 * @property {number} [requestWait] ms a request made while not open waits (default 10000)
 * @property {number} [maxPending] most requests waiting or in flight (default 1000)
 * @property {() => number} [random] test hook (default Math.random)
 * @property {() => number} [now] test hook (default Date.now)
 * @property {typeof setTimeout} [setTimeout] test hook
 * @property {typeof clearTimeout} [clearTimeout] test hook
 * @property {any} [window] event target for `online`/`pagehide` (default globalThis if it has addEventListener)
 * @property {any} [document] for `visibilitychange` (default globalThis.document)
 * @property {string} [instanceId] test hook: this client's id on the BroadcastChannel
 */

/**
 * Opens an mqws session and keeps it open until `close()` or a fatal condition.
 * Connecting starts in a microtask, so listeners attached right after this call see every
 * event, including the first `state` ("connecting").
 * @param {string} url e.g. `ws://host:8080/ws`
 * @param {ConnectOptions} [opts]
 * @returns {Client}
 */
export function connect(url, opts = {}) {
  return new Client(url, opts);
}

/** The client returned by {@link connect}. */
export class Client {
  #url;
  #WS;
  #store;
  #key;
  #random;
  #now;
  #setT;
  #clearT;
  #min;
  #max;
  #maxPending;
  #requestWait;
  #token;
  #getToken;
  #win;
  #doc;
  #listeners = new Map(EVENTS.map((e) => [e, new Set()]));
  #state = "connecting";
  #closed = false;
  #filters;
  #session = null;
  #resumeToken = null;
  #position = null;
  #ws = null;
  #welcomed = false;
  #connEpoch = null;
  #sentFrom = false;
  #nextId = 1;
  #pending = new Map();
  #attempt = 0;
  /** Pending timers by purpose: retry (backoff or duplicate question), ack, idle, probe, persist. */
  #t = { retry: null, ack: null, idle: null, probe: null, persist: null };
  #tokenRetried = false;
  #lastError = null;
  #recvSeq = 0;
  #ackedSeq = 0;
  #unacked = 0;
  #lastRecv = 0;
  #channel = null;
  #id;
  #asking = null;
  #answered = false;
  #unlisten = [];

  /** @param {string} url @param {ConnectOptions} opts */
  constructor(url, opts) {
    this.#url = url;
    this.#WS = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WS !== "function") {
      throw new TypeError("mqws: no WebSocket; pass opts.WebSocket (e.g. from the ws package)");
    }
    this.#store = opts.storage ?? defaultStorage();
    this.#key = opts.key ?? "mqws";
    this.#random = opts.random ?? Math.random;
    this.#now = opts.now ?? Date.now;
    this.#setT = opts.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.#clearT = opts.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.#min = opts.backoff?.min ?? 500;
    this.#max = opts.backoff?.max ?? 20000;
    this.#maxPending = opts.maxPending ?? 1000;
    this.#requestWait = opts.requestWait ?? 10000;
    this.#token = opts.token ?? null;
    this.#getToken = opts.getToken ?? null;
    this.#filters = new Set(opts.filters ?? []);
    const g = globalThis;
    this.#win = opts.window ?? (typeof g.addEventListener === "function" ? g : null);
    this.#doc = opts.document ?? (typeof g.document === "object" ? g.document : null);
    this.#id = opts.instanceId ?? (g.crypto?.randomUUID?.() ?? String(Math.random()).slice(2));
    this.#session = this.#read("session");
    this.#resumeToken = this.#read("resume_token");
    try {
      const p = JSON.parse(this.#read("pos") ?? "null");
      this.#position = validPosition(p) ? { epoch: p.epoch, seq: p.seq } : null;
    } catch {
      this.#position = null;
    }
    const BC = opts.BroadcastChannel === undefined ? g.BroadcastChannel : opts.BroadcastChannel;
    if (typeof BC === "function") {
      try {
        this.#channel = new BC(`mqws:${this.#key}`);
        this.#channel.onmessage = (ev) => this.#onChannel(ev.data);
        this.#channel.unref?.(); // Node: do not keep the process alive
      } catch {
        this.#channel = null;
      }
    }
    queueMicrotask(() => this.#start());
  }

  /** Current state: "connecting" | "open" | "reconnecting" | "closed". */
  get state() {
    return this.#state;
  }

  /**
   * `{epoch, seq}` the stream is at: the last message handed to `message`, or, after a live
   * start or a new epoch, the `welcome` position; null before either. A copy.
   */
  get position() {
    return this.#position && { ...this.#position };
  }

  /** The session's filters as this client knows them (synced to each `welcome`). A copy. */
  get filters() {
    return [...this.#filters];
  }

  /** The server-held session id, or null. */
  get session() {
    return this.#session;
  }

  /**
   * Adds a listener. Events: `message` (the message frame), `state` (string), `gap`
   * ({reason, from, to}), `caught_up` ({epoch, seq}), `welcome` (the welcome frame), `error`
   * (an Error with `.code`; the client has stopped), `warning` (an `error` frame not tied to a
   * request, e.g. a refused ack; the client goes on). `welcome.gaps_truncated` tells when the
   * server cut the gap list at its limit.
   * @param {string} event
   * @param {(value: any) => void} fn
   * @returns {() => void} removes the listener
   */
  on(event, fn) {
    const set = this.#listeners.get(event);
    if (!set) throw new TypeError(`mqws: unknown event ${event}`);
    set.add(fn);
    return () => void set.delete(fn);
  }

  /**
   * Adds filters to the session. Resolves with the filters the server confirmed.
   * @param {string[]} filters
   * @returns {Promise<string[]>}
   */
  subscribe(filters) {
    return this.#request("subscribe", { type: "subscribe", filters: [...filters] });
  }

  /**
   * Removes filters from the session. Resolves with the filters named in the reply.
   * @param {string[]} filters
   * @returns {Promise<string[]>}
   */
  unsubscribe(filters) {
    return this.#request("unsubscribe", { type: "unsubscribe", filters: [...filters] });
  }

  /**
   * Publishes to MQTT. Resolves (undefined) on `puback`: durable in the log and handed to the
   * broker. A string payload is sent as its UTF-8 bytes, any other JSON value as compact JSON;
   * with `enc: "base64"` the string is decoded.
   * @param {string} topic
   * @param {any} payload
   * @param {{qos?: 0|1|2, retain?: boolean, enc?: string}} [o]
   * @returns {Promise<void>}
   */
  publish(topic, payload, o = {}) {
    const frame = { type: "publish", topic, payload, qos: o.qos ?? 0, retain: !!o.retain };
    if (o.enc) frame.enc = o.enc;
    return this.#request("publish", frame);
  }

  /**
   * Reads logged messages matching `filter`. Resolves with `{messages, next}`; pass `next` as
   * `from` to continue (null when there is no more).
   * @param {string} filter
   * @param {{from?: "earliest"|"latest"|{epoch:string,seq:number}|{time_ms:number}, limit?: number}} [o]
   * @returns {Promise<{messages: object[], next: {epoch:string,seq:number}|null}>}
   */
  history(filter, o = {}) {
    const frame = { type: "history", filter };
    if (o.from !== undefined) frame.from = o.from;
    if (o.limit !== undefined) frame.limit = o.limit;
    return this.#request("history", frame);
  }

  /**
   * The latest logged message of each topic matching `filter`.
   * @param {string} filter
   * @returns {Promise<object[]>}
   */
  last(filter) {
    return this.#request("last", { type: "last", filter });
  }

  /**
   * Application-level ping. Resolves with the round-trip time in ms.
   * @returns {Promise<number>}
   */
  ping() {
    return this.#request("ping", { type: "ping" });
  }

  /** Acks what was delivered, saves the position, closes the socket and stops for good. */
  close() {
    if (this.#closed) return;
    this.#flushAck();
    this.#stop(null);
  }

  // ---- connection lifecycle ----

  #start() {
    if (this.#closed) return;
    this.#emit("state", this.#state);
    if (this.#win) {
      this.#listen(this.#win, "online", () => this.#wake());
      this.#listen(this.#win, "pagehide", () => this.#save());
    }
    if (this.#doc) {
      this.#listen(this.#doc, "visibilitychange", () => {
        if (this.#doc.visibilityState === "visible") this.#wake();
        else this.#save();
      });
    }
    if (this.#session && this.#channel) {
      this.#asking = this.#session;
      this.#answered = false;
      this.#post({ t: "who", s: this.#session, i: this.#id });
      this.#after("retry", ASK_MS, () => {
        const taken = this.#answered;
        this.#asking = null;
        if (taken) this.#discardSession();
        this.#open();
      });
    } else {
      this.#open();
    }
  }

  #listen(target, type, fn) {
    target.addEventListener(type, fn);
    this.#unlisten.push(() => target.removeEventListener(type, fn));
  }

  #open() {
    if (this.#closed) return;
    let ws;
    try {
      ws = new this.#WS(this.#url, SUBPROTOCOL);
    } catch (e) {
      this.#stop(mqwsError("bad_request", `cannot open ${this.#url}: ${e?.message ?? e}`));
      return;
    }
    this.#ws = ws;
    this.#welcomed = false;
    this.#lastError = null;
    this.#recvSeq = 0;
    this.#ackedSeq = 0;
    this.#unacked = 0;
    ws.onopen = () => ws === this.#ws && this.#hello();
    ws.onmessage = (ev) => ws === this.#ws && this.#onFrame(ev.data);
    ws.onclose = (ev) => ws === this.#ws && this.#lost(ev.code);
    ws.onerror = () => {}; // a close event follows
  }

  #hello() {
    const hello = { type: "hello" };
    if (this.#token) hello.token = this.#token;
    if (this.#session && this.#resumeToken) {
      hello.session = this.#session;
      hello.resume_token = this.#resumeToken;
    }
    hello.filters = [...this.#filters];
    this.#sentFrom = !!this.#position;
    if (this.#position) hello.from = { epoch: this.#position.epoch, seq: this.#position.seq };
    this.#send(hello);
  }

  /** The connection ended (close event, or abandoned after a missed pong). */
  #lost(code) {
    this.#dropSocket();
    for (const [id, p] of this.#pending) {
      if (!p.sent) continue;
      if (p.kind === "subscribe" || p.kind === "unsubscribe") this.#park(p);
      else this.#fail(id, mqwsError("unavailable", "the connection closed before the reply"));
    }
    if (this.#closed) return;
    const lastError = this.#lastError;
    if (code === 4002) {
      this.#stop(mqwsError("session_taken", "another tab or device took this session (4002)"));
    } else if (code === 4003) {
      if (!this.#getToken) this.#stop(mqwsError("token_expired", "the token expired (4003)"));
      else this.#renewToken();
    } else if (code === 1008) {
      if (lastError?.code === "unauthorized" && this.#getToken && !this.#tokenRetried) {
        this.#renewToken();
      } else {
        const e = mqwsError(lastError?.code ?? "policy", lastError?.message ?? "refused (1008)");
        this.#stop(e);
      }
    } else if (code === 4001) {
      this.#setState("reconnecting");
      this.#open();
    } else {
      this.#setState("reconnecting");
      const delay = this.#random() * Math.min(this.#max, this.#min * 2 ** this.#attempt);
      this.#attempt++;
      this.#after("retry", delay, () => this.#open());
    }
  }

  async #renewToken() {
    this.#tokenRetried = true;
    this.#setState("reconnecting");
    let token;
    try {
      token = await this.#getToken();
    } catch (e) {
      if (!this.#closed) this.#stop(mqwsError("unauthorized", `getToken failed: ${e?.message ?? e}`));
      return;
    }
    if (this.#closed) return;
    this.#token = token;
    this.#open();
  }

  /** Reconnects now if waiting for a backoff timer; probes an open connection. */
  #wake() {
    if (this.#closed) return;
    if (this.#t.retry && !this.#asking) {
      this.#cancel("retry");
      this.#open();
    } else if (this.#welcomed && !this.#t.probe) {
      this.#probe();
    }
  }

  #dropSocket() {
    const ws = this.#ws;
    this.#ws = null;
    this.#welcomed = false;
    for (const name of ["ack", "idle", "probe"]) this.#cancel(name);
    this.#save();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      return ws;
    }
    return null;
  }

  #cancel(name) {
    if (this.#t[name]) this.#clearT(this.#t[name]);
    this.#t[name] = null;
  }

  #after(name, ms, fn) {
    this.#cancel(name);
    this.#t[name] = this.#setT(() => {
      this.#t[name] = null;
      fn();
    }, ms);
  }

  /** Stops for good: `err` null for close(), else an Error emitted as `error`. */
  #stop(err) {
    this.#closed = true;
    this.#cancel("retry");
    const ws = this.#dropSocket();
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    this.#cancel("persist");
    for (const id of [...this.#pending.keys()]) {
      this.#fail(id, mqwsError("unavailable", "the client is closed"));
    }
    for (const off of this.#unlisten.splice(0)) off();
    try {
      this.#channel?.close();
    } catch {
      // ignore
    }
    this.#channel = null;
    this.#setState("closed");
    if (err) this.#emit("error", err);
  }

  #setState(s) {
    if (s === this.#state) return;
    this.#state = s;
    this.#emit("state", s);
  }

  #emit(event, value) {
    for (const fn of this.#listeners.get(event)) {
      try {
        fn(value);
      } catch (e) {
        // A listener's bug must not break the stream; report it like an event handler's.
        if (typeof globalThis.reportError === "function") globalThis.reportError(e);
        else queueMicrotask(() => { throw e; });
      }
    }
  }

  #send(frame) {
    try {
      this.#ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ---- incoming frames ----

  #onFrame(data) {
    if (typeof data !== "string") return;
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    if (!f || typeof f !== "object") return;
    this.#lastRecv = this.#now();
    if (this.#t.probe) {
      // Any frame proves the connection alive.
      this.#cancel("probe");
      this.#armIdle(IDLE_MS);
    }
    switch (f.type) {
      case "message":
        if (this.#welcomed) this.#onMessage(f);
        break;
      case "welcome":
        this.#onWelcome(f);
        break;
      case "gap": {
        const { type, ...g } = f;
        this.#emit("gap", g);
        break;
      }
      case "caught_up":
        if (!this.#position && validPosition(f.position)) {
          this.#position = { epoch: f.position.epoch, seq: f.position.seq };
          this.#dirty();
        }
        this.#emit("caught_up", f.position);
        break;
      case "error":
        this.#onError(f);
        break;
      default:
        if (REPLIES[f.type] && f.id != null) this.#settle(f.id, f);
    }
  }

  #onMessage(m) {
    const seq = m.seq;
    if (!Number.isSafeInteger(seq)) return;
    const p = this.#position;
    if (!(p && p.epoch === this.#connEpoch && seq <= p.seq)) {
      this.#position = { epoch: this.#connEpoch, seq };
      this.#dirty();
      this.#emit("message", m);
    }
    if (seq > this.#recvSeq) this.#recvSeq = seq;
    if (++this.#unacked >= ACK_EVERY) this.#flushAck();
    else if (!this.#t.ack) this.#after("ack", ACK_MS, () => this.#flushAck());
  }

  #flushAck() {
    this.#cancel("ack");
    this.#unacked = 0;
    if (this.#welcomed && this.#recvSeq > this.#ackedSeq) {
      this.#ackedSeq = this.#recvSeq;
      this.#send({ type: "ack", seq: this.#recvSeq });
    }
  }

  #onWelcome(w) {
    if (this.#welcomed || !validPosition(w.position)) return;
    this.#welcomed = true;
    this.#attempt = 0;
    this.#tokenRetried = false;
    this.#session = w.session ?? null;
    this.#resumeToken = w.resume_token ?? null;
    this.#write("session", this.#session);
    this.#write("resume_token", this.#resumeToken);
    if (Array.isArray(w.filters)) this.#filters = new Set(w.filters);
    this.#connEpoch = w.position.epoch;
    const gaps = Array.isArray(w.gaps) ? [...w.gaps] : [];
    const wp = { epoch: w.position.epoch, seq: w.position.seq };
    const p = this.#position;
    const newEpoch = !!p && p.epoch !== wp.epoch;
    if (newEpoch && this.#sentFrom && !gaps.some((g) => g.reason === "epoch")) {
      gaps.unshift({ reason: "epoch" }); // the server must say so; never hide it
    }
    if (gaps.some((g) => g.reason === "epoch") || newEpoch || (!p && !w.resumed)) {
      // A new log (or a live start): the stream continues after the welcome position.
      this.#position = wp;
    }
    this.#save();
    this.#lastRecv = this.#now();
    this.#armIdle(IDLE_MS);
    this.#setState("open");
    if (!this.#closed) this.#emit("welcome", w);
    for (const g of gaps) if (!this.#closed) this.#emit("gap", g);
    for (const req of this.#pending.values()) {
      if (!req.sent && this.#welcomed) this.#transmit(req);
    }
  }

  #onError(f) {
    const err = mqwsError(String(f.code ?? "internal"), f.message ?? String(f.code ?? "error"));
    if (f.id != null && this.#pending.has(f.id)) {
      this.#fail(f.id, err);
      return;
    }
    this.#lastError = err;
    this.#emit("warning", err);
  }

  // ---- liveness ----

  #armIdle(ms) {
    this.#after("idle", ms, () => {
      const idle = this.#now() - this.#lastRecv;
      if (idle >= IDLE_MS) this.#probe();
      else this.#armIdle(IDLE_MS - idle);
    });
  }

  #probe() {
    this.#cancel("idle");
    this.#send({ type: "ping", id: this.#nextId++ });
    this.#after("probe", PONG_MS, () => {
      // No answer: the socket is dead (e.g. after sleep). Do not wait for its close event.
      const ws = this.#ws;
      this.#lost(1006);
      try {
        ws?.close(4000, "no answer to ping");
      } catch {
        // ignore
      }
    });
  }

  // ---- requests ----

  #request(kind, frame) {
    if (this.#closed) return Promise.reject(mqwsError("unavailable", "the client is closed"));
    if (this.#pending.size >= this.#maxPending) {
      return Promise.reject(mqwsError("rate_limited", "too many requests waiting for a reply"));
    }
    const id = this.#nextId++;
    let text;
    try {
      text = JSON.stringify({ ...frame, id });
    } catch (e) {
      return Promise.reject(mqwsError("bad_request", `cannot encode the request: ${e?.message ?? e}`));
    }
    return new Promise((resolve, reject) => {
      const p = { id, kind, text, filters: frame.filters, resolve, reject, sent: false, timer: null, t0: 0 };
      this.#pending.set(id, p);
      if (this.#welcomed) this.#transmit(p);
      else this.#park(p);
    });
  }

  #transmit(p) {
    if (p.timer) this.#clearT(p.timer);
    p.timer = null;
    p.sent = true;
    p.t0 = this.#now();
    this.#send(p.text);
  }

  /** Waits for the next welcome, for at most requestWait ms. */
  #park(p) {
    p.sent = false;
    if (p.timer) this.#clearT(p.timer);
    p.timer = this.#setT(() => {
      p.timer = null;
      this.#fail(p.id, mqwsError("unavailable", "not connected"));
    }, this.#requestWait);
  }

  #take(id) {
    const p = this.#pending.get(id);
    if (!p) return null;
    this.#pending.delete(id);
    if (p.timer) this.#clearT(p.timer);
    return p;
  }

  #fail(id, err) {
    this.#take(id)?.reject(err);
  }

  #settle(id, f) {
    const p = this.#take(id);
    if (!p) return;
    const filters = Array.isArray(f.filters) ? f.filters : p.filters;
    switch (p.kind) {
      case "subscribe":
        for (const x of filters) this.#filters.add(x);
        return p.resolve(filters);
      case "unsubscribe":
        for (const x of filters) this.#filters.delete(x);
        return p.resolve(filters);
      case "history":
        return p.resolve({ messages: f.messages ?? [], next: f.next ?? null });
      case "last":
        return p.resolve(f.messages ?? []);
      case "ping":
        return p.resolve(this.#now() - p.t0);
      default:
        return p.resolve(undefined);
    }
  }

  // ---- storage and duplicated tabs ----

  #read(name) {
    try {
      return this.#store.getItem(`${this.#key}:${name}`);
    } catch {
      return null;
    }
  }

  #write(name, value) {
    try {
      if (value == null) this.#store.removeItem(`${this.#key}:${name}`);
      else this.#store.setItem(`${this.#key}:${name}`, value);
    } catch {
      // quota or access denied: the session lives on in memory
    }
  }

  #dirty() {
    if (!this.#t.persist) this.#after("persist", PERSIST_MS, () => this.#save());
  }

  #save() {
    this.#cancel("persist");
    this.#write("pos", this.#position && JSON.stringify(this.#position));
  }

  #discardSession() {
    this.#session = this.#resumeToken = this.#position = null;
    this.#write("session", null);
    this.#write("resume_token", null);
    this.#write("pos", null);
  }

  #post(msg) {
    try {
      this.#channel?.postMessage(msg);
    } catch {
      // channel closed
    }
  }

  #onChannel(d) {
    if (!d || typeof d !== "object" || d.i === this.#id || this.#closed) return;
    if (d.t === "who" && d.s && d.s === this.#session) {
      // While both are still asking about the same copy, the lower id keeps it.
      if (this.#asking && !(this.#id < d.i)) {
        this.#answered = true;
        return;
      }
      this.#post({ t: "mine", s: d.s, i: this.#id, to: d.i });
    } else if (d.t === "mine" && d.to === this.#id && this.#asking && d.s === this.#asking) {
      this.#answered = true;
    }
  }
}
