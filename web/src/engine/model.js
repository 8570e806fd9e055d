// One loaded model (LoadedModel): its tokenizer, its executor on the backend it runs on, and
// its KV cache, with the prefill, decode and embedding passes the engine runs on it.
import { assessFit, chooseBuild } from "../backends/check.js";
import { cpuThreads } from "../backends/choose.js";
import { openDevice } from "../backends/device.js";
import { Executor, uploadWeight } from "../backends/executor.js";
import { fetchManifest, fetchTokenizerFiles, fetchVariant } from "../backends/loader.js";
import { loadWeights } from "../backends/shards.js";
import { snapshotLayout } from "../backends/plans.js";
import { WasmExecutor } from "../backends/wasm_executor.js";
import { ModelLoadError, ModelWontFitError } from "../errors.js";
import { ChatTokenizer } from "../text/tokenizer.js";
import { Vocabulary } from "../text/vocab.js";
import { ABORTED } from "../control.js";
import { RUNTIME_HASH } from "kiln:runtime";
import { PrefixCache } from "./prefix_cache.js";
import { PrefixStore, hashText } from "./prefix_store.js";
import { SPECULATION_DEFAULTS } from "./prompt_lookup.js";

// A WebGPU prefill chunk takes about GPU_CHUNK_MS (a request after an abort waits for the
// chunk on the GPU); the first of a prefill, whose speed is not known yet, FIRST_GPU_CHUNK
// tokens; none more than the build's prefill_chunk, nor fewer than MIN_GPU_CHUNK: a chunk's
// time is mostly the reading of the weights, once a chunk, so on a slow adapter (SwiftShader)
// chunks of a token or two would prefill at the pace of decoding.
const GPU_CHUNK_MS = 200;
const FIRST_GPU_CHUNK = 16;
const MIN_GPU_CHUNK = 8;

/** The prefix cache's defaults (Engine.reload's options of the same names). */
export const PREFIX_CACHE_DEFAULTS = {
  prefixCacheBytes: 128 * 2 ** 20,
  prefixCachePersistTokens: 256,
  prefixCacheStorageBytes: 512 * 2 ** 20,
};

