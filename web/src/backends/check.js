// Will a model run here? Answered from its manifest alone, before any weight is fetched: the
// backend and kernel set that would run it (chooseBuild, the choice CreateEngine makes), the
// bytes to download and those already in the weight cache, the memory it needs at a context
// window, and whether the device's limits and the storage quota hold it (checkModel).
// CreateEngine runs assessFit on the build it chose and fails with a ModelWontFitError before
// it fetches anything more than the manifests.
import { KilnError, InvalidRequestError, ModelLoadError } from "../errors.js";
import { chooseAdapter } from "./choose.js";
import { isFallbackAdapter, pickBuild } from "./device.js";
import { tensorBytes } from "./plans.js";
import { fetchManifest } from "./loader.js";
import { WEIGHT_CACHE } from "./shards.js";

const WASM_PAGE = 65536;
const sum = (values) => values.reduce((a, b) => a + b, 0);

/**
 * The build of a model that runs here, of `candidates` ({base, manifest} in order of
 * preference), and where: `adapter` (null for the CPU backend) and `variant`, the kernel set's
 * name ("gpu" on a real GPU, "software" on a fallback adapter, "wasm" on the CPU).
 * @param {{base: URL, manifest: object}[]} candidates
 * @param {{backend?: "auto" | "webgpu" | "wasm", variant?: string}} [options]
 */
export async function chooseBuild(candidates, { backend = "auto", variant } = {}) {
  const manifests = candidates.map((c) => c.manifest);
  const adapter = await chooseAdapter(backend, variant, manifests);
  const chosen = pickBuild(adapter, manifests);
  const { base, manifest } = candidates.find((c) => c.manifest === chosen);
  if (!adapter) return { adapter, base, manifest, variant: "wasm" };
  const name = variant ?? kernelSetFor(adapter, manifest);
  if (name === "wasm") throw new ModelLoadError('The "wasm" kernels run on the CPU backend: pass backend: "wasm"');
  return { adapter, base, manifest, variant: name };
}

/** The storage buffers a kernel set's kernels bind at most (WebGPU's default limit, 8, where a build does not say). */
const storageBuffers = (kernelSet) => kernelSet?.storage_buffers ?? 8;

/** Whether `adapter` lets each of a kernel set's kernels bind the storage buffers it does. */
const bindsWithin = (kernelSet, adapter) => storageBuffers(kernelSet) <= adapter.limits.maxStorageBuffersPerShaderStage;

/**
 * The WebGPU kernel set a build runs with on `adapter`: "software" on a fallback adapter (a CPU
 * emulating a GPU), or where the adapter lets a kernel bind fewer storage buffers than the "gpu"
 * set's do; else "gpu".
 */
export function kernelSetFor(adapter, manifest) {
  return isFallbackAdapter(adapter) || !bindsWithin(manifest.variants.gpu, adapter) ? "software" : "gpu";
}

/**
 * The KV cache's tensors at `tokens` tokens: a tensor's first dimension is the build's context
 * window (compiler/models/decoder/causal_lm.py, cache_spec), so each shrinks with it linearly.
 */
function kvTensorBytes(manifest, tokens) {
  return manifest.kv_cache.map((t) =>
    t.shape[0] === manifest.context_window
      ? tensorBytes({ ...t, shape: [tokens, ...t.shape.slice(1)] })
      : tensorBytes(t),
  );
}

/** The largest whole number of tokens at most `asked` for which `fits(tokens)` holds, or null. */
function largestFitting(asked, fits) {
  if (fits(asked)) return asked;
  let [low, high] = [0, asked]; // fits(low) (or low is 0), !fits(high)
  while (high - low > 1) {
    const middle = Math.floor((low + high) / 2);
    if (fits(middle)) low = middle;
    else high = middle;
  }
  return low > 0 ? low : null;
}

/**
 * What the build `manifest` needs on the backend `chooseBuild` picked (`adapter`, `variant`)
 * at `contextWindow` tokens (by default the build's), and what keeps it from running there:
 * memory (weights, KV cache, activations: the plans' storages, sized at the build's bounds),
 * the largest buffer against the adapter's limits, the CPU backend's memory ceiling, and the
 * context window itself. No I/O: CreateEngine runs it before fetching anything else.
 */
