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
/** The entry functions run after a step on its logits, to pick its token. */
export const PICKS = [ARGMAX, ARGMAX_ROWS, SAMPLE, EDIT];
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
 * sample and edit on the step's own, argmax and sample once more on edit's output. `steps`: the
 * prepared steps (prefill, decode), whose `output` is their logits. A build without a function
 * gets no plans for it.
 */
export function preparePicks(plans, steps, prepare) {
  const perStep = (plan, sources) => {
    const prepared = {};
    for (const step of plan ? STEPS : []) {
      if (sources[step]) prepared[step] = prepare(plan, { logits: sources[step].output });
    }
    return prepared;
  };
  const edit = perStep(plans[EDIT], steps);
  const plain = { [GREEDY]: perStep(plans[ARGMAX], steps), sample: perStep(plans[SAMPLE], steps) };
  const edited = { [GREEDY]: perStep(plans[ARGMAX], edit), sample: perStep(plans[SAMPLE], edit) };
  const every = (prepared) => STEPS.every((step) => step in prepared);
  return {
    hasArgmax: every(plain[GREEDY]),
    hasSample: every(plain.sample),
    // the most edit rows edit takes (0: the build has none)
    maxEdits: every(edit) ? edit.decode.plan.inputs.find((input) => input.name === "edits").shape[0] - 1 : 0,
    /** What step `name` runs after itself for `pick` (executors' `run`): edit, or null, then the pick. */
    after(name, pick, withEdit) {
      const kind = pick === GREEDY ? GREEDY : "sample";
      return withEdit ? { edited: edit[name], then: edited[kind][name] } : { edited: null, then: plain[kind][name] };
    },
  };
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
