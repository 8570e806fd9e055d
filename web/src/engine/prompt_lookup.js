// Prompt-lookup speculation: the draft tokens a decode step checks at once, guessed from the
// text so far with no second model. A reply that copies from its prompt (code to edit, fields
// to extract, a passage to quote) repeats n-grams of it: where the last few tokens occurred
// before, the tokens that followed them there are likely to follow again. The model checks
// the guess in one verify step (model.js) and keeps it as far as it agrees with what the model
// picks itself (generator.js), so a wrong guess costs time, never a different reply.
import { InvalidRequestError } from "../errors.js";

/**
 * The defaults of the engine's `speculation` option (Engine.reload): drafts of up to
 * `draftTokens` tokens, found after the longest n-gram of `maxMatch` down to `minMatch` tokens
 * that ends the text and occurred earlier in it; `adaptive`, each draft's length chosen from
 * what drafts have cost and kept so far in the request (DraftPolicy), none where checking one
 * would not pay; without it, every draft found is checked whole.
 */
export const SPECULATION_DEFAULTS = { draftTokens: 15, minMatch: 3, maxMatch: 4, adaptive: true };

/**
 * Throws an InvalidRequestError where the engine's `speculation` option is none of: absent,
 * true, false, or an object of SPECULATION_DEFAULTS' fields, each a whole number (draftTokens
 * 0 or more, the matches 1 or more, minMatch at most maxMatch) but `adaptive`, a boolean.
 */
export function checkSpeculation(speculation) {
  if (speculation === undefined || typeof speculation === "boolean") return;
  const what = "must be true, false or {draftTokens, minMatch, maxMatch, adaptive}";
  if (typeof speculation !== "object" || speculation === null) throw new InvalidRequestError("speculation", what);
  for (const [name, value] of Object.entries(speculation)) {
    if (!(name in SPECULATION_DEFAULTS))
      throw new InvalidRequestError(`speculation.${name}`, `is not an option: ${what}`);
    if (name === "adaptive") {
      if (typeof value !== "boolean") throw new InvalidRequestError("speculation.adaptive", "must be true or false");
      continue;
    }
    const least = name === "draftTokens" ? 0 : 1;
    if (!(Number.isSafeInteger(value) && value >= least))
      throw new InvalidRequestError(`speculation.${name}`, `must be a whole number, ${least} or more`);
  }
  const { minMatch, maxMatch } = { ...SPECULATION_DEFAULTS, ...speculation };
  if (minMatch > maxMatch) throw new InvalidRequestError("speculation.minMatch", "must be at most maxMatch");
}

// DraftPolicy's priors: a draft token kept 3 times in 4, and each draft token costing half a
// plain step on top of the verify step's one (until a verify step is timed); the plain steps
// timed before any draft is checked; how fast the measured times move (an exponential
// average), and how much of what the request's drafts kept is forgotten each time a draft
// found is not checked.
const PRIOR_KEPT = 3;
const PRIOR_CHECKED = 4;
const PRIOR_COST = 0.5;
const TIMED_STEPS = 2;
const TIMING_WEIGHT = 0.25;
const FADE = 0.9;

/**
 * How many tokens of a draft found to check, from what checking drafts has cost and kept so
 * far in one request. A verify step of k draft tokens takes about 1 + c k plain steps' time and,
 * each draft token kept with probability p once those before it are, gives 1 + p + ... + p^k
 * tokens; the length chosen gives the most tokens for the time, and none is checked where no
 * length gives more than a plain step (k = 1 pays only where p > c). p is counted from the
 * draft tokens the model has checked (those up to the first rejected one), on top of a prior;
 * c from the steps' own times (the first verify step's replacing the prior), so that where a
 * verify step costs about what a plain one does (a GPU, whose time is reading the weights)
 * drafts grow long, and where each token's arithmetic is the cost (the CPU backend,
 * SwiftShader) only drafts that are mostly kept are checked. The counts fade each time a draft found goes unchecked, so that a reply that starts
 * copying after a stretch of free text drafts again.
 */
export class DraftPolicy {
  constructor() {
    this.kept = 0;
    this.checked = 0;
    this.cost = PRIOR_COST;
    this.costTimed = false;
    this.stepMs = null;
    this.steps = 0;
  }

  /** The chance that a draft token is kept, once those before it are. */
  get keep() {
    return (this.kept + PRIOR_KEPT) / (this.checked + PRIOR_CHECKED);
  }

  /** A plain step took `ms` (the request's first is not counted: it wakes threads and caches). */
  stepped(ms) {
    if (this.steps++ === 0) return;
    this.stepMs = this.stepMs === null ? ms : this.stepMs + (ms - this.stepMs) * TIMING_WEIGHT;
  }

  /** A verify step of `length` draft tokens took `ms`; the first `kept` of them were kept. */
  verified(length, kept, ms) {
    this.kept += kept;
    this.checked += Math.min(kept + 1, length);
    if (this.stepMs === null || length === 0) return;
    const cost = Math.max(0, (ms / this.stepMs - 1) / length);
    this.cost = this.costTimed ? this.cost + (cost - this.cost) * TIMING_WEIGHT : cost;
    this.costTimed = true;
  }

  /**
   * The number of a draft's first `available` tokens to check (0: a plain step instead); none
   * before TIMED_STEPS plain steps are timed, the measure of a verify step's cost.
   */
  size(available) {
    if (this.steps <= TIMED_STEPS) return 0;
    const p = this.keep;
    let best = 0;
    let bestRate = 1;
    let tokens = 1;
    let term = 1;
    for (let k = 1; k <= available; k++) {
      term *= p;
      tokens += term;
      const rate = tokens / (1 + this.cost * k);
      if (rate > bestRate) [best, bestRate] = [k, rate];
    }
    if (best === 0 && available > 0) [this.kept, this.checked] = [this.kept * FADE, this.checked * FADE];
    return best;
  }
}

/**
 * The draft after `sequence` (prompt and reply so far): for n from `maxMatch` down to
 * `minMatch`, the most recent earlier occurrence of the last n tokens, and up to `draftTokens`
 * of the tokens that followed it; [] where no such n-gram occurred before. The most recent
 * occurrence, as a reply copying a passage continues from where it copied last.
 * The scan is plain: a few thousand comparisons a step, against a decode step's milliseconds.
 * @param {ArrayLike<number>} sequence
 * @param {{draftTokens: number, minMatch: number, maxMatch: number}} options
 * @returns {number[]}
 */
export function lookupDraft(sequence, { draftTokens, minMatch, maxMatch }) {
  const length = sequence.length;
  if (draftTokens <= 0) return [];
  for (let n = Math.min(maxMatch, length - 1); n >= Math.max(minMatch, 1); n--) {
    const tail = length - n;
    // An occurrence at `start` ends before the tail's last token, so something follows it.
    for (let start = tail - 1; start >= 0; start--) {
      let k = 0;
      while (k < n && sequence[start + k] === sequence[tail + k]) k++;
      if (k === n) {
        const from = start + n;
        return Array.from({ length: Math.min(draftTokens, length - from) }, (_, i) => sequence[from + i]);
      }
    }
  }
  return [];
}
