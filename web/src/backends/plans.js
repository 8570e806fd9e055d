// What the WebGPU and WebAssembly executors share of a plan: its tensors' sizes, its buffers
// and the references that name them, and the entry functions a chat model's steps run.
import { ModelLoadError } from "../errors.js";
import { evaluate } from "./expr.js";

/** Bytes of a tensor the manifest describes ({shape, dtype}). */
export function tensorBytes({ shape, dtype }) {
  return shape.reduce((n, d) => n * d, 1) * (dtype === "float16" ? 2 : 4);
}

/**
 * A plan's own buffers, its storages and tensor inputs (sized for the plan's bounds), made
 * by `allocate(bytes)`, and `resolve` from the plan's buffer references ({storage}, {input},
 * {cache}, {param}) to them, the KV cache and the weights: for either backend's executor.
 * An input named in `bound` is that buffer instead (argmax's logits: another plan's output).
 */
export function planBuffers(plan, manifest, allocate, cache, weights, bound = {}) {
  const storages = plan.storages.map((bytes) => allocate(bytes));
  const inputs = {};
  for (const input of plan.inputs) {
    if (input.kind !== "tensor") continue;
    if (input.name in bound) {
      inputs[input.name] = bound[input.name];
      continue;
    }
    const bounds = manifest.bounds ?? { n: manifest.prefill_chunk };
    const count = input.shape.reduce((a, d) => a * evaluate(d, bounds), 1);
    inputs[input.name] = allocate(count * 4);
  }
  const resolve = (ref) => {
    if ("storage" in ref) return storages[ref.storage];
    if ("cache" in ref) return cache[ref.cache];
    if ("param" in ref) return weights.get(ref.param);
    if ("input" in ref) return inputs[ref.input];
    throw new ModelLoadError(`unknown buffer reference ${JSON.stringify(ref)}`);
  };
  return { inputs, resolve };
}

/** The entry function that picks the greedy token on the device (compiler/sampling.py). */
export const ARGMAX = "argmax";
/** The entry function that picks the greedy token of each row of verify's logits. */
export const ARGMAX_ROWS = "argmax_rows";
/** The entry function that draws a sampled token on the device, from a draw's parameters. */
export const SAMPLE = "sample";
/** The entry function that applies a request's penalties, biases and grammar mask on the device. */
export const EDIT = "edit";
/**
 * The entry function that gives the picked token's log probability and the TOP_LOGPROBS most
 * likely tokens' (compiler/top_logprobs.py): float32 [1 + 2 * TOP_LOGPROBS].
 */
export const LOGPROBS = "logprobs";
export const TOP_LOGPROBS = 20;
/** The entry functions run after a step on its logits, to pick its token. */
export const PICKS = [ARGMAX, ARGMAX_ROWS, SAMPLE, EDIT, LOGPROBS];
/**
 * What a step picks on the device (executors' `run`): GREEDY, the greedy token (argmax), or
 * a draw's float32 parameters (engine/sampler.js drawParams), the token drawn (sample).
 */
export const GREEDY = "greedy";
/** The functions whose logits output argmax and sample read in place: a chat model's steps. */
export const STEPS = ["prefill", "decode"];

/**
 * The plans that pick a chat model's token after its steps, prepared by either executor's
 * `prepare(plan, bound)` once for each step, each reading the logits where they lie: argmax,
 * sample and edit on the step's own, argmax and sample once more on edit's output, and logprobs
 * after each of those picks, on the logits it picked from and its token. `steps`: the prepared
 * steps (prefill, decode), whose `output` is their logits. A build without a function gets no
 * plans for it.
 */
