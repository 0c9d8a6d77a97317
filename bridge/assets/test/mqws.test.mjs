// Connection, resume, dedupe, acks, reconnect and close codes. Run: node --test bridge/assets/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, memStorage, msg, tick, EPOCH, FakeClock } from "./fakes.mjs";
import { topicMatches, connect } from "../mqws.js";

test("first connect: subprotocol, hello carries filters and token, no session or from", async () => {
  const { fw, sock, events } = await setup({ filters: ["site/+/tags/#", "x"], token: "T" });
  assert.equal(fw.sockets.length, 1);
  assert.equal(sock().url, "ws://test/ws");
  assert.equal(sock().protocol, "mqws.v1.json");
  assert.deepEqual(events.state, ["connecting"]);
  sock().open();
  assert.deepEqual(sock().sent, [{ type: "hello", token: "T", filters: ["site/+/tags/#", "x"] }]);
});

test("welcome: state open, session persisted, live start position; resume hello carries it all", async () => {
  const { client, sock, storage, events, welcomeWith, clock } = await setup({ filters: ["#"] });
  welcomeWith({ session: "s-9", resume_token: "rt-9", position: { epoch: EPOCH, seq: 57 } });
  assert.deepEqual(events.state, ["connecting", "open"]);
  assert.equal(events.welcome.length, 1);
  assert.deepEqual(client.position, { epoch: EPOCH, seq: 57 });
  assert.equal(storage.getItem("mqws:session"), "s-9");
  assert.equal(storage.getItem("mqws:resume_token"), "rt-9");
  assert.deepEqual(JSON.parse(storage.getItem("mqws:pos")), { epoch: EPOCH, seq: 57 });
  sock().recv(msg(58));
  sock().drop(1006);
  assert.deepEqual(events.state.slice(-1), ["reconnecting"]);
  clock.advance(250);
  sock().open();
  assert.deepEqual(sock().sent[0], {
    type: "hello",
    session: "s-9",
    resume_token: "rt-9",
    filters: ["#"],
    from: { epoch: EPOCH, seq: 58 },
  });
});

test("a new client resumes from storage (reload of the tab)", async () => {
  const storage = memStorage({
    "k:session": "s-2",
    "k:resume_token": "rt-2",
    "k:pos": JSON.stringify({ epoch: EPOCH, seq: 41 }),
  });
  const { sock } = await setup({ storage, key: "k", filters: ["a/#"] });
  sock().open();
  assert.deepEqual(sock().sent, [
    { type: "hello", session: "s-2", resume_token: "rt-2", filters: ["a/#"], from: { epoch: EPOCH, seq: 41 } },
  ]);
});

test("messages at or below the position are dropped; later ones update the position", async () => {
  const storage = memStorage({ "mqws:pos": JSON.stringify({ epoch: EPOCH, seq: 5 }) });
  const { client, sock, events } = await setup({ storage });
  sock().open();
  sock().recv({ type: "welcome", session: "s", resume_token: "r", position: { epoch: EPOCH, seq: 9 }, filters: [], resumed: true, recovered: true, gaps: [] });
  for (const s of [4, 5, 6, 7]) sock().recv(msg(s, "t", { replay: true }));
  sock().recv({ type: "caught_up", position: { epoch: EPOCH, seq: 9 } });
  assert.deepEqual(events.message.map((m) => m.seq), [6, 7]);
  assert.equal(events.message[0].replay, true);
  assert.deepEqual(events.caught_up, [{ epoch: EPOCH, seq: 9 }]);
  assert.deepEqual(client.position, { epoch: EPOCH, seq: 7 });
  assert.deepEqual(events.gap, []);
});

test("position is written at most every 250 ms, and on close", async () => {
  const { client, sock, storage, clock, welcomeWith } = await setup();
  welcomeWith();
  sock().recv(msg(11));
  sock().recv(msg(12));
  assert.deepEqual(JSON.parse(storage.getItem("mqws:pos")), { epoch: EPOCH, seq: 10 });
  clock.advance(249);
  assert.deepEqual(JSON.parse(storage.getItem("mqws:pos")).seq, 10);
  clock.advance(1);
  assert.deepEqual(JSON.parse(storage.getItem("mqws:pos")), { epoch: EPOCH, seq: 12 });
  sock().recv(msg(13));
  client.close();
  assert.deepEqual(JSON.parse(storage.getItem("mqws:pos")), { epoch: EPOCH, seq: 13 });
});

