// A model's weight shards (and the CPU kernels' module, fetched alike): downloaded, resumed
// where a connection dropped, checked against their length and sha256, kept in the browser's
// Cache API store after the first download, and handed tensor by tensor to the backend.
import { ModelLoadError, ShardIntegrityError } from "../errors.js";
import { fetchResource } from "../platform.js";
import { checkStatus, withRetries } from "./download.js";

const PARALLEL_FETCHES = 4;

/**
 * Reads a response body into `data` from `offset` on; returns the new offset. A body longer
 * than `data` is corrupt; one shorter is for the caller to judge.
 */
async function readBody(response, data, offset, onBytes, file, kind) {
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return offset;
    if (offset + value.length > data.length) {
      await reader.cancel();
      throw new ShardIntegrityError(file, `more than the ${data.length} bytes the manifest says`, kind);
    }
    data.set(value, offset);
    offset += value.length;
    onBytes(value.length);
  }
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
 * A shard's bytes from the network, checked against its length and sha256. A connection
 * dropped part-way is retried and resumed with a range request (If-Range keeps the resumed
 * part to the same version of the file; a server that ignores Range sends it all again).
 * Bytes that fail the checks are fetched once more past the browser's HTTP cache: shards are
 * served as immutable, so a bad response once cached would otherwise fail every later load.
 */
async function downloadShard(url, shard, onBytes, kind) {
  let counted = 0;
  const count = (n) => {
    counted += n;
    onBytes(n);
  };
  const download = async (cacheMode) => {
    const data = new Uint8Array(shard.bytes);
    let offset = 0;
    let etag = null;
    await withRetries(`${kind} ${shard.file}`, async () => {
      const resume = offset > 0 && etag !== null;
      const response = checkStatus(
        await fetchResource(url, {
          cache: resume ? "no-store" : cacheMode,
          headers: resume ? { Range: `bytes=${offset}-`, "If-Range": etag } : {},
        }),
        url,
      );
      if (response.status !== 206) {
        count(-offset); // the whole file again
        offset = 0;
      } else if (!response.headers.get("Content-Range")?.startsWith(`bytes ${offset}-`)) {
        throw new ModelLoadError(`${url}: the server answered a range request with another range`);
      }
      etag = response.headers.get("ETag");
      offset = await readBody(response, data, offset, count, shard.file, kind);
    });
    if (offset !== shard.bytes)
      throw new ShardIntegrityError(shard.file, `${offset} bytes, the manifest says ${shard.bytes}`, kind);
    const digest = await sha256(data);
    if (digest !== shard.sha256)
      throw new ShardIntegrityError(shard.file, `sha256 ${digest}, the manifest says ${shard.sha256}`, kind);
    return data;
  };
  try {
    return await download("no-cache");
  } catch (err) {
    if (!(err instanceof ShardIntegrityError)) throw err;
    count(-counted);
    return await download("reload");
  }
}

/**
 * A shard's bytes, checked against its sha256: from the cache when it holds a good copy
 * (a corrupt or truncated one is dropped and fetched again), else from the network. Only
 * checked bytes are ever put in the cache.
 */
export async function shardBytes(url, shard, cache, onBytes, kind = "weight shard") {
  if (cache) {
    const hit = await cache.match(url);
    if (hit) {
      let counted = 0;
      const data = new Uint8Array(shard.bytes);
      const length = await readBody(
        hit,
        data,
        0,
        (n) => {
          counted += n;
          onBytes(n);
        },
        shard.file,
        kind,
      ).catch(() => -1);
      if (length === shard.bytes && (await sha256(data)) === shard.sha256) return { data, cached: true };
      onBytes(-counted);
      await cache.delete(url);
    }
  }
  const data = await downloadShard(url, shard, onBytes, kind);
  // Without room in the cache the model still loads; the next load downloads again.
  await cache
    ?.put(url, new Response(data, { headers: { "Content-Type": "application/octet-stream" } }))
    .catch(() => {});
  return { data, cached: false };
}

/**
 * Loads every shard (a few at a time), checks its sha256 and hands each tensor's bytes to
 * `upload(tensor, bytes)` (the backend's copy into GPU buffers or WebAssembly memory).
 * Progress reports carry bytes, speed and the estimated time left.
 * @param {(tensor: {name: string, bytes: number}, bytes: Uint8Array) => void} upload
 * @param {{useCache?: boolean}} [options]  `useCache: false` neither reads nor fills the weight cache
 * @returns {Promise<{fromCache: number, fromNetwork: number}>}
 */
export async function loadWeights(upload, base, manifest, onProgress, { useCache = true } = {}) {
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
      for (const tensor of byShard[index]) upload(tensor, data.subarray(tensor.offset, tensor.offset + tensor.bytes));
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_FETCHES, manifest.shards.length) }, worker));
  return counts;
}
