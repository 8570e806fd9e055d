/** A small seedable PRNG (mulberry32): same seed, same samples. */
export function makeRandom(seed) {
  if (seed === undefined || seed === null) return Math.random;
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * Picks the next token from last-position logits: greedy when temperature is 0, otherwise
 * softmax(logits / temperature) restricted to the smallest set whose mass reaches top_p.
 */
export function sample(logits, { temperature = 1, top_p = 1 }, random) {
  if (temperature <= 0) return argmax(logits);
  const max = logits[argmax(logits)];
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    probs[i] = Math.exp((logits[i] - max) / temperature);
    sum += probs[i];
  }
  // Candidates above a negligible share are sorted; the tail cannot reach any top_p < 1.
  const floor = top_p < 1 ? 1e-9 * sum : 0;
  const order = [];
  for (let i = 0; i < probs.length; i++) if (probs[i] > floor) order.push(i);
  order.sort((a, b) => probs[b] - probs[a]);
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
