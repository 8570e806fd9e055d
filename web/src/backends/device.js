// The GPU a model runs on: the WebGPU adapter (in Node.js, Dawn's), the build of the model
// whose features it has, and the device opened for it, within its limits.
import { DeviceLostError, FeatureUnsupportedError, ModelLoadError, WebGPUUnavailableError } from "../errors.js";
import { IN_NODE } from "../platform.js";

/**
 * Node's WebGPU, from the optional `webgpu` package (Dawn) where it is installed: its GPU
 * object, with the WebGPU classes and constants the executor uses made global as in a browser.
 */
async function nodeGPU() {
  const name = "webgpu"; // not a literal: the bundle leaves an optional package to the host
  let dawn;
  try {
    dawn = await import(name);
  } catch {
    throw new WebGPUUnavailableError('the optional "webgpu" package (Dawn) is not installed');
  }
  Object.assign(globalThis, dawn.globals);
  return dawn.create([]);
}

/** The WebGPU adapter, or a WebGPUUnavailableError that says why there is none. */
export async function requestAdapter() {
  const gpu = globalThis.navigator?.gpu ?? (IN_NODE ? await nodeGPU() : undefined);
  if (!gpu) throw new WebGPUUnavailableError("navigator.gpu is undefined");
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new WebGPUUnavailableError("no GPU adapter was found");
  return adapter;
}

/** Whether `adapter` is a fallback one: a CPU emulating a GPU, such as SwiftShader. */
export function isFallbackAdapter(adapter) {
  return Boolean(adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter);
}

/**
 * The first of a model's builds (in order of preference) that runs here: on WebGPU, one whose
 * features the adapter has; on the CPU backend (no adapter), one with "wasm" kernels, those
 * that need no GPU feature first (f16 activations are converted on every use on a CPU).
 * @param {GPUAdapter | null} adapter  null for the CPU backend
 */
export function pickBuild(adapter, manifests) {
  const last = manifests[manifests.length - 1];
  if (!adapter) {
    const cpu = manifests.filter((m) => "wasm" in m.variants);
    const chosen = cpu.find((m) => m.required_features.length === 0) ?? cpu[0];
    if (chosen) return chosen;
    throw new ModelLoadError(
      `${last.model_id} has no WebAssembly kernels for the CPU backend: rebuild it with this build-web`,
    );
  }
  const chosen = manifests.find((m) => m.required_features.every((f) => adapter.features.has(f)));
  if (chosen) return chosen;
  throw new FeatureUnsupportedError(
    last.required_features.find((f) => !adapter.features.has(f)),
    last.model_id,
  );
}

/**
 * Opens a GPU device for a model `pickBuild` chose: its features enabled, limits raised to
 * the adapter's, and loss reported through `onLost`.
 * @param {GPUAdapter} adapter
 * @param {{model_id: string, required_features: string[]}} manifest
 * @param {(err: DeviceLostError) => void} [onLost]
 */
export async function openDevice(adapter, manifest, onLost) {
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: manifest.required_features,
    requiredLimits: {
      maxBufferSize: limits.maxBufferSize,
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
    },
  });
  const info = adapter.info ?? {};
  device.lost.then((lost) => {
    onLost?.(new DeviceLostError(lost.message || lost.reason));
  });
  return {
    device,
    adapterInfo: {
      vendor: info.vendor,
      architecture: info.architecture,
      isFallbackAdapter: isFallbackAdapter(adapter),
    },
  };
}
