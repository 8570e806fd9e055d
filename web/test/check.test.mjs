// assessFit (src/backends/check.js) on manifests made here: what keeps a build from running on
// a device's limits, and the largest context window that would, with no browser and no GPU.
import "./contract_stub.mjs";
import assert from "node:assert/strict";
import { test } from "node:test";

const { assessFit, kernelSetFor } = await import("../src/backends/check.js");

/** A chat build of `context` tokens: two KV tensors of 64 bytes a token, one weight, one plan. */
function manifest({ context = 1000, weight = 100, storage = 50 } = {}) {
  const plan = { inputs: [], storages: [storage], launches: [], outputs: [] };
  return {
    model_id: "m",
    context_window: context,
    required_features: [],
    kv_cache: [0, 1].map(() => ({ shape: [context, 4, 4], dtype: "float32" })),
    params: [{ name: "w", bytes: weight }],
    variants: {
      gpu: { functions: { decode: plan } },
      wasm: { functions: { decode: plan }, wasm: { memory: { initial: 1, maximum: 1 } } },
    },
  };
}
const gpu = (limit, storageBuffers = 8) => ({
  limits: {
    maxBufferSize: limit,
    maxStorageBufferBindingSize: 2 * limit,
    maxStorageBuffersPerShaderStage: storageBuffers,
  },
});

test("a build within the limits fits at its own context window", () => {
  const fit = assessFit(manifest(), gpu(64_000), "gpu");
  assert.deepEqual(fit.reasons, []);
  assert.deepEqual(fit.memory, { weights: 100, kv_cache: 128_000, activations: 50, total: 128_150 });
  assert.equal(fit.limits.largest_buffer, 64_000);
  assert.equal(fit.fitting_context_window, 1000);
});

test("a KV-cache tensor over the smaller limit gives the largest context window that fits", () => {
  const fit = assessFit(manifest(), gpu(32_000), "gpu");
  assert.equal(fit.fitting_context_window, 500);
  assert.match(fit.reasons[0], /GPU buffer of 64000 bytes, and this device allows 32000/);
  assert.match(fit.reasons[1], /--context-window 500 or less/);
});

test("a weight over the limit leaves no context window that fits", () => {
  const fit = assessFit(manifest({ weight: 40_000 }), gpu(32_000), "gpu");
  assert.equal(fit.fitting_context_window, null);
  assert.match(fit.reasons.at(-1), /no context window fits/);
});

test("the CPU backend's memory bounds weights, KV cache and activations together", () => {
  const fit = assessFit(manifest(), null, "wasm"); // one 64 KiB page
  assert.equal(fit.limits.wasm_memory_bytes, 65536);
  assert.equal(fit.fitting_context_window, Math.floor((65536 - 150) / 128));
});

test("another context window than the build's is a rebuild", () => {
  const larger = assessFit(manifest(), gpu(1e9), "gpu", 2000);
  assert.equal(larger.memory.kv_cache, 256_000);
  assert.match(larger.reasons[0], /built for 1000 tokens.*--context-window 2000/);
  const smaller = assessFit(manifest(), gpu(1e9), "gpu", 10);
  assert.match(smaller.reasons[0], /rebuild it with --context-window 10/);
  assert.equal(assessFit(manifest(), gpu(1e9), "software").fitting_context_window, null);
});

test("a kernel set whose kernels bind more storage buffers than the adapter allows is not picked", () => {
  const build = manifest();
  build.variants.software = build.variants.gpu;
  assert.equal(kernelSetFor(gpu(1e9), build), "gpu"); // a build that does not say: 8
  build.variants.gpu = { ...build.variants.gpu, storage_buffers: 10 };
  assert.equal(kernelSetFor(gpu(1e9, 10), build), "gpu");
  assert.equal(kernelSetFor(gpu(1e9, 8), build), "software");
  assert.equal(kernelSetFor({ ...gpu(1e9, 10), info: { isFallbackAdapter: true } }, build), "software");
  const fit = assessFit(build, gpu(1e9, 8), "gpu");
  assert.match(fit.reasons[0], /"gpu" kernels bind 10 storage buffers, and this device allows 8/);
  assert.deepEqual(assessFit(build, gpu(1e9, 8), "software").reasons, []);
});
