/**
 * What a request does to the model's logits before a token is drawn:
 * - `repetition_penalty` (as in Hugging Face transformers): the logit of every token already
 *   in the sequence, prompt included, is divided by the penalty when positive and
 *   multiplied by it when negative;
 * - `frequency_penalty` and `presence_penalty` (as OpenAI defines them): the logit of a
 *   token generated c times so far drops by c * frequency_penalty + (c > 0) * presence_penalty;
 * - `logit_bias`: a bias per token id is added.
 * Each token touched is one edit (`edits`), applied in float32 as the device applies it
 * (compiler/logit_edits.py), so that the two agree: the penalty's division or product, then
 * one offset (the bias less the other penalties), each rounded.
 */
export class LogitsProcessor {
  constructor({ repetition_penalty = 1, frequency_penalty = 0, presence_penalty = 0, logit_bias }, promptTokens) {
    this.repetition = repetition_penalty;
    this.frequency = frequency_penalty;
    this.presence = presence_penalty;
    this.bias = Object.entries(logit_bias ?? {}).map(([id, value]) => [Number(id), value]);
    this.seen = new Set(this.repetition !== 1 ? promptTokens : []);
    this.counts = new Map(); // generated token -> times
  }

  /** Whether `apply` changes anything: a request with none of the fields leaves the logits be. */
  get changesLogits() {
    return this.repetition !== 1 || this.frequency !== 0 || this.presence !== 0 || this.bias.length > 0;
  }

  accept(token) {
    if (this.repetition !== 1) this.seen.add(token);
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
  }

  /**
   * One [token, divisor, offset] per token touched, the two numbers float32: the token's logit
   * l becomes (l > 0 ? l / divisor : l * divisor) + offset.
   * @returns {[number, number, number][]}
   */
  edits() {
    const rows = new Map(); // token -> [divisor, offset]
    const row = (id) => rows.get(id) ?? rows.set(id, [1, 0]).get(id);
    if (this.repetition !== 1) for (const id of this.seen) row(id)[0] = this.repetition;
    if (this.frequency !== 0 || this.presence !== 0) {
      for (const [id, count] of this.counts) row(id)[1] -= count * this.frequency + this.presence;
    }
    for (const [id, value] of this.bias) row(id)[1] += value;
    return Array.from(rows, ([id, [divisor, offset]]) => [id, Math.fround(divisor), Math.fround(offset)]);
  }

  /** Applies the penalties and biases to `logits` (float32) in place. */
  apply(logits) {
    for (const [id, divisor, offset] of this.edits()) {
      const l = logits[id];
      logits[id] = Math.fround(l > 0 ? l / divisor : l * divisor) + offset;
    }
    return logits;
  }
}

/**
 * The device's edit rows (compiler/logit_edits.py): a first row of the value masked tokens
 * take, how many rows follow and whether the mask applies; then `edits` (LogitsProcessor's).
 */
export function editRows(edits, masked) {
  const rows = new Float32Array(3 * (edits.length + 1));
  rows.set([-Infinity, edits.length, masked ? 1 : 0]);
  edits.forEach((edit, i) => rows.set(edit, 3 * (i + 1)));
  return rows;
}

/** log softmax of `logits` (masked entries are -Infinity), in float64. */
export function logSoftmax(logits) {
  let max = -Infinity;
  for (const x of logits) if (x > max) max = x;
  let sum = 0;
  for (const x of logits) sum += Math.exp(x - max);
  const logZ = max + Math.log(sum);
  return Float64Array.from(logits, (x) => x - logZ);
}

/** The ids of the `k` largest values, largest first. */
export function topK(values, k) {
  const best = [];
  if (k <= 0) return best;
  for (let i = 0; i < values.length; i++) {
    if (best.length === k && values[i] <= values[best[k - 1]]) continue;
    let j = Math.min(best.length, k - 1);
    best[j] = i;
    while (j > 0 && values[best[j - 1]] < values[i]) {
      best[j] = best[j - 1];
      best[j - 1] = i;
      j--;
    }
  }
  return best;
}
