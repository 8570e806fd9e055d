// Which backend runs a model: WebGPU on a real GPU, else the CPU's WebAssembly where a build
// has kernels for it and this browser (or Node.js) the features they use; and how many threads
// the CPU backend runs.
import { bulkMemory, relaxedSimd, simd } from "wasm-feature-detect";
import { InvalidRequestError, ModelLoadError, WebGPUUnavailableError } from "../errors.js";
import { enableWasmFeatures, IN_NODE, NODE_WASM_ADVICE, parallelism } from "../platform.js";
import { isFallbackAdapter, requestAdapter } from "./device.js";

const BACKENDS = ["auto", "webgpu", "wasm"];

/**
 * Where a model runs: a WebGPU adapter, or null for the CPU backend (WebAssembly). "auto"
 * takes WebGPU on a real GPU, and the CPU backend where the browser has no adapter or only a
 * fallback one (a CPU emulating a GPU, such as SwiftShader, on which the WebAssembly kernels
 * are faster) if a build has WebAssembly kernels; asking for a WebGPU `variant` means WebGPU.
 */
export async function chooseAdapter(backend, variant, manifests) {
  if (!BACKENDS.includes(backend)) throw new InvalidRequestError("backend", `must be one of ${BACKENDS.join(", ")}`);
  if (backend === "wasm") {
    const missing = await missingWasmFeatures(manifests.find((m) => "wasm" in m.variants));
    if (missing?.length) {
      throw new ModelLoadError(
        IN_NODE
          ? `The CPU backend's kernels use WebAssembly ${missing.join(", ")}, which this Node.js lacks. ${NODE_WASM_ADVICE}.`
          : `The CPU backend's kernels use WebAssembly ${missing.join(", ")}, which this browser lacks`,
      );
    }
    return null;
  }
  const auto =
    backend === "auto" &&
    variant === undefined &&
    (await Promise.all(manifests.map(missingWasmFeatures))).some((missing) => missing?.length === 0);
  let adapter;
  try {
    adapter = await requestAdapter();
  } catch (err) {
    if (auto && err instanceof WebGPUUnavailableError) return null;
    throw err;
  }
  if (auto && isFallbackAdapter(adapter)) return null;
  return adapter;
}

const WASM_FEATURES = { simd128: simd, "relaxed-simd": relaxedSimd, "bulk-memory": bulkMemory };

/**
 * The WebAssembly features a build's CPU kernels use (its manifest lists them) that this
 * browser lacks, or null where the build has none (or the browser has no WebAssembly: the
 * loader then says so). Shared memory and atomics are not probed: the module's memory is
 * created before it is compiled, and that fails with its own error.
 */
async function missingWasmFeatures(manifest) {
  const kernels = manifest?.variants.wasm?.wasm;
  if (!kernels || !globalThis.WebAssembly) return null;
  await enableWasmFeatures();
  const features = kernels.features ?? [];
  const present = await Promise.all(features.map((f) => WASM_FEATURES[f]?.() ?? true));
  return features.filter((_, i) => !present[i]);
}

/**
 * Threads for the CPU backend: one per core (at most `cap`) where worker threads may share
 * memory (a cross-origin isolated page or worker that can start workers, or Node's
 * worker_threads), else one.
 */
export async function cpuThreads(cap = 16) {
  return Math.max(1, Math.min(await parallelism(), 16, cap));
}
