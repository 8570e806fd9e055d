import { topK } from "./logits.js";

/**
 * A random source in [0, 1): Math.random, or a generator fixed by `seed`, any safe integer
 * (|seed| < 2^53; api/request.js refuses others). Every bit of the seed and its sign set the
 * state, so no two seeds share a sequence. The generator is SFC32 (small, fast, and passes
 * PractRand), written here as JS has no seedable generator.
 */
export function makeRandom(seed) {
  if (seed === undefined || seed === null) return Math.random;
  const magnitude = Math.abs(seed);
  let a = magnitude >>> 0; // the low 32 bits
  let b = Math.floor(magnitude / 4294967296) >>> 0; // the high 21
  let c = seed < 0 ? 0x9e3779b9 : 0x85ebca6b;
  let d = 1;
  const next = () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 15; i++) next(); // mixes the seed through the state
  return next;
}

export function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * Picks the next token from last-position logits: greedy when temperature is 0 or top_k 1,
 * otherwise softmax(logits / temperature) restricted to the top_k most likely tokens (all
 * where top_k is 0), then to the smallest set of those whose mass reaches top_p of theirs (as
 * transformers chains its top-k and top-p warpers).
 */
export function sample(logits, { temperature = 1, top_p = 1, top_k = 0 }, random) {
  if (temperature <= 0 || top_k === 1) return argmax(logits);
  const max = logits[argmax(logits)];
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    probs[i] = Math.exp((logits[i] - max) / temperature);
    sum += probs[i];
  }
  let order;
  if (top_k > 0 && top_k < logits.length) {
    // Masked tokens (probability 0) stay out where fewer than top_k are allowed.
    order = topK(probs, top_k).filter((i) => probs[i] > 0);
    sum = order.reduce((total, i) => total + probs[i], 0);
  } else {
    // Candidates above a negligible share are sorted; the tail cannot reach any top_p < 1.
    const floor = top_p < 1 ? 1e-9 * sum : 0;
    order = [];
    for (let i = 0; i < probs.length; i++) if (probs[i] > floor) order.push(i);
    order.sort((a, b) => probs[b] - probs[a]);
  }
  let kept = 1; // top_p 0 keeps the most likely token
  let mass = probs[order[0]];
  while (kept < order.length && mass < top_p * sum) mass += probs[order[kept++]];
  let r = random() * mass;
  for (let k = 0; k < kept; k++) {
    r -= probs[order[k]];
    if (r <= 0) return order[k];
  }
  return order[kept - 1];
}