/** How many of the first `limit` tokens of `a` and `b` agree. */
function agreement(a, b, limit = Math.min(a.length, b.length)) {
  let n = 0;
  while (n < limit && n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** @typedef {import("../control.js").Control} Control */

/**
 * One model on its own GPU device: its tokenizer, its kernels and weights, and its KV cache
 * (the tokens whose keys and values the cache holds).
 */
export class LoadedModel {
  #vocabulary = null;

  /**
   * @param {string} id  the name requests use in `model`
   * @param {string[]} urls  builds of one model, in order of preference
   * @param {{initProgressCallback?: Function, variant?: string, backend?: "auto" | "webgpu" | "wasm",
   *          threads?: number, useCache?: boolean, onDeviceLost: Function, chatTemplate?: string,
   *          prefixCacheBytes?: number, prefixCachePersistTokens?: number, prefixCacheStorageBytes?: number,
   *          speculation?: boolean | object, devicePicks?: boolean}} options
   *   `chatTemplate`: a Jinja chat template used instead of the model's own; the prefix cache's
   *   options, `speculation` and `devicePicks` as Engine.reload takes them
   */
  static async load(
    id,
    urls,
    {
      initProgressCallback,
      variant,
      backend = "auto",
      threads,
      useCache,
      onDeviceLost,
      chatTemplate,
      speculation,
      devicePicks = true,
      ...prefix
    },
  ) {
    const started = performance.now();
    const candidates = await Promise.all(urls.map(fetchManifest));
    const chosen = await chooseBuild(candidates, { backend, variant });
    const { adapter, base, manifest } = chosen;
    // Nothing but the manifests is fetched before the check (backends/check.js).
    const fit = assessFit(manifest, adapter, chosen.variant);
    if (fit.reasons.length > 0) throw new ModelWontFitError({ model_id: manifest.model_id, ...fit });
    const { tokenizer, tokenizerConfig } = await fetchTokenizerFiles(base, manifest);
    const model = new LoadedModel(id ?? manifest.model_id, urls, manifest);
    model.tokenizerJson = tokenizer;
    const config = chatTemplate === undefined ? tokenizerConfig : { ...tokenizerConfig, chat_template: chatTemplate };
    model.tokenizer = new ChatTokenizer(tokenizer, config);
    model.backend = adapter ? "webgpu" : "wasm";
    // Speculation is on by default where it was measured to pay (README, "Benchmark"): on the
    // CPU backend, whose verify step reads the weights once for all its tokens. On WebGPU it
    // would give up the greedy steps queued on the device, for a verify step of prefill's kernels.
    const speculate = speculation ?? model.backend === "wasm";
    model.speculation =
      speculate === false ? null : { ...SPECULATION_DEFAULTS, ...(speculate === true ? {} : speculate) };
    model.devicePicks = devicePicks;
    try {
      const kernels = adapter
        ? await model.#loadWebGPU(adapter, base, chosen.variant, { initProgressCallback, useCache, onDeviceLost })
        : await model.#loadWasm(base, { initProgressCallback, threads, useCache });
      if (!model.isEncoder) await model.#openPrefixCache({ ...PREFIX_CACHE_DEFAULTS, ...prefix }, kernels);
    } catch (err) {
      model.destroy();
      throw err;
    }
    model.loadSeconds = (performance.now() - started) / 1000;
    return model;
  }

  async #loadWebGPU(adapter, base, name, { initProgressCallback, useCache, onDeviceLost }) {
    const manifest = this.manifest;
    const { device, adapterInfo } = await openDevice(adapter, manifest, (err) => {
      if (this.device === device) onDeviceLost(this, err); // not an unload() of ours
    });
    this.device = device;
    this.adapterInfo = adapterInfo;
    const kernels = await fetchVariant(base, manifest, name);
    this.variant = kernels.name;
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    const weights = new Map();
    const upload = (tensor, bytes) => weights.set(tensor.name, uploadWeight(device, tensor, bytes));
    const { fromCache, fromNetwork } = await loadWeights(upload, base, manifest, initProgressCallback, { useCache });
    this.shardsFrom = { cache: fromCache, network: fromNetwork };
    this.executor = new Executor(device, manifest, kernels, weights);
    for (const error of [await device.popErrorScope(), await device.popErrorScope()]) {
      if (error) throw new ModelLoadError(`The GPU rejected the model's buffers or kernels: ${error.message}`);
    }
    return kernels;
  }

  async #loadWasm(base, { initProgressCallback, threads, useCache }) {
    const kernels = await fetchVariant(base, this.manifest, "wasm");
    this.variant = kernels.name;
    const executor = await WasmExecutor.create(kernels, this.manifest, { threads: await cpuThreads(threads) });
    this.executor = executor;
    const upload = (tensor, bytes) => executor.upload(tensor, bytes);
    const { fromCache, fromNetwork } = await loadWeights(upload, base, this.manifest, initProgressCallback, {
      useCache,
    });
    this.shardsFrom = { cache: fromCache, network: fromNetwork };
    executor.prepare();
    return kernels;
  }

  /**
   * The prefix cache: KV snapshots of earlier prompts within `prefixCacheBytes` of memory (GPU
   * buffers, or JS memory on the CPU backend), and those of `prefixCachePersistTokens` tokens
   * or more in the browser's storage within `prefixCacheStorageBytes`, under the name of this
   * exact build: the manifest (weights' and kernel module's hashes, plans), the WGSL on WebGPU,
   * the backend and kernel set, and the runtime's sources.
   */
  async #openPrefixCache({ prefixCacheBytes, prefixCachePersistTokens, prefixCacheStorageBytes }, kernels) {
    if (prefixCacheBytes <= 0) return;
    this.prefixes = new PrefixCache(prefixCacheBytes, (snapshot) => this.executor?.freeSnapshot(snapshot));
    this.persistTokens = prefixCachePersistTokens;
    if (prefixCachePersistTokens <= 0 || prefixCacheStorageBytes <= 0) return;
    const wgsl = this.backend === "webgpu" ? kernels.kernels : null;
    const build = await hashText(JSON.stringify([RUNTIME_HASH, this.backend, this.variant, this.manifest, wgsl]));
    this.store = await PrefixStore.open(this.manifest.model_id, build, prefixCacheStorageBytes);
  }

  constructor(id, urls, manifest) {
    this.id = id;
    this.urls = urls;
    this.manifest = manifest;
    this.cachedTokens = [];
    this.prefixes = null; // the prefix cache's snapshots in memory (null: off)
    this.store = null; // and in the browser's storage (null: not kept)
    this.persistTokens = 0;
    this.persisting = 0; // prompts to store, from the request's end to the write's
    this.lastStats = null;
    this.grammar = null; // built on the first structured-output request
    this.lostError = null; // the DeviceLostError, once the model's device is lost
    this.speculation = null; // prompt-lookup speculation's options (prompt_lookup.js); null: off
    this.devicePicks = true; // false: every step's logits are read back and its token picked in JS
  }

  /** The tokenizer's vocabulary by id (for structured output and logprobs), built on first use. */
  get vocabulary() {
    this.#vocabulary ??= new Vocabulary(this.tokenizerJson);
    return this.#vocabulary;
  }

  get contextWindow() {
    return this.manifest.context_window;
  }

  /** This model, unless its device was lost or it was unloaded: then the error that says so. */
  usable() {
    if (this.lostError) throw this.lostError;
    if (!this.executor) throw new ModelLoadError("The model was unloaded: call reload(model) first");
    return this;
  }

  /** Whether the greedy token can be picked where the logits are, reading back only its id. */
  get hasArgmax() {
    return this.devicePicks && Boolean(this.executor?.picks?.hasArgmax);
  }

  /** Whether the build can check a speculative draft in one step (its verify function). */
  get hasVerify() {
    return Boolean(this.executor?.functions?.verify);
  }

  /** Whether a sampled token can be drawn where the logits are, reading back only its id. */
  get hasSample() {
    return this.devicePicks && Boolean(this.executor?.picks?.hasSample);
  }

  /**
   * Whether a token picked where the logits are comes with its log probability and the most
   * likely tokens' (a request that asks for logprobs then reads back 168 bytes a token).
   */
  get hasLogprobs() {
    return Boolean(this.executor?.picks?.hasLogprobs);
  }

  /**
   * The most edits (a request's penalties and biases, one per token touched) the device applies
   * before it picks, with a grammar's mask (0: the build cannot: such requests read the logits).
   */
  get maxEdits() {
    return this.executor?.picks?.maxEdits ?? 0;
  }

  /** Whether a verify step can pick each row's greedy token on the device (argmax_rows). */
  get hasVerifyArgmax() {
    return this.devicePicks && Boolean(this.executor?.argmaxRows);
  }

  /** The most draft tokens one verify step takes (the build's bound on its tokens, less one). */
  get maxDraft() {
    return (this.manifest.bounds?.v ?? 1) - 1;
  }

  /**
   * Whether steps queue on the device: a step that picks its token there can then be submitted
   * before the token of the step before is read (WebGPU). The CPU backend runs one call at a
   * time, in the page's own time.
   */
  get queuesSteps() {
    return this.backend === "webgpu";
  }

  /**
   * Runs `tokens` through the model, reusing the cached prefix; returns the last logits and the
   * number of tokens run, or with `pick` (and `edit`, `logprobs`: the executors' `run`) the
   * token picked after them as `token` instead of the logits. A `control` aborted ends it early with `logits: null` and
   * `token: null`, the cache then holding the chunks that ran whole; the executors see it within
   * a chunk (see their `run`).
   * On the CPU that is between kernels, so chunks keep the build's size. On WebGPU a chunk
   * once submitted finishes on the GPU after the request has ended, so each is sized from the
   * speed of the one before to take about GPU_CHUNK_MS, and a request after an abort waits no
   * longer (a fast GPU takes the build's largest chunks).
   * After each chunk, `onProgress` gets {progress, prefilled, total}: the tokens prefilled so
   * far of the `total` not already in the cache, and their share.
   * The prompt's first tokens come from the KV cache as the last request left it or, where a
   * snapshot of the prefix cache agrees with more of them, from that snapshot (`reused`: how
   * many; at least the last token is run, for its logits).
   * @param {number[]} tokens
   * @param {Control} [control]
   * @param {(report: {progress: number, prefilled: number, total: number}) => void} [onProgress]
   * @param {{pick?: string | Float32Array | null, edit?: object | null, logprobs?: boolean}} [options]
   * @returns {Promise<{logits: Float32Array | null, token: number | object | null, prefilled: number, reused: number}>}
   */
  async prefill(
    tokens,
    control = undefined,
    onProgress = undefined,
    { pick = null, edit = null, logprobs = false } = {},
  ) {
    const start = await this.#reuse(tokens);
    const largest = this.manifest.prefill_chunk;
    const timed = this.backend !== "wasm";
    let chunk = timed ? Math.min(FIRST_GPU_CHUNK, largest) : largest;
    this.cachedTokens = tokens.slice(0, start);
    let out = null;
    for (let i = start; i < tokens.length; ) {
      if (control?.aborted) return { logits: null, token: null, prefilled: i - start, reused: start };
      const ids = tokens.slice(i, Math.min(tokens.length, i + chunk));
      const started = performance.now();
      // Only the last chunk's result is used; with pick the others too read back 4 bytes.
      out = await this.executor.run("prefill", ids, i + ids.length, control, { pick, edit, logprobs });
      if (out === ABORTED) return { logits: null, token: null, prefilled: i - start, reused: start };
      this.cachedTokens.push(...ids);
      i += ids.length;
      if (timed) {
        const perToken = Math.max(performance.now() - started, 1) / ids.length;
        chunk = Math.min(largest, Math.max(MIN_GPU_CHUNK, Math.floor(GPU_CHUNK_MS / perToken)));
      }
      const total = tokens.length - start;
      onProgress?.({ progress: (i - start) / total, prefilled: i - start, total });
    }
    const prefilled = tokens.length - start;
    return pick !== null
      ? { logits: null, token: out, prefilled, reused: start }
      : { logits: out, token: null, prefilled, reused: start };
  }

  /**
   * Makes the KV cache hold the longest prefix of `tokens` (but the last token) that the cache
   * or a snapshot has; returns its length. The rows the cache holds beyond what `tokens` shares
   * with it are kept as a snapshot first, since they are about to be written over.
   * @param {number[]} tokens
   */
  async #reuse(tokens) {
    const limit = tokens.length - 1;
    const live = agreement(this.cachedTokens, tokens, limit);
    if (!this.prefixes) return live;
    if (this.cachedTokens.length > live) await this.#keep(this.cachedTokens);
    let { depth, entry } = this.prefixes.match(tokens, limit);
    let snapshot = entry?.value ?? null;
    let kept = true;
    const stored = this.store?.match(tokens, limit);
    if (stored?.entry && stored.depth > Math.max(depth, live)) {
      const loaded = await this.#loadStored(stored.entry);
      if (loaded) (({ snapshot, kept } = loaded), (depth = stored.depth));
    }
    if (!snapshot || depth <= live) return live;
    await this.executor.restore(snapshot, live, depth);
    if (!kept) this.executor.freeSnapshot(snapshot);
    return depth;
  }

  /** Keeps the KV cache's rows of `tokens` as a snapshot, unless one holds them already. */
  async #keep(tokens) {
    if (this.prefixes.depth(tokens) === tokens.length) return;
    const bytes = snapshotLayout(this.manifest, tokens.length)?.bytes ?? Infinity;
    if (bytes > this.prefixes.budget) return; // the cache would refuse it
    const snapshot = await this.executor.snapshot(tokens.length);
    if (snapshot) this.prefixes.add(tokens.slice(), snapshot, snapshot.bytes);
  }

  /**
   * A stored entry as a snapshot, kept in memory where the budget allows (`kept`); null where
   * it fails its checks (then deleted) or the memory for it is lacking.
   */
  async #loadStored(entry) {
    const count = entry.tokens.length;
    const payload = await this.store.read(entry);
    if (!payload || payload.length !== (snapshotLayout(this.manifest, count)?.bytes ?? -1)) {
      if (payload) this.store.index.delete(entry);
      return null;
    }
    const snapshot = await this.executor.snapshotFrom(payload, count);
    if (!snapshot) return null;
    const kept = snapshot.bytes <= this.prefixes.budget;
    if (kept) this.prefixes.add(entry.tokens.slice(), snapshot, snapshot.bytes);
    return { snapshot, kept };
  }

  /**
   * Stores the KV rows of `prompt` (a request's, once it is answered) in the browser's
   * storage, where it is `persistTokens` long or more and that many tokens longer than what the
   * storage holds of it. Takes the rows now (from the KV cache, or the snapshot that holds them);
   * the copy out of the device and the write go on after this resolves.
   * @param {number[]} prompt
   * @returns {Promise<{written: Promise<void>} | null>} the write, where one was started
   */
  async persist(prompt) {
    const store = this.store;
    if (!store || !this.executor || prompt.length < this.persistTokens) return null;
    if (prompt.length - store.depth(prompt) < this.persistTokens) return null;
    let snapshot;
    let temporary = false;
    if (agreement(this.cachedTokens, prompt) === prompt.length) {
      snapshot = await this.executor.snapshot(prompt.length);
      temporary = true;
    } else {
      const { depth, entry } = this.prefixes.match(prompt);
      snapshot = depth === prompt.length ? entry?.value : null;
    }
    if (!snapshot) return null;
    const executor = this.executor;
    const bytes = executor.readSnapshot(snapshot, prompt.length);
    if (temporary) executor.freeSnapshot(snapshot); // its copy is submitted (GPU) or made
    return { written: store.write(prompt.slice(), bytes) };
  }

  /**
   * Appends `token` to the cache; returns the logits that follow it, or with `pick` (and
   * `edit`, `logprobs`: the executors' `run`) the picked token's id, or null when `control` was aborted
   * while the step ran (the token is then not in the cache).
   * With `pick`, `token` null is the one the last step that picked left on the device, not read
   * yet: the cache holds null in its place, which the caller fills in (generator.js).
   * @param {number | null} token
   * @param {Control} [control]
   * @param {{pick?: string | Float32Array | null, edit?: object | null, logprobs?: boolean}} [options]
   * @returns {Promise<Float32Array | number | object | null>}
   */
  async decode(token, control = undefined, { pick = null, edit = null, logprobs = false } = {}) {
    const cache = this.cachedTokens;
    cache.push(token);
    const count = cache.length;
    const ids = token === null ? null : [token];
    const out = await this.executor.run("decode", ids, count, control, { pick, edit, logprobs });
    if (out !== ABORTED) return out;
    // The step may have stopped between its kernels, its row of the KV cache half written: the
    // cache no longer counts its token, so a later prompt computes that row again. (Unless the
    // count moved on meanwhile: steps queued ahead are settled by generator.js.)
    if (this.cachedTokens === cache && cache.length === count) cache.pop();
    return null;
  }

  /**
   * Appends `token` and the `draft` tokens guessed to follow it to the cache in one step (the
   * build's verify); returns the logits after each of them, draft.length + 1 rows of the
   * vocabulary's size one after another, or with `argmax` (where `hasVerifyArgmax`) the greedy
   * token after each of them; or null when `control` was aborted while the step ran (none of
   * them is then in the cache). The caller takes back the draft tokens it rejects (`rewind`).
   * @param {number} token
   * @param {number[]} draft  at most `maxDraft`
   * @param {Control} [control]
   * @param {{argmax?: boolean}} [options]
   * @returns {Promise<Float32Array | Int32Array | null>}
   */
  async verify(token, draft, control = undefined, { argmax = false } = {}) {
    const cache = this.cachedTokens;
    const ids = [token, ...draft];
    cache.push(...ids);
    const count = cache.length;
    const vars = { v: ids.length, total_len: count };
    const tensors = { input_ids: Int32Array.from(ids) };
    const rows = ids.length * this.manifest.config.vocab_size;
    const run = argmax
      ? this.executor.callArgmaxRows(tensors, vars, control)
      : this.executor.call("verify", tensors, vars, rows, control);
    const out = await (control ? control.race(run) : run);
    if (out !== ABORTED) return out;
    if (this.cachedTokens === cache && cache.length === count) cache.length -= ids.length;
    return null;
  }

  /**
   * Makes the cache count its first `count` tokens alone (draft tokens rejected after a verify
   * step): the rows past them hold the rejected tokens' keys and values, written over later.
   * @param {number} count
   */
  rewind(count) {
    if (this.cachedTokens.length > count) this.cachedTokens.length = count;
  }

  /** Where the model runs and what it holds (engine.runtimeStats). */
  runtimeStats() {
    const cpu = this.backend === "wasm";
    const info = this.adapterInfo;
    return {
      model_id: this.id,
      task: this.manifest.task,
      backend: this.backend,
      variant: this.variant,
      threads: cpu ? (this.executor?.threadCount ?? null) : null,
      cross_origin_isolated: Boolean(globalThis.crossOriginIsolated),
      adapter: info
        ? { vendor: info.vendor, architecture: info.architecture, is_fallback_adapter: Boolean(info.isFallbackAdapter) }
        : null,
      model_bytes: this.executor?.modelBytes ?? 0,
      speculation: this.speculation,
      prefix_cache: this.prefixes && {
        entries: this.prefixes.size,
        bytes: this.prefixes.bytes,
        stored_entries: this.store?.index.size ?? 0,
        stored_bytes: this.store?.index.bytes ?? 0,
        pending_writes: this.persisting,
      },
      readback_bytes: this.executor?.readbackBytes ?? 0,
      wasm_memory_bytes: cpu ? (this.executor?.memory.buffer.byteLength ?? 0) : 0,
      load_seconds: this.loadSeconds,
      weights_from: this.shardsFrom,
      last_request: this.lastStats,
    };
  }

  /** Whether the model is an encoder (embeddings) rather than a chat model. */
  get isEncoder() {
    return this.manifest.task === "embedding";
  }

  /**
   * The embeddings of inputs given as token ids (special tokens included), each at most
   * `contextWindow` long. Inputs of similar length run together: sorted by length, up to the
   * build's batch size a call, each call padded to its longest input (the padding is masked
   * out of attention and pooling).
   * @param {number[][]} inputs
   * @returns {Promise<Float32Array[]>} one vector per input, in order
   */
  async embed(inputs) {
    const { config, bounds } = this.manifest;
    const width = config.hidden_size;
    const order = inputs.map((_, i) => i).sort((a, b) => inputs[a].length - inputs[b].length);
    const vectors = new Array(inputs.length);
    for (let start = 0; start < order.length; start += bounds.b) {
      const batch = order.slice(start, start + bounds.b);
      const n = Math.max(...batch.map((i) => inputs[i].length));
      const ids = new Int32Array(batch.length * n); // padded with token 0, never attended to
      batch.forEach((i, row) => ids.set(inputs[i], row * n));
      const lengths = Int32Array.from(batch, (i) => inputs[i].length);
      const out = await this.executor.call(
        "embed",
        { input_ids: ids, lengths },
        { b: batch.length, n },
        batch.length * width,
      );
      batch.forEach((i, row) => {
        const vector = out.slice(row * width, (row + 1) * width);
        if (config.normalize) {
          // As sentence-transformers' Normalize: divided by the length, at least 1e-12.
          const norm = Math.max(Math.hypot(...vector), 1e-12);
          for (let d = 0; d < width; d++) vector[d] /= norm;
        }
        vectors[i] = vector;
      });
    }
    return vectors;
  }

  destroy() {
    this.prefixes?.clear();
    this.prefixes = null;
    this.store = null;
    const device = this.device;
    this.device = null;
    this.executor?.destroy();
    this.executor = null;
    device?.destroy();
    this.grammar?.dispose();
    this.grammar = null;
    this.cachedTokens = [];
  }
}
