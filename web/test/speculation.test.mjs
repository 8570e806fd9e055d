// Prompt-lookup speculation's pure parts: the draft looked up in the prompt and reply
// (engine/prompt_lookup.js), held to a brute-force search, and the pick of a token that a draft
// was guessed for (engine/sampler.js sampleDraft), whose distribution must be the request's
// own, held to softmax, top-k and top-p computed here.
import assert from "node:assert/strict";
import { test } from "node:test";

import { InvalidRequestError } from "../src/errors.js";
import { checkSpeculation, lookupDraft } from "../src/engine/prompt_lookup.js";
import { makeRandom, sample, sampleDraft } from "../src/engine/sampler.js";

/** Every earlier occurrence of each n-gram that ends `seq`, longest n first, latest first. */
function bruteForceDraft(seq, { draftTokens, minMatch, maxMatch }) {
  for (let n = maxMatch; n >= minMatch; n--) {
    if (n >= seq.length) continue;
    const tail = seq.slice(seq.length - n).join(",");
    const starts = [];
    for (let s = 0; s + n < seq.length; s++) if (seq.slice(s, s + n).join(",") === tail) starts.push(s);
    if (starts.length > 0) {
      const from = Math.max(...starts) + n;
      return seq.slice(from, from + draftTokens);
    }
  }
  return [];
}

test("a reply copying its prompt gets the tokens that followed its last n-gram there", () => {
  const options = { draftTokens: 4, minMatch: 2, maxMatch: 3 };
  // "def f ( x ) : return x + 1" then the reply has copied "def f (" so far.
  const prompt = [10, 11, 12, 13, 14, 15, 16, 13, 17, 18, 99];
  assert.deepEqual(lookupDraft([...prompt, 10, 11, 12], options), [13, 14, 15, 16]);
  // Fewer than draftTokens are left after the occurrence.
  assert.deepEqual(lookupDraft([...prompt, 17, 18], options), [99, 17, 18]);
  // An n-gram seen nowhere before, or only a single token that minMatch 2 does not take.
  assert.deepEqual(lookupDraft([...prompt, 50, 51], options), []);
  assert.deepEqual(lookupDraft([...prompt, 50, 13], options), []);
  assert.deepEqual(lookupDraft([...prompt, 50, 13], { ...options, minMatch: 1 }), [17, 18, 99, 50]);
  // The longer match wins over a later shorter one: "1 2 3" -> 7, though "2 3" -> 9 is later.
  assert.deepEqual(lookupDraft([1, 2, 3, 7, 5, 2, 3, 9, 1, 2, 3], options), [7, 5, 2, 3]);
  assert.deepEqual(lookupDraft([1, 2, 3], { ...options, draftTokens: 0 }), []);
  assert.deepEqual(lookupDraft([], options), []);
});

test("the draft lookup agrees with a brute-force search on random sequences", () => {
  const random = makeRandom(7);
  for (let trial = 0; trial < 2000; trial++) {
    const alphabet = 2 + Math.floor(random() * 6);
    const seq = Array.from({ length: Math.floor(random() * 40) }, () => Math.floor(random() * alphabet));
    const minMatch = 1 + Math.floor(random() * 3);
    const options = {
      draftTokens: 1 + Math.floor(random() * 10),
      minMatch,
      maxMatch: minMatch + Math.floor(random() * 3),
    };
    assert.deepEqual(lookupDraft(seq, options), bruteForceDraft(seq, options), JSON.stringify({ seq, options }));
  }
});

/** The request's distribution over token ids, computed directly: softmax(l / t), top-k, top-p. */
function expected(logits, { temperature, top_k, top_p }) {
  const weights = logits.map((l) => Math.exp(l / temperature));
  let order = weights.map((_, i) => i).sort((a, b) => weights[b] - weights[a]);
  if (top_k > 0) order = order.slice(0, top_k);
  const total = order.reduce((s, i) => s + weights[i], 0);
  const kept = [];
  let mass = 0;
  for (const i of order) {
    if (kept.length > 0 && mass >= top_p * total) break;
    kept.push(i);
    mass += weights[i];
  }
  const p = new Array(logits.length).fill(0);
  for (const i of kept) p[i] = weights[i] / mass;
  return p;
}

test("a token picked against a draft has the request's own distribution, whatever the draft", () => {
  const logits = Float32Array.from([1.0, 2.5, 0.3, 2.0, -1.0, 1.8]);
  const draws = 40000;
  for (const params of [
    { temperature: 0.7, top_k: 0, top_p: 1 },
    { temperature: 1.3, top_k: 4, top_p: 0.85 },
  ]) {
    const p = expected(Array.from(logits), params);
    // Every token as the draft: likely ones, unlikely ones, and ones top-k or top-p leaves out.
    for (let draft = 0; draft < logits.length; draft++) {
      const random = makeRandom(1000 + draft);
      const counts = new Array(logits.length).fill(0);
      for (let i = 0; i < draws; i++) counts[sampleDraft(logits, params, random, draft)]++;
      counts.forEach((count, id) => {
        // Five standard deviations of a binomial count: a wrong distribution is far outside.
        const sd = Math.sqrt(draws * p[id] * (1 - p[id]));
        assert.ok(
          Math.abs(count - draws * p[id]) <= 5 * sd + 1,
          JSON.stringify({ params, draft, id, count, p: p[id] }),
        );
      });
    }
  }
});

test("a greedy request takes the greedy token whatever the draft; a sure draft is always kept", () => {
  const logits = Float32Array.from([0.1, 3, 2.9, -4]);
  const random = makeRandom(3);
  for (let draft = 0; draft < 4; draft++) {
    assert.equal(sampleDraft(logits, { temperature: 0 }, random, draft), 1);
    assert.equal(sampleDraft(logits, { temperature: 1, top_k: 1 }, random, draft), 1);
  }
  // top_p 0 keeps the likeliest token alone: p = 1 for it.
  for (let i = 0; i < 100; i++) assert.equal(sampleDraft(logits, { temperature: 1, top_p: 0 }, random, 1), 1);
  // sample is unchanged by the refactoring: the same seed, the same draws as its distribution says.
  const p = expected([0.1, 3, 2.9, -4], { temperature: 1, top_k: 0, top_p: 1 });
  const r = makeRandom(5);
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 20000; i++) counts[sample(logits, { temperature: 1 }, r)]++;
  counts.forEach((c, id) => assert.ok(Math.abs(c - 20000 * p[id]) <= 5 * Math.sqrt(20000 * p[id] * (1 - p[id])) + 1));
});

test("the engine's speculation option is checked up front", () => {
  for (const ok of [undefined, true, false, {}, { draftTokens: 0 }, { minMatch: 1, maxMatch: 1 }, { draftTokens: 15 }])
    checkSpeculation(ok);
  for (const [bad, param] of [
    [null, "speculation"],
    ["on", "speculation"],
    [{ draftTokens: -1 }, "speculation.draftTokens"],
    [{ minMatch: 0 }, "speculation.minMatch"],
    [{ maxMatch: 2.5 }, "speculation.maxMatch"],
    [{ minMatch: 5 }, "speculation.minMatch"],
    [{ ngram: 3 }, "speculation.ngram"],
  ])
    assert.throws(
      () => checkSpeculation(bad),
      (err) => err instanceof InvalidRequestError && err.param === param,
    );
});
