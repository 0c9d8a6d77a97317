// The dashboard's bounded model: message records, bounded JSON text, the topic table (LRU by
// count and estimated bytes, tree pruning). Run: node --test bridge/assets/test/
import { test } from "node:test";
import assert from "node:assert/strict";
const { own, cutText, jsonText, compact, pretty, Topics, bump } = await import("../dashboard-model.js");

const msg = (topic, payload, extra = {}) => ({ topic, payload, enc: "json", seq: 1, ts: 0, retain: false, ...extra });

/** Every node under the root as "path" strings, depth first. */
function paths(t) {
  const out = [];
  const walk = (n, prefix) => {
    for (const c of n.children.values()) {
      const p = prefix === null ? c.name : `${prefix}/${c.name}`;
      out.push(c.stat ? `${p}*` : p);
      walk(c, p);
    }
  };
  walk(t.root, null);
  return out.sort();
}

test("own and cutText copy, and never split a surrogate pair", () => {
  const long = "x".repeat(100);
  assert.equal(own(long), long);
  assert.deepEqual(cutText("short", 10), { text: "short", cut: false });
  assert.deepEqual(cutText("abcdef", 4), { text: "abcd", cut: true });
  const s = `abc${"😀"}def`; // the emoji is two UTF-16 units at 3 and 4
  assert.deepEqual(cutText(s, 4), { text: "abc", cut: true });
  assert.deepEqual(cutText(s, 5), { text: "abc😀", cut: true });
});

test("jsonText equals JSON.stringify when it fits", () => {
  const values = [
    null, true, 0, -0, 1.5e300, "", "a\"b\\c\n\u0001é😀",
    [], {}, [1, [2, [3, {}]]], { a: 1, b: [true, null, "x"], "": { "k\"": -2 } },
    { 2: "two", 1: "one", b: 1, a: 2 }, JSON.parse('{"__proto__": 1, "x": [{}]}'),
    { epc: "303400000000000000001234", rssi: -52, ant: 2, ts: 1732270000123 },
  ];
  for (const v of values) {
    const want = JSON.stringify(v);
    assert.deepEqual(jsonText(v, 1000), { text: want, cut: false }, want);
    assert.deepEqual(jsonText(v, want.length), { text: want, cut: false }, want);
    if (want.length > 1) {
      const got = jsonText(v, want.length - 1);
      assert.deepEqual(got, { text: want.slice(0, want.length - 1), cut: true }, want);
    }
  }
});

test("jsonText stops at max characters, whatever the payload's size or depth", () => {
  const huge = { rows: Array.from({ length: 100_000 }, (_, i) => ({ i, v: "abcdefgh" })) };
  const r = jsonText(huge, 1000);
  assert.equal(r.cut, true);
  assert.equal(r.text, JSON.stringify(huge).slice(0, 1000));
  const longString = { s: "q".repeat(5_000_000) };
  assert.deepEqual(jsonText(longString, 10), { text: '{"s":"qqqq', cut: true });
  assert.deepEqual(jsonText({ ["k".repeat(5_000_000)]: 1 }, 6), { text: '{"kkkk', cut: true });
  assert.deepEqual(jsonText("\n".repeat(10), 5), { text: '"\\n\\n', cut: true }, "escapes count as written");
  // 100,000 levels of nesting: no stack overflow, as each level writes a character.
  let deep = 1;
  for (let i = 0; i < 100_000; i++) deep = [deep];
  assert.deepEqual(jsonText(deep, 5), { text: "[[[[[", cut: true });
});

test("compact keeps metadata and at most max characters of the payload", () => {
  const r = compact(msg("a/b", { k: "v".repeat(50) }, { seq: 7, ts: 123, retain: true, replay: true }), 20);
  assert.deepEqual(r, {
    topic: "a/b", seq: 7, ts: 123, enc: "json", retain: true, replay: true,
    text: `{"k":"${"v".repeat(14)}`, cut: true, size: null,
  });
  const small = compact(msg("a/b", { k: 1 }), 20);
  assert.equal(small.text, '{"k":1}');
  assert.equal(small.cut, false);
  assert.equal(compact(msg("t", { k: 1 }), 20, "shared").topic, "shared");

  const text = compact(msg("t", "hello world", { enc: "text" }), 5);
  assert.deepEqual([text.text, text.cut, text.size], ["hello", true, 11]);
  const b64 = Buffer.from("0123456789abcdef").toString("base64"); // 16 bytes, 24 chars
  const bin = compact(msg("t", b64, { enc: "base64" }), 10); // cut to whole groups of 4
  assert.deepEqual([bin.text, bin.cut, bin.size], [b64.slice(0, 8), true, 16]);
  assert.equal(compact(msg("t", null, { enc: "text" })).text, "");
});