test("acks are batched every 200 ms and name the last seq received", async () => {
  const { sock, clock, welcomeWith } = await setup();
  welcomeWith();
  sock().recv(msg(11));
  sock().recv(msg(12));
  sock().recv(msg(14));
  const acks = () => sock().sent.filter((f) => f.type === "ack");
  assert.deepEqual(acks(), []);
  clock.advance(199);
  assert.deepEqual(acks(), []);
  clock.advance(1);
  assert.deepEqual(acks(), [{ type: "ack", seq: 14 }]);
  clock.advance(1000);
  assert.deepEqual(acks(), [{ type: "ack", seq: 14 }], "no repeated ack without new messages");
});

test("an ack goes out at once every 500 messages", async () => {
  const { sock, welcomeWith } = await setup();
  welcomeWith();
  for (let s = 11; s < 11 + 499; s++) sock().recv(msg(s));
  assert.equal(sock().sent.filter((f) => f.type === "ack").length, 0);
  sock().recv(msg(510));
  assert.deepEqual(sock().sent.filter((f) => f.type === "ack"), [{ type: "ack", seq: 510 }]);
});

test("no ack on a new connection for seqs received on an older one", async () => {
  const { sock, clock, welcomeWith } = await setup();
  welcomeWith();
  sock().recv(msg(11));
  sock().drop(1006); // before the ack timer
  clock.advance(250); // reconnect
  welcomeWith({ resumed: true, position: { epoch: EPOCH, seq: 11 } });
  clock.advance(5000);
  assert.deepEqual(sock().sent.filter((f) => f.type === "ack"), []);
  sock().recv(msg(11)); // replayed duplicate: received here, so it may be acked
  clock.advance(200);
  assert.deepEqual(sock().sent.filter((f) => f.type === "ack"), [{ type: "ack", seq: 11 }]);
});

test("backoff: full jitter random()*min(max, min*2^attempt), capped, reset after welcome", async () => {
  let r = 1;
  const { fw, clock, sock, welcomeWith } = await setup({ random: () => r });
  const expected = [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000];
  for (const want of expected) {
    sock().drop(1006);
    assert.deepEqual(clock.delays(), [want]);
    const n = fw.sockets.length;
    clock.advance(want - 1);
    assert.equal(fw.sockets.length, n, "not before the delay");
    clock.advance(1);
    assert.equal(fw.sockets.length, n + 1);
  }
  // A socket that opens but is never welcomed does not reset the attempt count.
  sock().open();
  sock().drop(1006);
  assert.deepEqual(clock.delays(), [20000]);
  clock.advance(20000);
  welcomeWith();
  r = 0.25;
  sock().drop(1001);
  assert.deepEqual(clock.delays(), [125]); // 0.25 * 500: reset
});

test("backoff uses the jitter value, and honours custom bounds", async () => {
  const rs = [0, 0.3, 0.999];
  const { clock, sock } = await setup({ random: () => rs.shift(), backoff: { min: 100, max: 300 } });
  sock().drop(1006);
  assert.deepEqual(clock.delays(), [0]);
  clock.advance(0);
  sock().drop(1006);
  assert.deepEqual(clock.delays(), [60]); // 0.3 * 200
  clock.advance(60);
  sock().drop(1011);
  assert.ok(Math.abs(clock.delays()[0] - 0.999 * 300) < 1e-9); // capped at max
});

test("close 4001 reconnects at once and resumes from the position", async () => {
  const { fw, sock, clock, events, welcomeWith } = await setup();
  welcomeWith();
  sock().recv(msg(12));
  sock().drop(4001);
  assert.equal(fw.sockets.length, 2);
  assert.deepEqual(clock.delays().filter((d) => d !== 250 && d !== 200), []);
  assert.deepEqual(events.state, ["connecting", "open", "reconnecting"]);
  sock().open();
  assert.deepEqual(sock().sent[0].from, { epoch: EPOCH, seq: 12 });
});

