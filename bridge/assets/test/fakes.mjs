// Test doubles for mqws.js: a manual clock, a scripted WebSocket, a BroadcastChannel hub and a
// Map-backed storage. No dependencies.

import { connect } from "../mqws.js";

/** A clock whose timers run only when advanced. */
export class FakeClock {
  t = 1_000_000;
  next = 1;
  timers = new Map(); // id -> {at, fn, ms}
  now = () => this.t;
  setTimeout = (fn, ms = 0) => {
    const id = this.next++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn, ms });
    return id;
  };
  clearTimeout = (id) => void this.timers.delete(id);
  /** Delays (ms) of the timers now pending, in creation order. */
  delays() {
    return [...this.timers.values()].map((x) => x.ms);
  }
  /** Runs every timer due within `ms`, in time order, advancing the clock to each. */
  advance(ms) {
    const end = this.t + ms;
    for (let n = 0; ; n++) {
      if (n > 100_000) throw new Error("FakeClock: timers keep rescheduling themselves");
      let best = null;
      for (const [id, x] of this.timers) if (x.at <= end && (!best || x.at < best[1].at)) best = [id, x];
      if (!best) break;
      this.timers.delete(best[0]);
      this.t = best[1].at;
      best[1].fn();
    }
    this.t = end;
  }
}

/** A WebSocket class recording every instance; tests drive the server side. */
export function fakeWebSocket() {
  const sockets = [];
  class FakeWS {
    constructor(url, protocol) {
      this.url = url;
      this.protocol = protocol;
      this.sentText = [];
      this.closedWith = null;
      sockets.push(this);
    }
    get sent() {
      return this.sentText.map((t) => JSON.parse(t));
    }
    send(text) {
      if (this.closedWith) throw new Error("send after close");
      this.sentText.push(text);
    }
    close(code, reason) {
      this.closedWith = { code, reason };
    }
    // server side
    open() {
      this.onopen?.({});
    }
    recv(frame) {
      this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }
    drop(code) {
      this.onclose?.({ code, reason: "" });
    }
  }
  return { WS: FakeWS, sockets };
}

/** BroadcastChannel over one in-process hub; delivery is asynchronous like the real one. */
export function fakeBroadcast() {
  const members = new Set();
  const log = [];
  class FakeBC {
    constructor(name) {
      this.name = name;
      members.add(this);
    }
    postMessage(data) {
      log.push(structuredClone(data));
      for (const m of members) {
        if (m !== this && m.name === this.name) {
          const copy = structuredClone(data);
          queueMicrotask(() => members.has(m) && m.onmessage?.({ data: copy }));
        }
      }
    }
    close() {
      members.delete(this);
    }
  }
  return { BC: FakeBC, log, members };
}

/** Storage over a Map, inspectable. */
export function memStorage(init = {}) {
  const m = new Map(Object.entries(init));
  return {
    map: m,
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
    dump: () => Object.fromEntries(m),
  };
}

/** Lets queued microtasks (connect's start, BroadcastChannel delivery, promises) run. */
export const tick = () => new Promise((r) => setImmediate(r));

export const EPOCH = "e1";

export function welcome(over = {}) {
  return {
    type: "welcome",
    session: "s-1",
    resume_token: "rt-1",
    server: "mqws/0.1.0",
    position: { epoch: EPOCH, seq: 10 },
    filters: ["#"],
    resumed: false,
    ...over,
  };
}

export function msg(seq, topic = "a/b", extra = {}) {
  return { type: "message", seq, topic, payload: { v: seq }, enc: "json", retain: false, ts: 1, ...extra };
}

/**
 * A client wired to fakes, with every event recorded. `opts` override the defaults; pass
 * `storage`, `WS`/`sockets` (from fakeWebSocket) or `clock` to share them between clients.
 */
export async function setup(opts = {}) {
  const clock = opts.clock ?? new FakeClock();
  const fw = opts.fw ?? fakeWebSocket();
  const storage = opts.storage ?? memStorage();
  const events = { message: [], state: [], gap: [], caught_up: [], error: [], welcome: [], warning: [] };
  const { clock: _c, fw: _f, ...rest } = opts;
  const client = connect("ws://test/ws", {
    WebSocket: fw.WS,
    storage,
    BroadcastChannel: null,
    window: null,
    document: null,
    random: () => 0.5,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    ...rest,
  });
  for (const k of Object.keys(events)) client.on(k, (v) => events[k].push(v));
  await tick();
  const sock = () => fw.sockets[fw.sockets.length - 1];
  /** Opens the newest socket and answers its hello with `w`. */
  const welcomeWith = (w = {}) => {
    sock().open();
    sock().recv(welcome(w));
  };
  return { client, clock, fw, storage, events, sock, welcomeWith };
}
