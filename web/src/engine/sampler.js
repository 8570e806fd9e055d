/**
 * A random source in [0, 1): Math.random, or a generator fixed by `seed`, any safe integer
 * (|seed| < 2^53; api/request.js refuses others). Every bit of the seed and its sign set the
 * state, so no two seeds share a sequence. The generator is SFC32 (small, fast, and passes
 * PractRand), written here as JS has no seedable generator.
 * Numbers drawn and not used (by decode steps submitted ahead and discarded) are handed back
 * with `putBack(numbers)`, and drawn again first, in their order: a seeded request's tokens,
 * and those of its next choice, do not depend on how far ahead its steps ran.
 */
export function makeRandom(seed) {
  const returned = [];
  const source = seed === undefined || seed === null ? Math.random : generator(seed);
  const random = () => (returned.length > 0 ? returned.shift() : source());
  random.putBack = (numbers) => returned.unshift(...numbers);
  return random;
}

/** SFC32 seeded with every bit of `seed` (makeRandom). */
function generator(seed) {
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

// A truncated draw (top_k or top_p) keeps no token under 1e-9 of the most likely's weight (so
// that a GPU finds its thresholds without sorting the vocabulary); a full draw none whose
// weight float32 cannot hold as a normal number. Float32, as the kernels compare them.
const TRUNCATED_FLOOR = Math.fround(Math.log(1e-9));
const UNDERFLOW_FLOOR = -87;
const U_STEPS = 2 ** 24; // u's resolution: every multiple of 2^-24 below 1 is a float32

/**
 * The float32 parameters of a sampled draw, as the device's kernel takes them
 * (compiler/sampling.py): 1 / temperature, top_p (1: none), top_k (0: none), u (a random
 * number in [0, 1), a multiple of 2^-24) and the candidates' floor.
 */
export function drawParams({ temperature = 1, top_p = 1, top_k = 0 }, vocab, random) {
  const k = top_k > 0 && top_k < vocab ? top_k : 0;
  const p = top_p < 1 ? top_p : 1;
  const u = Math.floor(random() * U_STEPS) / U_STEPS;
  return Float32Array.of(1 / temperature, p, k, u, k > 0 || p < 1 ? TRUNCATED_FLOOR : UNDERFLOW_FLOOR);
}

/**
 * The tokens a sampled draw keeps, in index order, and their weights: with x the token's
 * (logit - largest) / temperature in float32 and weight exp(x), the candidates are the
 * tokens whose x reaches the floor; top_k keeps those whose logit is at or above the k-th
 * largest candidate's, ties included; top_p then the smallest such top set (by logit, ties
 * included) whose weight reaches top_p of what top_k kept (as transformers chains its top-k
 * and top-p warpers). The device's kernels find the same thresholds by halving the range of
 * float32 keys; here the candidates' logits are sorted (a token's weight follows from its
 * logit, and -0 ties with +0 as the kernels' keys make it).
 */
function kept(logits, [inv, topP, topK, , floor]) {
  const values = Float32Array.from(logits);
  const max = values[argmax(values)];
  const x = (v) => Math.fround(Math.fround(v - max) * inv);
  let low = -Infinity; // the least logit kept
  if (topK > 0 || topP < 1) {
    const sorted = values.filter((v) => x(v) >= floor).sort();
    const n = sorted.length;
    if (topK > 0 && n >= topK) low = sorted[n - topK];
    if (topP < 1) {
      let limit = 0;
      for (let i = n - 1; i >= 0 && sorted[i] >= low; i--) limit += Math.exp(x(sorted[i]));
      let mass = 0;
      for (let i = n - 1; i >= 0; i--) {
        mass += Math.exp(x(sorted[i]));
        // the threshold lies between distinct logits: ties are kept together
        if (mass >= topP * limit && (i === 0 || sorted[i - 1] !== sorted[i])) {
          low = Math.max(low, sorted[i]);
          break;
        }
      }
    }
  }
  const tokens = [];
  const weights = [];
  for (let i = 0; i < values.length; i++) {
    if (x(values[i]) >= floor && values[i] >= low) {
      tokens.push(i);
      weights.push(Math.exp(x(values[i])));
    }
  }
  return { tokens, weights };
}

/** The first kept token whose running weight passes `r`, else the last (rounding). */
function walk(tokens, weights, r, skip = -1) {
  let sum = 0;
  let last = tokens[tokens.length - 1];
  for (let j = 0; j < tokens.length; j++) {
    if (tokens[j] === skip) continue;
    last = tokens[j];
    sum += weights[j];
    if (sum > r) return tokens[j];
  }
  return last;
}

/** Whether the request picks its tokens greedily: temperature 0 or top_k 1. */
export function isGreedy({ temperature, top_k }) {
  return (temperature ?? 1) <= 0 || top_k === 1;
}

/**
 * Picks the next token from last-position logits: greedy when temperature is 0 or top_k 1,
 * otherwise drawn from the tokens `kept` keeps in proportion to their weights, by one random
 * number u: the first in index order whose running weight passes u times theirs (the walk
 * the device's kernel takes, so that the two pick the same token from the same u).
 */
export function sample(logits, params, random) {
  if (isGreedy(params)) return argmax(logits);
  const draw = drawParams(params, logits.length, random);
  return pick(logits, draw);
}

/** The token a draw's float32 parameters (`drawParams`) pick from `logits`. */
export function pick(logits, draw) {
  const { tokens, weights } = kept(logits, draw);
  if (tokens.length === 0) return 0; // no finite logit
  const total = weights.reduce((sum, w) => sum + w, 0);
  return walk(tokens, weights, draw[3] * total);
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
  const { tokens, weights } = kept(
    logits,
    drawParams(params, logits.length, () => 0),
  );
  if (tokens.length === 0) return 0;
  const total = weights.reduce((sum, w) => sum + w, 0);
  const at = tokens.indexOf(draft);
  const p = at >= 0 ? weights[at] : 0;
  if (p > 0 && random() * total < p) return draft;
  if (p === total) return draft;
  return walk(tokens, weights, random() * (total - p), draft);
}