test("pretty: indented JSON, cut text marked, base64 as a hex dump", () => {
  assert.equal(pretty(compact(msg("t", { a: [1] }))), '{\n  "a": [\n    1\n  ]\n}');
  assert.equal(pretty(compact(msg("t", { a: "long" }), 8)), '{"a":"lo…');
  assert.equal(pretty(compact(msg("t", "plain", { enc: "text" }))), "plain");
  assert.equal(pretty(compact(msg("t", "plain", { enc: "text" }), 3)), "pla…");
  const bytes = Buffer.alloc(600, 0x41);
  const dump = pretty(compact(msg("t", bytes.toString("base64"), { enc: "base64" })));
  const lines = dump.split("\n");
  assert.equal(lines[0], `0000  ${"41 ".repeat(16).trim()}  ${"A".repeat(16)}`);
  assert.equal(lines.length, 33);
  assert.equal(lines.at(-1), "… 600 bytes");
});

test("topic table: tree of levels, touch makes a topic the most recent", () => {
  const t = new Topics();
  for (const topic of ["site/s1/tags/r1", "site/s1/tags/r2", "site/s2", "/lead", "a"]) bump(t.touch(topic, 1), 1);
  assert.equal(t.size, 5);
  assert.deepEqual(paths(t), [
    "", "/lead*", "a*", "site", "site/s1", "site/s1/tags", "site/s1/tags/r1*", "site/s1/tags/r2*", "site/s2*",
  ]);
  assert.equal(t.touch("site/s2", 2), t.get("site/s2"));
  assert.deepEqual([...t.stats.keys()], ["site/s1/tags/r1", "site/s1/tags/r2", "/lead", "a", "site/s2"]);
  assert.equal(t.shape, true);
});

test("topic table: the least recently updated topic goes beyond maxTopics, and its empty levels", () => {
  const t = new Topics({ maxTopics: 2 });
  const a = t.touch("x/y/a", 1);
  bump(a, 1);
  bump(a, 1);
  t.touch("x/b", 1);
  t.touch("x/y/a", 1); // now x/b is the least recently updated
  t.shape = false;
  t.touch("z", 1);
  assert.deepEqual([...t.stats.keys()], ["x/y/a", "z"]);
  assert.deepEqual(paths(t), ["x", "x/y", "x/y/a*", "z*"]);
  assert.deepEqual(t.evicted, { topics: 1, count: 0 });
  assert.equal(t.shape, true);
  t.touch("w", 1);
  assert.deepEqual(paths(t), ["w*", "z*"], "x, x/y went with x/y/a");
  assert.deepEqual(t.evicted, { topics: 2, count: 2 });
  assert.equal(t.get("x/y/a"), undefined);
  assert.equal(t.root.children.get("x"), undefined);
});

test("topic table: a topic that has children stays as a level when evicted", () => {
  const t = new Topics({ maxTopics: 2 });
  t.touch("a", 1);
  t.touch("a/b", 1);
  t.touch("c", 1);
  assert.deepEqual(paths(t), ["a", "a/b*", "c*"]);
});

test("topic table: estimated bytes stay under maxBytes and return to zero", () => {
  const t = new Topics({ maxBytes: 64 * 1024 });
  const big = "z".repeat(5000);
  for (let i = 0; i < 1000; i++) {
    const topic = `site/s${i % 7}/tags/r${i}`;
    const s = t.touch(topic, 1);
    t.setLast(s, compact(msg(topic, { big }), 1000, s.topic));
    assert.ok(t.bytes <= 64 * 1024, `${t.bytes} after ${i + 1}`);
  }
  assert.ok(t.size > 10 && t.size < 40, `${t.size} topics kept`);
  assert.equal(t.evicted.topics, 1000 - t.size);
  // A last value's text is counted once: replacing it does not add up.
  const before = t.bytes;
  const s = t.touch("site/s0/tags/r999", 1);
  t.setLast(s, compact(msg("x", { big }), 1000));
  assert.ok(t.bytes <= before);
  // Evicting everything leaves nothing counted and no node behind.
  const t2 = new Topics({ maxTopics: 1 });
  for (let i = 0; i < 100; i++) {
    const topic = `a${i % 3}/b${i}/c`;
    t2.setLast(t2.touch(topic, 1), compact(msg(topic, { i }), 1000));
  }
  t2.touch("last", 1);
  assert.deepEqual(paths(t2), ["last*"]);
  const fresh = new Topics();
  fresh.touch("last", 1);
  assert.equal(t2.bytes, fresh.bytes);
});

test("topic table: too long topics are counted together; deep topics keep MAX_DEPTH levels", () => {
  const t = new Topics({ maxChars: 10, maxDepth: 3 });
  assert.equal(t.touch("x".repeat(11), 1), t.other);
  assert.equal(t.size, 0);
  t.touch("a/b/c/d/e", 1);
  assert.deepEqual(paths(t), ["a", "a/b", "a/b/c/d/e*"]);
  assert.equal(t.get("a/b/c/d/e").node.name, "c/d/e");
});
