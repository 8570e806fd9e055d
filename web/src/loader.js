import { ModelLoadError, ShardIntegrityError } from "./errors.js";

const PARALLEL_FETCHES = 4;

async function fetchOk(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new ModelLoadError(`Could not fetch ${url}: ${err.message}`);
  }
  if (!response.ok) throw new ModelLoadError(`Could not fetch ${url}: HTTP ${response.status}`);
  return response;
}

/** Fetches manifest.json of the model folder at `baseUrl`. */
export async function fetchManifest(baseUrl) {
  const base = new URL(baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`, globalThis.location?.href);
  let manifest;
  try {
    manifest = await (await fetchOk(new URL("manifest.json", base))).json();
  } catch (err) {
    if (err instanceof ModelLoadError) throw err;
    throw new ModelLoadError(`${base}manifest.json is not valid JSON: ${err.message}`);
  }
  if (manifest.format !== 1) throw new ModelLoadError(`Unsupported manifest format ${manifest.format}`);
  return { base, manifest };
}

/** Fetches tokenizer.json and tokenizer_config.json of a model folder. */
export async function fetchTokenizerFiles(base, manifest) {
  const [tokenizer, tokenizerConfig] = await Promise.all(
    [manifest.tokenizer, manifest.tokenizer_config].map(async (f) => (await fetchOk(new URL(f, base))).json()),
  );
  return { tokenizer, tokenizerConfig };
}

/**
 * The compiled variant for this adapter: "software" schedules where shaders run on the CPU
 * (the fallback adapter), "gpu" schedules elsewhere; `requested` overrides the choice.
 */
export async function fetchVariant(base, manifest, adapterInfo, requested) {
  const name = requested ?? (adapterInfo.isFallbackAdapter ? "software" : "gpu");
  const variant = manifest.variants[name];
  if (!variant)
    throw new ModelLoadError(
      `This model has no "${name}" kernels (it has: ${Object.keys(manifest.variants).join(", ")})`,
    );
  const kernels = await (await fetchOk(new URL(variant.kernels, base))).json();
  return { name, functions: variant.functions, kernels };
}

async function readWithProgress(response, expected, onBytes) {
  const reader = response.body.getReader();
  const data = new Uint8Array(expected);
  let offset = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (offset + value.length > expected) throw new ModelLoadError(`shard is larger than the manifest says`);
    data.set(value, offset);
    offset += value.length;
    onBytes(value.length);
  }
  if (offset !== expected) throw new ModelLoadError(`shard has ${offset} bytes, expected ${expected}`);
  return data;
}

async function sha256(data) {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The Cache API store weight shards are kept in after their first download. */
export const WEIGHT_CACHE = "kiln-weights-v1";

async function openWeightCache() {
  try {
    return globalThis.caches ? await caches.open(WEIGHT_CACHE) : null;
  } catch {
    return null; // e.g. an insecure context, or storage turned off: load from the network
  }
}

/**
 * Deletes cached weight shards: those of the model folder at `baseUrl`, or all of them.
 * @param {string} [baseUrl]
 */
export async function deleteWeightCache(baseUrl = undefined) {
  if (!globalThis.caches) return;
  if (baseUrl === undefined) {
    await caches.delete(WEIGHT_CACHE);
    return;
  }
  const base = new URL(baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`, globalThis.location?.href).href;
  const cache = await caches.open(WEIGHT_CACHE);
  for (const request of await cache.keys()) if (request.url.startsWith(base)) await cache.delete(request);
}

/**
 * A shard's bytes, checked against its sha256: from the cache when it holds a good copy
 * (a corrupt or truncated one is dropped and fetched again), else from the network.
 */
async function shardBytes(url, shard, cache, onBytes) {
  if (cache) {
    const hit = await cache.match(url);
    if (hit) {
      let counted = 0;
      const data = await readWithProgress(hit, shard.bytes, (n) => {
        counted += n;
        onBytes(n);
      }).catch(() => null);
      if (data && (await sha256(data)) === shard.sha256) return { data, cached: true };
      onBytes(-counted);
      await cache.delete(url);
    }
  }
  const data = await readWithProgress(await fetchOk(url), shard.bytes, onBytes);
  const digest = await sha256(data);
  if (digest !== shard.sha256) throw new ShardIntegrityError(shard.file, shard.sha256, digest);
  // Without room in the cache the model still loads; the next load downloads again.
  await cache
    ?.put(url, new Response(data, { headers: { "Content-Type": "application/octet-stream" } }))
    .catch(() => {});
  return { data, cached: false };
}

/**
 * Loads every shard (a few at a time), checks its sha256 and uploads its tensors. Progress
 * reports carry bytes, speed and the estimated time left.
 * @param {{useCache?: boolean}} [options]  `useCache: false` neither reads nor fills the weight cache
 * @returns {Promise<{weights: Map<string, GPUBuffer>, fromCache: number, fromNetwork: number}>}
 */
export async function loadWeights(device, base, manifest, onProgress, { useCache = true } = {}) {
  const total = manifest.shards.reduce((a, s) => a + s.bytes, 0);
  const cache = useCache ? await openWeightCache() : null;
  let loaded = 0;
  const started = performance.now();
  const report = (n) => {
    loaded += n;
    const seconds = (performance.now() - started) / 1000;
    const speed = seconds > 0 ? loaded / seconds : 0;
    onProgress?.({
      loaded,
      total,
      progress: loaded / total,
      timeElapsed: seconds,
      bytesPerSecond: speed,
      secondsLeft: speed > 0 ? (total - loaded) / speed : null,
      text: `Loading weights: ${(loaded / 1e6).toFixed(1)} / ${(total / 1e6).toFixed(1)} MB`,
    });
  };
  const weights = new Map();
  const counts = { fromCache: 0, fromNetwork: 0 };
  const byShard = manifest.shards.map(() => []);
  for (const tensor of manifest.params) byShard[tensor.shard].push(tensor);
  let next = 0;
  const worker = async () => {
    while (next < manifest.shards.length) {
      const index = next++;
      const shard = manifest.shards[index];
      const { data, cached } = await shardBytes(new URL(shard.file, base).href, shard, cache, report);
      counts[cached ? "fromCache" : "fromNetwork"]++;
      for (const tensor of byShard[index]) {
        const size = Math.ceil(tensor.bytes / 4) * 4;
        const buffer = device.createBuffer({
          size: Math.max(size, 16),
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
          label: tensor.name,
        });
        const bytes = new Uint8Array(size);
        bytes.set(data.subarray(tensor.offset, tensor.offset + tensor.bytes));
        device.queue.writeBuffer(buffer, 0, bytes);
        weights.set(tensor.name, buffer);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_FETCHES, manifest.shards.length) }, worker));
  return { weights, ...counts };
}
