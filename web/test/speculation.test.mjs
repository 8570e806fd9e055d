// Prompt-lookup speculation's pure parts: the draft looked up in the prompt and reply
// (engine/prompt_lookup.js), held to a brute-force search, and the pick of a token that a draft
// was guessed for (engine/sampler.js sampleDraft), whose distribution must be the request's
// own, held to softmax, top-k and top-p computed here.
import assert from "node:assert/strict";
import { test } from "node:test";

import { InvalidRequestError } from "../src/errors.js";
import { DraftPolicy, checkSpeculation, lookupDraft } from "../src/engine/prompt_lookup.js";
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
  for (const ok of [
    undefined,
    true,
    false,
    {},
    { draftTokens: 0 },
    { minMatch: 1, maxMatch: 1 },
    { draftTokens: 15 },
    { adaptive: false },
  ])
    checkSpeculation(ok);
  for (const [bad, param] of [
    [null, "speculation"],
    ["on", "speculation"],
    [{ draftTokens: -1 }, "speculation.draftTokens"],
    [{ minMatch: 0 }, "speculation.minMatch"],
    [{ maxMatch: 2.5 }, "speculation.maxMatch"],
    [{ minMatch: 5 }, "speculation.minMatch"],
    [{ ngram: 3 }, "speculation.ngram"],
    [{ adaptive: 1 }, "speculation.adaptive"],
  ])
    assert.throws(
      () => checkSpeculation(bad),
      (err) => err instanceof InvalidRequestError && err.param === param,
    );
});

/** A policy that has seen `steps` plain steps of `stepMs`, then verify steps `[length, kept, ms]`. */
function policyAfter(stepMs, steps, verified = []) {
  const policy = new DraftPolicy();
  for (let i = 0; i < steps; i++) policy.stepped(stepMs);
  for (const [length, kept, ms] of verified) policy.verified(length, kept, ms);
  return policy;
}

/** The draft length with the most tokens per plain step's time, by brute force. */
function bestLength(p, cost, available) {
  const rates = [1];
  for (let k = 1; k <= available; k++) {
    let tokens = 0;
    for (let i = 0; i <= k; i++) tokens += p ** i;
    rates.push(tokens / (1 + cost * k));
  }
  return rates.indexOf(Math.max(...rates));
}

test("drafts are checked at the length that gives the most tokens for the time", () => {
  // Before any verify step: the priors (a draft token kept 3 times in 4, half a step each).
  const fresh = policyAfter(10, 3);
  assert.equal(fresh.size(15), bestLength(0.75, 0.5, 15));
  assert.ok(fresh.size(15) >= 1);
  assert.equal(fresh.size(0), 0);
  // Verify steps that cost little beside a plain step (a GPU reading the weights once) and keep
  // every draft token: long drafts.
  const cheap = policyAfter(
    10,
    3,
    Array.from({ length: 8 }, () => [8, 8, 12]),
  );
  assert.ok(cheap.cost < 0.1 && cheap.keep > 0.9);
  assert.equal(cheap.size(15), bestLength(cheap.keep, cheap.cost, 15));
  assert.ok(cheap.size(15) >= 10);
  // Each draft token costing a whole step (the CPU's arithmetic): no draft pays, however often
  // they are kept.
  const dear = policyAfter(
    10,
    3,
    Array.from({ length: 12 }, () => [2, 2, 30]),
  );
  assert.ok(dear.cost > 0.9 && dear.keep > 0.9);
  assert.equal(dear.size(15), 0);
  // Drafts rejected at their first token: none checked, until enough go unchecked that the
  // prior is back (a reply that starts copying later drafts again).
  const wrong = policyAfter(
    10,
    3,
    Array.from({ length: 6 }, () => [1, 0, 14]),
  );
  assert.equal(wrong.size(4), 0);
  let declined = 1;
  while (wrong.size(4) === 0) declined++;
  assert.ok(declined > 5 && declined < 60, `${declined}`);
});

test("drafts wait for plain steps to be timed; the first is not taken as the steps' time", () => {
  const policy = policyAfter(40, 1);
  assert.equal(policy.stepMs, null);
  policy.stepped(10);
  assert.equal(policy.size(15), 0);
  policy.stepped(10);
  assert.equal(policy.stepMs, 10);
  assert.ok(policy.size(15) > 0);
  // The first verify step timed replaces the prior cost; later ones move it a quarter.
  policy.verified(1, 1, 25);
  assert.equal(policy.cost, 1.5);
  policy.verified(2, 2, 20);
  assert.equal(policy.cost, 1.5 + (0.5 - 1.5) / 4);
});