test("close 4002 stops for good with error session_taken", async () => {
  const { fw, sock, clock, events, client, welcomeWith } = await setup();
  welcomeWith();
  sock().drop(4002);
  clock.advance(60_000);
  assert.equal(fw.sockets.length, 1);
  assert.equal(client.state, "closed");
  assert.deepEqual(events.state, ["connecting", "open", "closed"]);
  assert.equal(events.error.length, 1);
  assert.equal(events.error[0].code, "session_taken");
  await assert.rejects(client.last("#"), { code: "unavailable" });
});

test("close 4003 asks getToken and reconnects with the new token", async () => {
  let calls = 0;
  const { fw, sock, welcomeWith } = await setup({ token: "old", getToken: async () => `new${++calls}` });
  welcomeWith();
  sock().drop(4003);
  await tick();
  assert.equal(calls, 1);
  assert.equal(fw.sockets.length, 2);
  sock().open();
  assert.equal(sock().sent[0].token, "new1");
});

test("close 4003 without getToken stops with token_expired", async () => {
  const { fw, sock, events, welcomeWith, clock } = await setup({ token: "old" });
  welcomeWith();
  sock().drop(4003);
  clock.advance(60_000);
  assert.equal(fw.sockets.length, 1);
  assert.equal(events.error[0].code, "token_expired");
});

test("unauthorized: getToken once, retry once, then stop", async () => {
  let calls = 0;
  const { fw, sock, events, client, clock } = await setup({ token: "bad", getToken: async () => `t${++calls}` });
  sock().open();
  sock().recv({ type: "error", code: "unauthorized", message: "bad token" });
  sock().drop(1008);
  await tick();
  assert.equal(calls, 1);
  assert.equal(fw.sockets.length, 2);
  sock().open();
  assert.equal(sock().sent[0].token, "t1");
  sock().recv({ type: "error", code: "unauthorized", message: "still bad" });
  sock().drop(1008);
  await tick();
  clock.advance(60_000);
  assert.equal(calls, 1);
  assert.equal(fw.sockets.length, 2);
  assert.equal(client.state, "closed");
  assert.equal(events.error.length, 1);
  assert.equal(events.error[0].code, "unauthorized");
  assert.equal(events.warning.length, 2);
});

test("the token retry is granted again after a welcome, and spent by 4003", async () => {
  let calls = 0;
  const { fw, sock, clock, events, welcomeWith } = await setup({ getToken: async () => `t${++calls}` });
  const refuse = async () => {
    sock().open();
    sock().recv({ type: "error", code: "unauthorized", message: "x" });
    sock().drop(1008);
    await tick();
  };
  await refuse();
  assert.deepEqual([calls, fw.sockets.length], [1, 2]);
  welcomeWith(); // resets the retry
  sock().drop(1006);
  clock.advance(250);
  await refuse();
  assert.deepEqual([calls, fw.sockets.length], [2, 4]);
  welcomeWith();
  sock().drop(4003); // uses the retry
  await tick();
  assert.deepEqual([calls, fw.sockets.length], [3, 5]);
  await refuse();
  assert.deepEqual([calls, fw.sockets.length], [3, 5]);
  assert.deepEqual(events.error.map((e) => e.code), ["unauthorized"]);
});

test("unauthorized without getToken, and any other 1008, stop with the error's code", async () => {
  for (const code of ["unauthorized", "bad_filter", "hello_required"]) {
    const { fw, sock, events, clock } = await setup();
    sock().open();
    sock().recv({ type: "error", code, message: "no" });
    sock().drop(1008);
    clock.advance(60_000);
    assert.equal(fw.sockets.length, 1);
    assert.deepEqual(events.error.map((e) => e.code), [code]);
    assert.deepEqual(events.state, ["connecting", "closed"]);
  }
  const { events, sock } = await setup();
  sock().drop(1008);
  assert.equal(events.error[0].code, "policy");
});

