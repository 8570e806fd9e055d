// The in-page engine, a facade: the models it holds (model_set.js), the scheduler that
// serialises their work (scheduler.js), the prompt builder (prompt.js) and the generator
// (generator.js), wired to the request checks and response shapes of api/.
import { checkEmbeddingRequest, embeddingResponse } from "../api/embeddings.js";
import { mountMethods } from "../api/methods.js";
import { checkChatRequest, checkCompletionRequest, requestedModel } from "../api/request.js";
import { completionChunks, completionResponse, usage } from "../api/responses.js";
import { InvalidRequestError } from "../errors.js";
import { generateCompletion, runChoices } from "./generator.js";
import { ModelSet } from "./model_set.js";
import { checkSpeculation } from "./prompt_lookup.js";
import { buildPrompt } from "./prompt.js";
import { AsyncQueue } from "./queue.js";
import { makeRandom } from "./sampler.js";
import { Scheduler } from "./scheduler.js";
import { statsText } from "./stats.js";

let idCounter = 0;
// Unique in the page or worker; the last part numbers the requests in the order they started.
const newId = (prefix) => `${prefix}-${Date.now().toString(36)}-${(idCounter++).toString(36)}`;
const now = () => performance.now();
// How many tokens a stream's generation may run ahead of its reader.
const STREAM_AHEAD = 2;

/**
 * An OpenAI-style engine over one or several model folders written by build-web.
 * See README.md ("Using the runtime") for the request fields and what they do.
 */
export class Engine {
  #models = new ModelSet();
  #scheduler = new Scheduler();

  constructor() {
    // The API's namespaced methods (api/methods.js); the others are this class's own.
    mountMethods(this, {
      "chat.completions.create": (request) => this.#create("chat", request),
      "completions.create": (request) => this.#create("text", request),
      "embeddings.create": (request) => this.#embeddings(request),
    });
    this.appConfig = null;
  }

  // The first loaded model's manifest and tokenizer, for tools and tests working with one model.
  get manifest() {
    return this.#models.first?.manifest;
  }
  get tokenizer() {
    return this.#models.first?.tokenizer;
  }
  /** Where each loaded model's weight shards came from: {modelId: {cache, network}}. */
  get weightSources() {
    return this.#models.weightSources;
  }
  /** The ids of the loaded models, the names requests give in `model`. */
  get loadedModels() {
    return this.#models.ids;
  }

