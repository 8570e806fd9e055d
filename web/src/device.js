import { DeviceLostError, FeatureUnsupportedError, WebGPUUnavailableError } from "./errors.js";

/** The WebGPU adapter, or a WebGPUUnavailableError that says why there is none. */
export async function requestAdapter() {
  const gpu = globalThis.navigator?.gpu;
  if (!gpu) throw new WebGPUUnavailableError("navigator.gpu is undefined");
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new WebGPUUnavailableError("no GPU adapter was found");
  return adapter;
}

/** The first of a model's builds (in order of preference) whose features the adapter has. */
export function pickBuild(adapter, manifests) {
  for (const manifest of manifests) {
    if (manifest.required_features.every((f) => adapter.features.has(f))) return manifest;
  }
  const last = manifests[manifests.length - 1];
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
      isFallbackAdapter: info.isFallbackAdapter ?? adapter.isFallbackAdapter,
    },
  };
}