test("epoch gap: position resets to welcome.position, new-epoch seqs are delivered", async () => {
  const storage = memStorage({ "mqws:pos": JSON.stringify({ epoch: "old", seq: 500 }) });
  const { client, sock, events, storage: st } = await setup({ storage });
  sock().open();
  assert.deepEqual(sock().sent[0].from, { epoch: "old", seq: 500 });
  sock().recv({
    type: "welcome", session: "s", resume_token: "r", position: { epoch: "new", seq: 20 },
    filters: [], resumed: false, recovered: false, gaps: [{ reason: "epoch" }],
  });
  assert.deepEqual(events.gap, [{ reason: "epoch" }]);
  assert.deepEqual(client.position, { epoch: "new", seq: 20 });
  assert.deepEqual(JSON.parse(st.getItem("mqws:pos")), { epoch: "new", seq: 20 });
  sock().recv(msg(20)); // not after the position
  sock().recv(msg(21));
  assert.deepEqual(events.message.map((m) => m.seq), [21]);
  assert.deepEqual(client.position, { epoch: "new", seq: 21 });
});

test("after a new epoch, acks name the new (lower) seqs, never the old connection's", async () => {
  const { sock, clock, welcomeWith } = await setup();
  welcomeWith({ position: { epoch: "old", seq: 499 } });
  sock().recv(msg(500));
  sock().drop(1006);
  clock.advance(250);
  sock().open();
  sock().recv({
    type: "welcome", session: "s", resume_token: "r", position: { epoch: "new", seq: 20 },
    filters: [], resumed: true, recovered: false, gaps: [{ reason: "epoch" }],
  });
  sock().recv(msg(21));
  clock.advance(200);
  assert.deepEqual(sock().sent.filter((f) => f.type === "ack"), [{ type: "ack", seq: 21 }]);
});

test("a new epoch the server did not report still yields one epoch gap", async () => {
  const storage = memStorage({ "mqws:pos": JSON.stringify({ epoch: "old", seq: 9 }) });
  const { client, sock, events } = await setup({ storage });
  sock().open();
  const w = { type: "welcome", session: "s", resume_token: "r", position: { epoch: "new", seq: 3 }, filters: [], resumed: false, recovered: false, gaps: [] };
  sock().recv(w);
  assert.deepEqual(events.gap, [{ reason: "epoch" }]);
  assert.deepEqual(events.welcome[0].gaps, [], "the welcome frame is not altered");
  assert.deepEqual(client.position, { epoch: "new", seq: 3 });
});

test("welcome gaps and gap frames become one gap event each, in order", async () => {
  const storage = memStorage({ "mqws:pos": JSON.stringify({ epoch: EPOCH, seq: 1 }) });
  const { sock, events } = await setup({ storage });
  sock().open();
  sock().recv({
    type: "welcome", session: "s", resume_token: "r", position: { epoch: EPOCH, seq: 90 }, filters: [],
    resumed: false, recovered: false,
    gaps: [{ reason: "evicted", from: 2, to: 30 }, { reason: "dropped", from: 40, to: 41 }],
  });
  sock().recv({ type: "gap", reason: "dropped", from: 95, to: 97 });
  assert.deepEqual(events.gap, [
    { reason: "evicted", from: 2, to: 30 },
    { reason: "dropped", from: 40, to: 41 },
    { reason: "dropped", from: 95, to: 97 },
  ]);
});

test("a silent connection is pinged after 45 s and replaced without an answer in 10 s", async () => {
  const { fw, sock, clock, welcomeWith, events } = await setup();
  welcomeWith();
  clock.advance(30_000);
  sock().recv(msg(11)); // traffic postpones the ping
  clock.advance(44_999);
  assert.deepEqual(sock().sent.filter((f) => f.type === "ping"), []);
  clock.advance(1);
  const pings = sock().sent.filter((f) => f.type === "ping");
  assert.equal(pings.length, 1);
  assert.equal(typeof pings[0].id, "number");
  const first = sock();
  clock.advance(9_999);
  assert.equal(first.closedWith, null);
  clock.advance(1);
  assert.equal(first.closedWith.code, 4000);
  assert.equal(events.state.at(-1), "reconnecting");
  clock.advance(250);
  assert.equal(fw.sockets.length, 2);
});