  /**
   * Loads models, replacing those loaded before. Each entry of `model` is the `model_id` of an
   * entry of `appConfig.model_list` (`{model_id, model: url | [url, ...], chat_template?}`,
   * several URLs being builds of one model in order of preference, say q4f16 then q4f32, and
   * `chat_template` a Jinja template to use instead of the model's own, say one that renders
   * tools), or the URL of a folder written by build-web.
   * @param {string | string[]} model
   * @param {{initProgressCallback?: (p: {progress: number, text: string}) => void,
   *          appConfig?: {model_list: {model_id: string, model: string | string[], chat_template?: string}[]},
   *          variant?: "software" | "gpu", backend?: "auto" | "webgpu" | "wasm", threads?: number,
   *          useCache?: boolean, prefixCacheBytes?: number, prefixCachePersistTokens?: number,
   *          prefixCacheStorageBytes?: number, speculation?: boolean | {draftTokens?: number,
   *          minMatch?: number, maxMatch?: number, adaptive?: boolean}, devicePicks?: boolean}} [options]
   *          `variant` overrides the kernel set chosen from the adapter; `backend` "wasm" runs on
   *          the CPU (WebAssembly), "webgpu" on the GPU, "auto" (the default) on WebGPU where the
   *          browser has it; `threads` caps the CPU backend's threads (default: one per core);
   *          `useCache: false` keeps weights out of the browser's Cache API store (by default
   *          shards are cached after the first download); the prefix cache's: `prefixCacheBytes`
   *          the memory its KV snapshots may take (0 turns it off), `prefixCachePersistTokens` how
   *          long a prompt is kept in the browser's storage for later page loads (0: none is), and
   *          `prefixCacheStorageBytes` the storage those take (model.js PREFIX_CACHE_DEFAULTS);
   *          `speculation` prompt-lookup speculation's options, or false to turn it off
   *          (prompt_lookup.js SPECULATION_DEFAULTS); `devicePicks: false` reads every step's
   *          logits back to the page and picks there (the reference the device's picks are
   *          checked against; by default a step's token, and its logprobs, are picked on the
   *          device and read back alone)
   */
  reload(model, { initProgressCallback, appConfig, variant, backend, threads, useCache = true, ...prefix } = {}) {
    const specs = Array.isArray(model) ? model : [model];
    if (specs.length === 0 || !specs.every((s) => typeof s === "string" && s.length > 0))
      throw new InvalidRequestError("model", "must be a model id or a URL, or a non-empty array of them");
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1))
      throw new InvalidRequestError("threads", "must be a whole number of threads, 1 or more");
    for (const name of ["prefixCacheBytes", "prefixCachePersistTokens", "prefixCacheStorageBytes"]) {
      const value = prefix[name];
      if (value !== undefined && !(Number.isSafeInteger(value) && value >= 0))
        throw new InvalidRequestError(name, "must be a whole number, 0 or more (0 turns it off)");
    }
    checkSpeculation(prefix.speculation);
    if (prefix.devicePicks !== undefined && typeof prefix.devicePicks !== "boolean")
      throw new InvalidRequestError("devicePicks", "must be true or false");
    this.interruptGenerate();
    return this.#scheduler.exclusive(null, async () => {
      this.#models.unload();
      if (appConfig !== undefined) this.appConfig = appConfig;
      const started = now();
      await this.#models.load(specs, this.appConfig, {
        initProgressCallback,
        variant,
        backend,
        threads,
        useCache,
        ...prefix,
      });
      const seconds = (now() - started) / 1000;
      initProgressCallback?.({
        progress: 1,
        text: `Loaded ${this.loadedModels.join(", ")} in ${seconds.toFixed(1)}s`,
        timeElapsed: seconds,
      });
    });
  }

  /** Frees every model's GPU memory. */
  unload() {
    this.interruptGenerate();
    return this.#scheduler.exclusive(null, () => this.#models.unload());
  }

  /** Forgets the conversation held in the KV cache (of `modelId`, or of every model). */
  resetChat(keepStats = false, modelId = undefined) {
    return this.#scheduler.exclusive(null, () => {
      for (const model of modelId ? [this.#models.resolve(modelId)] : this.#models.values()) {
        model.cachedTokens = [];
        if (!keepStats) model.lastStats = null;
      }
    });
  }

  /**
   * Ends the requests in progress early (truncating, waiting for their turn or generating);
   * each finishes with finish_reason "abort".
   */
  interruptGenerate() {
    this.#scheduler.interrupt();
  }

  /**
   * Where a loaded model runs, what it holds and how fast its last request went: {model_id,
   * task, backend, variant, threads, cross_origin_isolated, adapter, model_bytes,
   * readback_bytes, wasm_memory_bytes, load_seconds, weights_from: {cache, network},
   * last_request}.
   */
  async runtimeStats(modelId = undefined) {
    return this.#models.resolve(modelId).runtimeStats();
  }

  /**
   * The last request's speeds and where the model runs, as a line, e.g. "prefill: 11.5 tok/s,
   * decode: 4.2 tok/s, backend: webgpu (software kernels)".
   */
  async runtimeStatsText(modelId = undefined) {
    return statsText(await this.runtimeStats(modelId));
  }

  /**
   * Times each kernel launch of one decode step after `tokens` (run alone: on WebGPU each is
   * submitted and awaited by itself). For benchmarks: [{kernel, ms}].
   */
  profileDecode(tokens, modelId = undefined) {
    const model = this.#models.resolve(modelId);
    return this.#scheduler.exclusive(model, async () => {
      model.usable().cachedTokens = [];
      await model.prefill(tokens);
      return model.executor.profile("decode", [tokens.at(-1)], tokens.length + 1);
    });
  }

  /** Times each kernel launch of the prefill of `tokens`, as profileDecode does. */
  profilePrefill(tokens, modelId = undefined) {
    const model = this.#models.resolve(modelId);
    return this.#scheduler.exclusive(model, async () => {
      model.usable().cachedTokens = [];
      return model.executor.profile("prefill", tokens, tokens.length);
    });
  }

  /** Logits of the last position for `tokens` (a fresh cache): for tests and tools. */
  forwardLogits(tokens, modelId = undefined) {
    const model = this.#models.resolve(modelId);
    return this.#scheduler.exclusive(model, async () => {
      model.usable().cachedTokens = [];
      return (await model.prefill(tokens)).logits;
    });
  }

  /**
   * Generates from prompt token ids with the sampling fields of a request; calls
   * onToken(id, textDelta) for each new token, and waits for the promise it may return before
   * the next. For tests and tools.
   */
  generate(promptTokens, params = {}, onToken = undefined) {
    const model = this.#models.resolve(params.model);
    return this.#scheduler.exclusive(model, async () => {
      const control = this.#scheduler.begin();
      try {
        const result = await generateCompletion(
          model.usable(),
          promptTokens,
          params,
          makeRandom(params.seed),
          control,
          onToken,
        );
        return { ...result, stats: model.lastStats };
      } finally {
        this.#scheduler.end(control);
      }
    });
  }

  async #create(kind, request) {
    const model = this.#models.resolve(requestedModel(request), false);
    const vocabSize = model.manifest.config.vocab_size;
    const params = kind === "chat" ? checkChatRequest(request, vocabSize) : checkCompletionRequest(request, vocabSize);
    if (params.schemas.length > 0) (await import("../api/request_schemas.js")).checkSchemas(params.schemas);
    model.usable();
    // In progress from here (truncating, waiting for its turn, generating) until it ends:
    // interruptGenerate() ends it.
    const control = this.#scheduler.begin(request.signal);
    let job;
    try {
      // Truncation yields to the event loop: queued in order, a later request cannot overtake it.
      const prompt = await this.#scheduler.inOrder(() => buildPrompt(model, kind, params));
      const id = newId(kind === "chat" ? "chatcmpl" : "cmpl");
      job = { kind, model, params, prompt, control, id, created: Math.floor(Date.now() / 1000) };
    } catch (err) {
      this.#scheduler.end(control);
      throw err;
    }
    if (request.stream) return this.#stream(job, Boolean(request.stream_options?.include_usage));
    try {
      const results = await this.#scheduler.exclusive(model, () => runChoices(job));
      this.#persist(job);
      return completionResponse(job, results);
    } finally {
      this.#scheduler.end(control);
    }
  }

  /**
   * Once a request is answered, its prompt's KV rows are stored for later page loads where
   * long enough (model.persist): taken in a turn of the scheduler's own, from the KV cache or,
   * where a request queued meanwhile went first, from the snapshot its prefill kept of them;
   * copied out and written with no request waiting on it.
   */
  #persist(job) {
    const model = job.model;
    if (!model.store) return;
    model.persisting++;
    this.#scheduler
      .exclusive(model, () => model.persist(job.prompt))
      .then((started) => started?.written)
      .catch(() => {})
      .finally(() => model.persisting--);
  }

  /** engine.embeddings.create: OpenAI's embeddings endpoint (see api/embeddings.js). */
  async #embeddings(request) {
    const model = this.#models.resolve(requestedModel(request), true);
    const dimensions = model.manifest.config.hidden_size;
    const vocabSize = model.manifest.config.vocab_size;
    const { inputs, format, fields } = checkEmbeddingRequest(request, { vocabSize, dimensions });
    model.usable();
    // Strings get the tokens the model puts around an input ([CLS] ... [SEP] for BERT).
    const tokens = inputs.map((input) => (typeof input === "string" ? model.tokenizer.encodePrompt(input) : input));
    tokens.forEach((ids, i) => {
      if (ids.length > model.contextWindow)
        throw new InvalidRequestError(
          fields[i],
          `is ${ids.length} tokens long; this model takes at most ${model.contextWindow}`,
        );
    });
    const vectors = await this.#scheduler.exclusive(model, () => {
      if (request.signal?.aborted) throw new DOMException("The request was aborted", "AbortError");
      return model.usable().embed(tokens);
    });
    const total = tokens.reduce((sum, ids) => sum + ids.length, 0);
    return embeddingResponse(model.id, vectors, format, total);
  }

  /**
   * The streamed form (api/responses.js shapes the chunks). The generation keeps at most
   * STREAM_AHEAD tokens ahead of the reader, so that an abort ends it where the reader is;
   * leaving the loop early ends it too. A stream must be read to its end or left.
   */
  async *#stream(job, includeUsage) {
    const events = new AsyncQueue();
    let results = null;
    const emit = (event) => (events.push(event), events.room(STREAM_AHEAD));
    this.#scheduler
      .exclusive(job.model, () => runChoices(job, emit))
      .then(
        (r) => ((results = r), this.#persist(job), events.close()),
        (err) => events.close(err),
      )
      .finally(() => this.#scheduler.end(job.control));
    let finished = false;
    try {
      yield* completionChunks(job, events, includeUsage ? () => usage(job, results) : null);
      finished = true;
    } finally {
      if (!finished) {
        job.control.abort(); // the caller stopped reading
        events.release();
      }
    }
  }
}

/**
 * Creates an engine and loads `model` into it (see `Engine.reload`).
 * @param {string | string[]} model
 * @param {Parameters<Engine["reload"]>[1]} [options]
 */
export async function CreateEngine(model, options = {}) {
  const engine = new Engine();
  await engine.reload(model, options);
  return engine;
}
