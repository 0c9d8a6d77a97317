// Duplicated-tab detection over BroadcastChannel.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, memStorage, fakeBroadcast, fakeWebSocket, tick, EPOCH, FakeClock } from "./fakes.mjs";

const stored = () =>
  memStorage({
    "mqws:session": "s-1",
    "mqws:resume_token": "rt-1",
    "mqws:pos": JSON.stringify({ epoch: EPOCH, seq: 70 }),
  });

test("a duplicated tab drops the copied session when a live client holds it", async () => {
  const { BC, log } = fakeBroadcast();
  const clock = new FakeClock();
  const fw = fakeWebSocket();
  // Tab A: holds s-1 (welcomed).
  const a = await setup({ BroadcastChannel: BC, instanceId: "a", storage: stored(), clock, fw });
  assert.deepEqual(log, [{ t: "who", s: "s-1", i: "a" }]);
  clock.advance(150);
  assert.equal(fw.sockets.length, 1, "A connects after its question");
  a.welcomeWith({ session: "s-1", resume_token: "rt-1", resumed: true, position: { epoch: EPOCH, seq: 70 } });
  // Tab B: a copy of A's sessionStorage.
  const bStore = stored();
  const b = await setup({ BroadcastChannel: BC, instanceId: "b", storage: bStore, clock, fw });
  await tick();
  assert.deepEqual(log.slice(1), [
    { t: "who", s: "s-1", i: "b" },
    { t: "mine", s: "s-1", i: "a", to: "b" },
  ]);
  assert.equal(fw.sockets.length, 1, "B waits before connecting");
  clock.advance(149);
  assert.equal(fw.sockets.length, 1);
  clock.advance(1);
  assert.equal(fw.sockets.length, 2);
  b.sock().open();
  assert.deepEqual(b.sock().sent, [{ type: "hello", filters: [] }], "fresh session, live");
  assert.equal(bStore.getItem("mqws:session"), null);
  assert.equal(bStore.getItem("mqws:resume_token"), null);
  assert.equal(bStore.getItem("mqws:pos"), null);
  assert.equal(b.client.position, null);
});

test("without an answer the stored session is used", async () => {
  const { BC } = fakeBroadcast();
  const { sock, clock, fw } = await setup({ BroadcastChannel: BC, instanceId: "x", storage: stored() });
  assert.equal(fw.sockets.length, 0);
  clock.advance(150);
  sock().open();
  assert.deepEqual(sock().sent[0], {
    type: "hello", session: "s-1", resume_token: "rt-1", filters: [], from: { epoch: EPOCH, seq: 70 },
  });
});

test("no stored session: no question, no wait", async () => {
  const { BC, log } = fakeBroadcast();
  const { fw } = await setup({ BroadcastChannel: BC });
  assert.deepEqual(log, []);
  assert.equal(fw.sockets.length, 1);
});

test("two copies starting together: the lower instance id keeps the session", async () => {
  const { BC } = fakeBroadcast();
  const clock = new FakeClock();
  const fw = fakeWebSocket();
  const hi = await setup({ BroadcastChannel: BC, instanceId: "m2", storage: stored(), clock, fw });
  const lo = await setup({ BroadcastChannel: BC, instanceId: "m1", storage: stored(), clock, fw });
  await tick();
  clock.advance(150);
  assert.equal(fw.sockets.length, 2);
  for (const s of fw.sockets) s.open();
  const hellos = Object.fromEntries(fw.sockets.map((s) => [s.sent[0].session ?? "none", s]));
  assert.deepEqual(Object.keys(hellos).sort(), ["none", "s-1"]);
  assert.equal(lo.client.session, "s-1");
  assert.equal(hi.client.session, null);
});

test("a closed client does not answer, and other keys are separate channels", async () => {
  const { BC, log } = fakeBroadcast();
  const clock = new FakeClock();
  const fw = fakeWebSocket();
  const a = await setup({ BroadcastChannel: BC, instanceId: "a", clock, fw });
  a.welcomeWith({ session: "s-1" });
  const other = memStorage({ "k2:session": "s-1", "k2:resume_token": "rt-1" });
  await setup({ BroadcastChannel: BC, instanceId: "b", key: "k2", storage: other, clock, fw });
  await tick();
  assert.equal(log.filter((m) => m.t === "mine").length, 0, "different key, different channel");
  a.client.close();
  await setup({ BroadcastChannel: BC, instanceId: "c", storage: stored(), clock, fw });
  await tick();
  assert.equal(log.filter((m) => m.t === "mine").length, 0);
});