export function preparePicks(plans, steps, prepare) {
  const perStep = (plan, sources, picks = null) => {
    const prepared = {};
    for (const step of plan ? STEPS : []) {
      if (!sources[step] || (picks && !picks[step])) continue;
      prepared[step] = prepare(plan, {
        logits: sources[step].output,
        ...(picks ? { token: picks[step].output } : {}),
      });
    }
    return prepared;
  };
  const edit = perStep(plans[EDIT], steps);
  const plain = { [GREEDY]: perStep(plans[ARGMAX], steps), sample: perStep(plans[SAMPLE], steps) };
  const edited = { [GREEDY]: perStep(plans[ARGMAX], edit), sample: perStep(plans[SAMPLE], edit) };
  const scored = (sources, picks) => ({
    [GREEDY]: perStep(plans[LOGPROBS], sources, picks[GREEDY]),
    sample: perStep(plans[LOGPROBS], sources, picks.sample),
  });
  const scores = { plain: scored(steps, plain), edited: scored(edit, edited) };
  const every = (prepared) => STEPS.every((step) => step in prepared);
  return {
    hasArgmax: every(plain[GREEDY]),
    hasSample: every(plain.sample),
    // whether the picks can give their log probabilities (all of them, edited or not)
    hasLogprobs: [scores.plain, scores.edited].every((s) => every(s[GREEDY]) && every(s.sample)),
    // the most edit rows edit takes (0: the build has none)
    maxEdits: every(edit) ? edit.decode.plan.inputs.find((input) => input.name === "edits").shape[0] - 1 : 0,
    /**
     * What step `name` runs after itself for `pick` (executors' `run`): edit, or null, then the
     * pick, then (`withLogprobs`) logprobs, or null.
     */
    after(name, pick, withEdit, withLogprobs = false) {
      const kind = pick === GREEDY ? GREEDY : "sample";
      const logprobs = withLogprobs ? scores[withEdit ? "edited" : "plain"][kind][name] : null;
      return withEdit
        ? { edited: edit[name], then: edited[kind][name], logprobs }
        : { edited: null, then: plain[kind][name], logprobs };
    },
  };
}

/** Bytes a picked token takes, with its logprobs where the build gives them (`preparePicks`). */
export function pickedBytes(picks) {
  return picks.hasLogprobs ? 4 * (2 + 2 * TOP_LOGPROBS) : 4;
}

/**
 * A picked token as read back (the id, int32, then with `logprobs` the logprobs plan's
 * output): its id, or {token, logprobs: {logprob, top: [{id, logprob}]}}, the most likely
 * tokens in order, as many as are finite.
 * @param {ArrayBuffer} bytes
 * @returns {number | {token: number, logprobs: {logprob: number, top: {id: number, logprob: number}[]}}}
 */
export function readPicked(bytes, logprobs) {
  const token = new Int32Array(bytes, 0, 1)[0];
  if (!logprobs) return token;
  const out = new Float32Array(bytes, 4, 1 + 2 * TOP_LOGPROBS);
  const top = [];
  for (let j = 0; j < TOP_LOGPROBS && out[1 + TOP_LOGPROBS + j] >= 0; j++)
    top.push({ id: out[1 + TOP_LOGPROBS + j], logprob: out[1 + j] });
  return { token, logprobs: { logprob: out[0], top } };
}

/**
 * Where the first `count` rows of each KV-cache tensor lie in a snapshot of them (prefix
 * caching): the tensors one after another, each its rows 0..count (a row: one position's keys or
 * values, the tensor's first dimension being the position). Null where a row is not a whole
 * number of 4-byte words, which WebGPU cannot copy: such a model takes no snapshots.
 * @returns {{segments: {offset: number, rowBytes: number}[], bytes: number} | null}
 */
export function snapshotLayout(manifest, count) {
  let offset = 0;
  const segments = [];
  for (const tensor of manifest.kv_cache) {
    const rowBytes = tensorBytes(tensor) / tensor.shape[0];
    if (rowBytes % 4 !== 0) return null;
    segments.push({ offset, rowBytes });
    offset += count * rowBytes;
  }
  return { segments, bytes: offset };
}
