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
 * that ends the text and occurred earlier in it.
 */
export const SPECULATION_DEFAULTS = { draftTokens: 15, minMatch: 3, maxMatch: 4 };

/**
 * Throws an InvalidRequestError where the engine's `speculation` option is none of: absent,
 * true, false, or an object of SPECULATION_DEFAULTS' fields, each a whole number (draftTokens
 * 0 or more, the matches 1 or more, minMatch at most maxMatch).
 */
export function checkSpeculation(speculation) {
  if (speculation === undefined || typeof speculation === "boolean") return;
  const what = "must be true, false or {draftTokens, minMatch, maxMatch}, each a whole number";
  if (typeof speculation !== "object" || speculation === null) throw new InvalidRequestError("speculation", what);
  for (const [name, value] of Object.entries(speculation)) {
    if (!(name in SPECULATION_DEFAULTS))
      throw new InvalidRequestError(`speculation.${name}`, `is not an option: ${what}`);
    const least = name === "draftTokens" ? 0 : 1;
    if (!(Number.isSafeInteger(value) && value >= least))
      throw new InvalidRequestError(`speculation.${name}`, `must be a whole number, ${least} or more`);
  }
  const { minMatch, maxMatch } = { ...SPECULATION_DEFAULTS, ...speculation };
  if (minMatch > maxMatch) throw new InvalidRequestError("speculation.minMatch", "must be at most maxMatch");
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
