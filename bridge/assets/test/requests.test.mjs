// Requests: ids, replies, errors with .code, waiting while offline, the pending cap.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, tick, EPOCH, msg } from "./fakes.mjs";

const last = (sock, type) => sock().sent.filter((f) => f.type === type).at(-1);

test("subscribe sends exact frames, resolves, and the next hello carries the filter", async () => {
  const { client, sock, clock, welcomeWith } = await setup({ filters: ["a/#"] });
  welcomeWith({ filters: ["a/#"] });
  const p = client.subscribe(["b/+"]);
  const f = last(sock, "subscribe");
  assert.deepEqual(f, { type: "subscribe", filters: ["b/+"], id: f.id });
  assert.equal(typeof f.id, "number");
  sock().recv({ type: "subscribed", id: f.id, filters: ["b/+"] });
  assert.deepEqual(await p, ["b/+"]);
  assert.deepEqual(client.filters, ["a/#", "b/+"]);
  const u = client.unsubscribe(["a/#"]);
  const uf = last(sock, "unsubscribe");
  assert.deepEqual(uf, { type: "unsubscribe", filters: ["a/#"], id: uf.id });
  assert.notEqual(uf.id, f.id);
  sock().recv({ type: "unsubscribed", id: uf.id, filters: ["a/#"] });
  assert.deepEqual(await u, ["a/#"]);
  sock().drop(1006);
  clock.advance(250);
  sock().open();
  assert.deepEqual(sock().sent[0].filters, ["b/+"]);
});

test("an error frame with the id rejects with .code; the client goes on", async () => {
  const { client, sock, welcomeWith, events } = await setup();
  welcomeWith();
  const p = client.subscribe(["a/#/b"]);
  const f = last(sock, "subscribe");
  sock().recv({ type: "error", id: f.id, code: "bad_filter", message: "# must be last" });
  await assert.rejects(p, (e) => e instanceof Error && e.code === "bad_filter" && e.message === "# must be last");
  assert.deepEqual(client.filters, ["#"]);
  assert.equal(client.state, "open");
  assert.equal(events.warning.length, 0);
});

test("publish: exact frame, puback resolves, error code rejects", async () => {
  const { client, sock, welcomeWith } = await setup();
  welcomeWith();
  const ok = client.publish("readers/r1/cmd", { op: "start" }, { qos: 1 });
  const f1 = last(sock, "publish");
  assert.deepEqual(f1, { type: "publish", topic: "readers/r1/cmd", payload: { op: "start" }, qos: 1, retain: false, id: f1.id });
  const bad = client.publish("a/+", "x", { retain: true, enc: "base64" });
  const f2 = last(sock, "publish");
  assert.deepEqual(f2, { type: "publish", topic: "a/+", payload: "x", qos: 0, retain: true, enc: "base64", id: f2.id });
  sock().recv({ type: "error", id: f2.id, code: "bad_topic", message: "no wildcards" });
  sock().recv({ type: "puback", id: f1.id });
  assert.equal(await ok, undefined);
  await assert.rejects(bad, { code: "bad_topic" });
});

test("history, last and ping resolve with their replies", async () => {
  const { client, sock, clock, welcomeWith } = await setup();
  welcomeWith();
  const h = client.history("site/a/#", { from: "earliest", limit: 2 });
  const hf = last(sock, "history");
  assert.deepEqual(hf, { type: "history", filter: "site/a/#", from: "earliest", limit: 2, id: hf.id });
  sock().recv({ type: "history", id: hf.id, messages: [msg(1), msg(2)], next: { epoch: EPOCH, seq: 2 } });
  const res = await h;
  assert.deepEqual(res.messages.map((m) => m.seq), [1, 2]);
  assert.deepEqual(res.next, { epoch: EPOCH, seq: 2 });
  const l = client.last("readers/+/status");
  const lf = last(sock, "last");
  assert.deepEqual(lf, { type: "last", filter: "readers/+/status", id: lf.id });
  sock().recv({ type: "last", id: lf.id, messages: [msg(7)] });
  assert.deepEqual((await l).map((m) => m.seq), [7]);
  const p = client.ping();
  const pf = last(sock, "ping");
  clock.advance(30);
  sock().recv({ type: "pong", id: pf.id });
  assert.equal(await p, 30);
});

