// The prefix cache's bookkeeping (src/engine/prefix_cache.js): the radix trie's longest match
// against a brute-force reference over random sequences, and the cache's budget, least recently
// used order and sequences that extend others.
import assert from "node:assert/strict";
import { test } from "node:test";

import { PrefixCache, PrefixTrie } from "../src/engine/prefix_cache.js";
import { makeRandom } from "../src/engine/sampler.js";

/** How far `a` and `b` agree. */
function agreement(a, b) {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

test("the trie's longest match equals the longest agreement with any sequence held, through inserts and removals", () => {
  const random = makeRandom(7);
  const draw = (length) => Array.from({ length }, () => Math.floor(random() * 3)); // few tokens: many shared prefixes
  const trie = new PrefixTrie();
  const held = new Map(); // key -> entry
  for (let step = 0; step < 2000; step++) {
    const tokens = draw(1 + Math.floor(random() * 12));
    const key = tokens.join(",");
    if (held.has(key) && random() < 0.7) {
      trie.remove(held.get(key));
      held.delete(key);
    } else if (!held.has(key)) {
      held.set(key, trie.insert(tokens, key));
    }
    const probe = draw(Math.floor(random() * 14));
    const limit = Math.floor(random() * 15);
    const want = Math.max(0, ...[...held.values()].map((e) => Math.min(agreement(e.tokens, probe), limit)));
    const { depth, entry } = trie.longestMatch(probe, limit);
    assert.equal(depth, Math.min(want, probe.length), `step ${step}`);
    if (depth === 0) assert.equal(entry, null);
    else {
      assert.ok(held.has(entry.value), "a held entry");
      assert.ok(agreement(entry.tokens, probe) >= depth, "agreeing as far as the match");
    }
  }
});

test("the trie prefers, among entries agreeing as far, the one ranked highest", () => {
  const trie = new PrefixTrie();
  const a = trie.insert([1, 2, 3, 4], "a");
  const b = trie.insert([1, 2, 3, 5], "b");
  const rank = new Map([
    [a, 1],
    [b, 2],
  ]);
  assert.equal(trie.longestMatch([1, 2, 3, 9], undefined, (e) => rank.get(e)).entry, b);
  rank.set(a, 3);
  assert.equal(trie.longestMatch([1, 2, 3, 9], undefined, (e) => rank.get(e)).entry, a);
  assert.deepEqual(trie.longestMatch([1, 2, 3, 5, 6]), { depth: 4, entry: b });
  assert.throws(() => trie.insert([1, 2, 3, 5], "again"));
});

test("the cache keeps its values within the budget, least recently used out first", () => {
  const freed = [];
  const cache = new PrefixCache(100, (value) => freed.push(value));
  assert.equal(cache.add([1, 2], "a", 40), true);
  assert.equal(cache.add([3, 4], "b", 40), true);
  assert.equal(cache.match([1, 2, 9]).entry.value, "a"); // a is now the most recently used
  assert.equal(cache.add([5, 6], "c", 40), true); // 120 bytes: b goes
  assert.deepEqual(freed, ["b"]);
  assert.deepEqual(
    cache.entries().map((e) => e.value),
    ["a", "c"],
  );
  assert.equal(cache.bytes, 80);
  assert.equal(cache.match([3, 4]).depth, 0);
  // A value over the whole budget is refused and freed at once.
  assert.equal(cache.add([7], "huge", 101), false);
  assert.deepEqual(freed, ["b", "huge"]);
  assert.equal(cache.size, 2);
});

test("a tiny budget keeps only the newest", () => {
  const freed = [];
  const cache = new PrefixCache(10, (value) => freed.push(value));
  for (const [i, tokens] of [[1], [2], [3]].entries()) cache.add(tokens, `v${i}`, 10);
  assert.deepEqual(
    cache.entries().map((e) => e.tokens),
    [[3]],
  );
  assert.deepEqual(freed, ["v0", "v1"]);
});

test("a sequence that extends held ones replaces them; one a held sequence extends adds nothing", () => {
  const freed = [];
  const cache = new PrefixCache(1000, (value) => freed.push(value));
  cache.add([1, 2], "short", 20);
  cache.add([1, 2, 3], "middle", 30);
  assert.deepEqual(freed, ["short"]);
  cache.add([1, 2, 3, 4, 5], "long", 50);
  assert.deepEqual(freed, ["short", "middle"]);
  assert.equal(cache.bytes, 50);
  assert.equal(cache.add([1, 2, 3], "again", 30), false);
  assert.deepEqual(freed, ["short", "middle", "again"]);
  // Rows of any prefix of a held sequence come from it.
  assert.deepEqual([cache.match([1, 2, 3, 7]).depth, cache.match([1, 2, 3, 7]).entry.value], [3, "long"]);
  assert.equal(cache.match([1, 2, 3, 4, 5, 6], 4).depth, 4);
  assert.equal(cache.depth([1, 2, 3, 4, 5]), 5);
  cache.clear();
  assert.equal(cache.size, 0);
  assert.equal(cache.bytes, 0);
  assert.deepEqual(freed, ["short", "middle", "again", "long"]);
});