export function assessFit(manifest, adapter, variant, contextWindow = manifest.context_window) {
  const built = manifest.context_window;
  const reasons = [];
  const plans = Object.values(manifest.variants[variant]?.functions ?? {});
  if (!manifest.variants[variant])
    reasons.push(
      `${manifest.model_id} has no "${variant}" kernels (it has: ${Object.keys(manifest.variants).join(", ")}); rebuild it with this build-web`,
    );
  const weights = sum(manifest.params.map((t) => t.bytes));
  const activations = sum(plans.flatMap((plan) => plan.storages));
  const kvAt = (tokens) => sum(kvTensorBytes(manifest, tokens));
  const memory = { weights, kv_cache: kvAt(contextWindow), activations, total: 0 };
  memory.total = weights + memory.kv_cache + activations;
  const limits = { required_features: manifest.required_features };
  let fits = () => true;
  if (adapter) {
    limits.max_buffer_size = adapter.limits.maxBufferSize;
    limits.max_storage_buffer_binding_size = adapter.limits.maxStorageBufferBindingSize;
    const limit = Math.min(limits.max_buffer_size, limits.max_storage_buffer_binding_size);
    const others = Math.max(0, ...manifest.params.map((t) => t.bytes), ...plans.flatMap((plan) => plan.storages));
    const largestAt = (tokens) => Math.max(others, ...kvTensorBytes(manifest, tokens));
    limits.largest_buffer = largestAt(contextWindow);
    limits.max_storage_buffers_per_shader_stage = adapter.limits.maxStorageBuffersPerShaderStage;
    const kernelSet = manifest.variants[variant];
    if (kernelSet && !bindsWithin(kernelSet, adapter))
      reasons.push(
        `its "${variant}" kernels bind ${storageBuffers(kernelSet)} storage buffers, and this device allows ` +
          `${limits.max_storage_buffers_per_shader_stage} (maxStorageBuffersPerShaderStage; the "software" kernels bind fewer)`,
      );
    fits = (tokens) => largestAt(tokens) <= limit;
    if (!fits(contextWindow))
      reasons.push(
        `it needs a GPU buffer of ${limits.largest_buffer} bytes, and this device allows ${limit} ` +
          "(maxStorageBufferBindingSize and maxBufferSize)",
      );
  } else if (manifest.variants.wasm) {
    // Weights, KV cache and activations all live in the CPU kernels' one WebAssembly memory.
    limits.wasm_memory_bytes = manifest.variants.wasm.wasm.memory.maximum * WASM_PAGE;
    fits = (tokens) => weights + kvAt(tokens) + activations <= limits.wasm_memory_bytes;
    if (!fits(contextWindow))
      reasons.push(
        `it needs ${memory.total} bytes of WebAssembly memory, and the CPU backend's kernels address ${limits.wasm_memory_bytes}`,
      );
  }
  const fitting = manifest.variants[variant] ? largestFitting(contextWindow, fits) : null;
  if (fitting !== contextWindow && fitting !== null)
    reasons.push(`at most ${fitting} tokens of context fit: rebuild it with --context-window ${fitting} or less`);
  else if (fitting === null && manifest.variants[variant])
    reasons.push(
      "no context window fits: the weights or activations alone are over the limit (a smaller --prefill-chunk shrinks the activations)",
    );
  if (contextWindow > built)
    reasons.push(
      `it was built for ${built} tokens of context: rebuild it with --context-window ${fitting ?? contextWindow}`,
    );
  else if (contextWindow < built && reasons.length === 0)
    reasons.push(
      `it was built for ${built} tokens of context, and the runtime runs a model at the context window ` +
        `it was built with (the KV cache's shape is compiled into its kernels): rebuild it with --context-window ${contextWindow}`,
    );
  return { reasons, memory, limits, context_window: contextWindow, fitting_context_window: fitting };
}