test("requests made before the connection is open are sent after welcome", async () => {
  const { client, sock, welcomeWith } = await setup();
  const p = client.last("a/#");
  const s = client.subscribe(["z"]);
  sock().open();
  assert.deepEqual(sock().sent.map((f) => f.type), ["hello"]);
  sock().recv({ type: "welcome", session: "s", resume_token: "r", position: { epoch: EPOCH, seq: 1 }, filters: [], resumed: false });
  assert.deepEqual(sock().sent.map((f) => f.type), ["hello", "last", "subscribe"]);
  const [lf, sf] = sock().sent.slice(1);
  sock().recv({ type: "last", id: lf.id, messages: [] });
  sock().recv({ type: "subscribed", id: sf.id, filters: ["z"] });
  assert.deepEqual(await p, []);
  assert.deepEqual(await s, ["z"]);
  void welcomeWith;
});

test("a request waits at most requestWait ms for a connection", async () => {
  const { client, clock } = await setup({ requestWait: 1000 });
  const p = client.publish("a", 1);
  let settled = false;
  p.catch(() => {}).finally(() => (settled = true));
  clock.advance(999);
  await tick();
  assert.equal(settled, false);
  clock.advance(1);
  await assert.rejects(p, { code: "unavailable" });
});

test("a drop rejects requests in flight with unavailable, but re-sends subscribe after welcome", async () => {
  const { client, sock, clock, welcomeWith } = await setup();
  welcomeWith();
  const pub = client.publish("a", "x");
  const sub = client.subscribe(["q/#"]);
  const sf = last(sock, "subscribe");
  sock().drop(1006);
  await assert.rejects(pub, { code: "unavailable" });
  clock.advance(250);
  welcomeWith({ resumed: true });
  const again = sock().sent.filter((f) => f.type === "subscribe");
  assert.deepEqual(again, [sf]);
  sock().recv({ type: "subscribed", id: sf.id, filters: ["q/#"] });
  assert.deepEqual(await sub, ["q/#"]);
});

test("pending requests are capped", async () => {
  const { client, sock, welcomeWith } = await setup({ maxPending: 2 });
  welcomeWith();
  const a = client.last("a");
  const b = client.last("b");
  const over = client.last("c");
  assert.equal(sock().sent.filter((f) => f.type === "last").length, 2);
  await assert.rejects(over, { code: "rate_limited" });
  const ids = sock().sent.filter((f) => f.type === "last").map((f) => f.id);
  sock().recv({ type: "last", id: ids[0], messages: [] });
  await a;
  const c = client.last("c"); // room again
  assert.equal(sock().sent.filter((f) => f.type === "last").length, 3);
  client.close();
  await assert.rejects(b, { code: "unavailable" });
  await assert.rejects(c, { code: "unavailable" });
});

test("an unencodable payload rejects with bad_request and sends nothing", async () => {
  const { client, sock, welcomeWith } = await setup();
  welcomeWith();
  await assert.rejects(client.publish("a", 10n), { code: "bad_request" });
  assert.equal(sock().sent.filter((f) => f.type === "publish").length, 0);
});

test("an error frame without id is a warning, not a rejection", async () => {
  const { client, sock, welcomeWith, events } = await setup();
  welcomeWith();
  const p = client.last("a");
  sock().recv({ type: "error", code: "bad_request", message: "ack too high" });
  assert.deepEqual(events.warning.map((e) => e.code), ["bad_request"]);
  const lf = last(sock, "last");
  sock().recv({ type: "last", id: lf.id, messages: [] });
  assert.deepEqual(await p, []);
  assert.equal(client.state, "open");
});
