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
 * The distribution a sampled token is drawn from: softmax(logits / temperature) restricted to
 * the top_k most likely tokens (all where top_k is 0), then to the smallest set of those whose
 * mass reaches top_p of theirs (as transformers chains its top-k and top-p warpers). Returns
 * the candidates most likely first, `probs` their unnormalized probabilities by token id, and
 * how many of them (`kept`) and what mass (`mass`) the draw is among.
 */
function candidates(logits, { temperature = 1, top_p = 1, top_k = 0 }) {
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
  return { order, probs, kept, mass };
}

/** Whether the request picks its tokens greedily: temperature 0 or top_k 1. */
export function isGreedy({ temperature, top_k }) {
  return (temperature ?? 1) <= 0 || top_k === 1;
}

/**
 * Picks the next token from last-position logits: greedy when temperature is 0 or top_k 1,
 * otherwise drawn from the distribution `candidates` describes.
 */
export function sample(logits, params, random) {
  if (isGreedy(params)) return argmax(logits);
  const { order, probs, kept, mass } = candidates(logits, params);
  let r = random() * mass;
  for (let k = 0; k < kept; k++) {
    r -= probs[order[k]];
    if (r <= 0) return order[k];
  }
  return order[kept - 1];
}

/**
 * Picks the next token where a speculative `draft` token was guessed for it, with the
 * distribution `sample` draws from (speculative sampling, Leviathan et al. 2023, with a draft
 * that is one token for sure): the draft is kept with its probability p(draft); otherwise a
 * token is drawn from p with the draft taken out. Each token t then comes with probability
 * p(draft) [t = draft] + (1 - p(draft)) p(t) / (1 - p(draft)) [t != draft] = p(t), as `sample`
 * gives it; only the random numbers used differ. Greedy requests take the greedy token.
 */
export function sampleDraft(logits, params, random, draft) {
  if (isGreedy(params)) return argmax(logits);
  const { order, probs, kept, mass } = candidates(logits, params);
  let among = false;
  for (let k = 0; k < kept && !among; k++) among = order[k] === draft;
  const p = among ? probs[draft] : 0;
  if (p > 0 && random() * mass < p) return draft;
  let r = random() * (mass - p);
  let last = -1;
  for (let k = 0; k < kept; k++) {
    if (order[k] === draft) continue;
    last = order[k];
    r -= probs[last];
    if (r <= 0) return last;
  }
  return last === -1 ? draft : last;
}