/** Bytes of `manifest`'s shards held in the weight cache (shard file names carry their hash). */
async function cachedShardBytes(base, manifest) {
  try {
    if (!globalThis.caches || !(await caches.has(WEIGHT_CACHE))) return 0;
    const cache = await caches.open(WEIGHT_CACHE);
    const held = await Promise.all(
      manifest.shards.map(async (shard) => {
        const hit = await cache.match(new URL(shard.file, base).href);
        return hit && (await hit.blob()).size === shard.bytes ? shard.bytes : 0;
      }),
    );
    return sum(held);
  } catch {
    return 0; // no Cache API here (an insecure context, storage turned off): nothing cached
  }
}

/** navigator.storage.estimate()'s quota and usage, each null where the platform has none. */
async function storageEstimate() {
  try {
    const { quota = null, usage = null } = (await globalThis.navigator?.storage?.estimate?.()) ?? {};
    return { quota, usage };
  } catch {
    return { quota: null, usage: null };
  }
}

/**
 * Whether the model at `model` (a model folder's URL, or the `model_id` of an entry of
 * `options.appConfig`) would run here, from its manifest alone: no weight is fetched. See
 * README.md ("Loading") and `ModelCheck` in types/kiln.d.ts.
 * @param {string} model
 * @param {{appConfig?: {model_list: {model_id: string, model: string | string[]}[]},
 *          backend?: "auto" | "webgpu" | "wasm", variant?: string, contextWindow?: number}} [options]
 */
export async function checkModel(model, { appConfig, backend, variant, contextWindow } = {}) {
  if (typeof model !== "string" || model.length === 0)
    throw new InvalidRequestError("model", "must be a model id or a URL");
  if (contextWindow !== undefined && !(Number.isInteger(contextWindow) && contextWindow >= 1))
    throw new InvalidRequestError("contextWindow", "must be a whole number of tokens, 1 or more");
  const entry = appConfig?.model_list?.find((e) => e.model_id === model);
  const candidates = await Promise.all((entry ? [entry.model].flat() : [model]).map(fetchManifest));
  let chosen;
  try {
    chosen = await chooseBuild(candidates, { backend, variant });
  } catch (err) {
    if (!(err instanceof KilnError) || err instanceof InvalidRequestError) throw err;
    // No backend runs it here (no WebGPU, a feature the adapter lacks): that is the answer.
    const { manifest } = candidates[0];
    return {
      ok: false,
      model_id: manifest.model_id,
      backend: null,
      variant: null,
      reasons: [err.message],
      warnings: [],
      download_bytes: null,
      cached_bytes: null,
      kernel_bytes: null,
      memory: null,
      limits: { required_features: manifest.required_features },
      storage: null,
      context_window: contextWindow ?? manifest.context_window,
      fitting_context_window: null,
    };
  }
  const { adapter, base, manifest } = chosen;
  const fit = assessFit(manifest, adapter, chosen.variant, contextWindow);
  const shardTotal = sum(manifest.shards.map((s) => s.bytes));
  const cached = await cachedShardBytes(base, manifest);
  const { quota, usage } = await storageEstimate();
  const toCache = shardTotal - cached;
  const storage = { quota, usage, fits: quota === null || usage === null ? null : toCache <= quota - usage };
  const warnings =
    storage.fits === false
      ? [
          `the weights to cache (${toCache} bytes) exceed the storage quota left (${quota - usage} bytes): ` +
            "the model loads, but is downloaded again on every load",
        ]
      : [];
  return {
    ok: fit.reasons.length === 0,
    model_id: manifest.model_id,
    backend: adapter ? "webgpu" : "wasm",
    variant: chosen.variant,
    reasons: fit.reasons,
    warnings,
    download_bytes: toCache,
    cached_bytes: cached,
    // The CPU kernels' module, whose size the manifest gives; it is not kept in the weight
    // cache, but revalidated through the browser's HTTP cache like the JSON files.
    kernel_bytes: adapter ? null : manifest.variants.wasm.wasm.bytes,
    memory: fit.memory,
    limits: fit.limits,
    storage,
    context_window: fit.context_window,
    fitting_context_window: fit.fitting_context_window,
  };
}