test("an answer to the liveness ping keeps the connection", async () => {
  const { fw, sock, clock, welcomeWith } = await setup();
  welcomeWith();
  clock.advance(45_000);
  const ping = sock().sent.find((f) => f.type === "ping");
  sock().recv({ type: "pong", id: ping.id });
  clock.advance(20_000);
  assert.equal(sock().closedWith, null);
  assert.equal(fw.sockets.length, 1);
});

test("online and visibilitychange reconnect at once while waiting", async () => {
  const win = new EventTarget();
  const doc = Object.assign(new EventTarget(), { visibilityState: "hidden" });
  const { fw, sock, clock } = await setup({ window: win, document: doc, random: () => 1 });
  sock().drop(1006);
  clock.advance(100);
  win.dispatchEvent(new Event("online"));
  assert.equal(fw.sockets.length, 2);
  assert.deepEqual(clock.delays(), [], "the backoff timer is gone");
  sock().drop(1006);
  doc.dispatchEvent(new Event("visibilitychange")); // still hidden: nothing
  assert.equal(fw.sockets.length, 2);
  doc.visibilityState = "visible";
  doc.dispatchEvent(new Event("visibilitychange"));
  assert.equal(fw.sockets.length, 3);
});

test("pagehide saves the position at once", async () => {
  const win = new EventTarget();
  const { sock, storage, welcomeWith } = await setup({ window: win });
  welcomeWith();
  sock().recv(msg(33));
  win.dispatchEvent(new Event("pagehide"));
  assert.deepEqual(JSON.parse(storage.getItem("mqws:pos")), { epoch: EPOCH, seq: 33 });
});

test("on() returns a remover; close() acks, closes 1000 and goes closed once", async () => {
  const { client, sock, welcomeWith, events } = await setup();
  const seen = [];
  const off = client.on("message", (m) => seen.push(m.seq));
  welcomeWith();
  sock().recv(msg(11));
  off();
  sock().recv(msg(12));
  assert.deepEqual(seen, [11]);
  const ws = sock();
  client.close();
  client.close();
  assert.deepEqual(ws.sent.at(-1), { type: "ack", seq: 12 });
  assert.deepEqual(ws.closedWith, { code: 1000, reason: undefined });
  assert.deepEqual(events.state, ["connecting", "open", "closed"]);
  assert.throws(() => client.on("nope", () => {}), TypeError);
});

test("a client needs a WebSocket constructor", () => {
  assert.throws(() => connect("ws://x/ws", { WebSocket: undefined, storage: memStorage() }), TypeError);
});

test("garbage frames are ignored", async () => {
  const { sock, events, welcomeWith } = await setup();
  welcomeWith();
  sock().recv("not json");
  sock().recv("42");
  sock().recv({ type: "message", topic: "a" }); // no seq
  sock().onmessage({ data: new ArrayBuffer(2) });
  assert.equal(events.message.length, 0);
  assert.equal(events.error.length, 0);
});

test("topicMatches follows MQTT rules", () => {
  assert.ok(topicMatches("#", "a/b"));
  assert.ok(topicMatches("a/#", "a"));
  assert.ok(topicMatches("a/#", "a/b/c"));
  assert.ok(topicMatches("a/+/c", "a/b/c"));
  assert.ok(!topicMatches("a/+/c", "a/b/d"));
  assert.ok(!topicMatches("a/+", "a/b/c"));
  assert.ok(topicMatches("a/+", "a/"));
  assert.ok(!topicMatches("#", "$SYS/x"));
  assert.ok(!topicMatches("+/x", "$SYS/x"));
  assert.ok(topicMatches("$SYS/#", "$SYS/x"));
  assert.ok(!topicMatches("a/b", "a/b/c"));
});

test("the fake clock runs timers in time order", () => {
  const c = new FakeClock();
  const out = [];
  c.setTimeout(() => out.push(2), 20);
  c.setTimeout(() => out.push(1), 10);
  c.advance(20);
  assert.deepEqual(out, [1, 2]);
});
