import { DeviceLostError, FeatureUnsupportedError, WebGPUUnavailableError } from "./errors.js";

/**
 * Opens a GPU device fit for a model: required features checked, limits raised to the
 * adapter's, and loss reported through `onLost`.
 * @param {{model_id: string, required_features: string[]}} manifest
 * @param {(err: DeviceLostError) => void} [onLost]
 */
export async function openDevice(manifest, onLost) {
  const gpu = globalThis.navigator?.gpu;
  if (!gpu) throw new WebGPUUnavailableError("navigator.gpu is undefined");
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new WebGPUUnavailableError("no GPU adapter was found");
  for (const feature of manifest.required_features) {
    if (!adapter.features.has(feature)) throw new FeatureUnsupportedError(feature, manifest.model_id);
  }
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
    if (lost.reason !== "destroyed" && onLost) onLost(new DeviceLostError(lost.message || lost.reason));
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
