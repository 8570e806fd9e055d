// The manifest's contract, src/manifest.schema.json, compiled into validators by build.mjs.
import { MANIFEST_FORMAT, validateManifest, validateWasmKernels, validateWebGPUKernels } from "kiln:contract";

import { ModelLoadError, ShardIntegrityError } from "./errors.js";
import { fetchResource, resolveLocation } from "./platform.js";

const PARALLEL_FETCHES = 4;

// A dropped connection or a busy server is retried this many times, waiting 250 ms, 500 ms,
// 1 s... in between; other failures (404, a corrupt shard) are final at once. Every request
// goes past the browser's HTTP cache to the server ("no-cache": what the cache holds is
// revalidated, so an unchanged file still comes from it): a server or CDN that marks its
// errors cacheable would otherwise have the retries, and every later load, answered with the
// cached error without a request.
const RETRIES = 3;
const BACKOFF_MS = 250;
const RETRIED_STATUS = new Set([408, 429, 500, 502, 503, 504]);

class Retry extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `attempt()` until it succeeds, retrying it after a `Retry` or a network failure
 * (fetch's TypeError, also thrown by a body read cut short) with backoff.
 * @template T
 * @param {string} what  named in the error, e.g. "weight shard params_shard_0.bin"
 * @param {() => Promise<T>} attempt
 * @returns {Promise<T>}
 */
async function withRetries(what, attempt) {
  for (let tryNumber = 0; ; tryNumber++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof Retry || err instanceof TypeError)) throw err;
      if (tryNumber >= RETRIES)
        throw new ModelLoadError(`Could not download ${what} (${RETRIES + 1} requests): ${err.message}`);
      await sleep(BACKOFF_MS * 2 ** tryNumber);
    }
  }
}

/** A fetch that failed with a status, as an error: retried for a busy server, final otherwise. */
function checkStatus(response, url) {
  if (response.ok) return response;
  const message = `${url}: HTTP ${response.status}`;
  if (RETRIED_STATUS.has(response.status)) throw new Retry(message);
  throw new ModelLoadError(`Could not fetch ${message}`);
}

/** The parsed JSON file at `url`. */
function fetchJson(url) {
  return withRetries(String(url), async () => {
    const response = checkStatus(await fetchResource(url, { cache: "no-cache" }), url);
    try {
      return await response.json();
    } catch (err) {
      if (err instanceof SyntaxError) throw new ModelLoadError(`${url} is not valid JSON: ${err.message}`);
      throw err; // the body was cut short: retried
    }
  });
}

/**
 * Throws a ModelLoadError where `document` (the file at `url`) breaks the contract `validate`
 * checks, naming the first place and what was expected there.
 */
function checkContract(validate, document, url) {
  if (validate(document)) return;
  const [error] = validate.errors;
  const allowed = error.params?.allowedValues ? ` (${error.params.allowedValues.join(", ")})` : "";
  throw new ModelLoadError(
    `${url} does not keep to manifest format ${MANIFEST_FORMAT}: ${error.instancePath || "/"} ${error.message}${allowed}. ` +
      "Rebuild the model with the build-web that ships this runtime.",
  );
}

/**
 * Fetches manifest.json of the model folder at `baseUrl` (in Node also a filesystem path),
 * checked against its schema.
 */
export async function fetchManifest(baseUrl) {
  const base = await resolveLocation(baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`);
  const url = new URL("manifest.json", base);
  const manifest = await fetchJson(url);
  const format = manifest?.format;
  if (format !== MANIFEST_FORMAT) {
    throw new ModelLoadError(
      `${url} has format ${typeof format === "number" ? format : "(none)"}; this runtime reads format ${MANIFEST_FORMAT}. ` +
        "Rebuild the model with the build-web that ships this runtime.",
    );
  }
  checkContract(validateManifest, manifest, url);
  return { base, manifest };
}

/** Fetches tokenizer.json and tokenizer_config.json of a model folder. */
export async function fetchTokenizerFiles(base, manifest) {
  const [tokenizer, tokenizerConfig] = await Promise.all(
    [manifest.tokenizer, manifest.tokenizer_config].map((f) => fetchJson(new URL(f, base))),
  );
  return { tokenizer, tokenizerConfig };
}

/**
 * The kernel set `name` of a model folder: "software" or "gpu" (WGSL for WebGPU), or "wasm"
 * (kernels.json plus the WebAssembly module, compiled once its sha256 checks).
 */
export async function fetchVariant(base, manifest, name) {
  const variant = manifest.variants[name];
  if (!variant)
    throw new ModelLoadError(
      `This model has no "${name}" kernels (it has: ${Object.keys(manifest.variants).join(", ")}); ` +
        "rebuild it with this build-web",
    );
  const url = new URL(variant.kernels, base);
  const kernels = await fetchJson(url);
  checkContract(variant.wasm ? validateWasmKernels : validateWebGPUKernels, kernels, url);
  for (const [fn, plan] of Object.entries(variant.functions)) {
    const missing = plan.launches.find((launch) => !Object.hasOwn(kernels, launch.kernel));
    if (missing) throw new ModelLoadError(`${url} lacks the kernel ${missing.kernel} that ${fn} calls`);
  }
  if (!variant.wasm) return { name, functions: variant.functions, kernels };
  const { data } = await shardBytes(
    new URL(variant.wasm.file, base).href,
    variant.wasm,
    null,
    () => {},
    "kernel module",
  );
  let module;
  try {
    module = await WebAssembly.compile(data);
  } catch (err) {
    throw new ModelLoadError(`${variant.wasm.file} is not a WebAssembly module this browser runs: ${err.message}`);
  }
  return { name, functions: variant.functions, kernels, module, memory: variant.wasm.memory };
}

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
async function shardBytes(url, shard, cache, onBytes, kind = "weight shard") {
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
