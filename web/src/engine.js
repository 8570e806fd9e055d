import { ContextWindowExceededError, InvalidRequestError, ModelLoadError, ModelNotFoundError } from "./errors.js";
import { GrammarEngine } from "./grammar.js";
import { LogitsProcessor, logSoftmax, topK } from "./logits.js";
import { LoadedModel } from "./model.js";
import { Control, yieldToEventLoop } from "./control.js";
import { AsyncQueue } from "./queue.js";
import { checkEmbeddingRequest, embeddingResponse } from "./embeddings.js";
import { checkChatRequest, checkCompletionRequest, requestedModel, usesTools } from "./request.js";
import { completionChunks, completionResponse, usage } from "./responses.js";
import { makeRandom, sample } from "./sampler.js";
import { StopStrings } from "./stop.js";
import { StreamDecoder } from "./tokenizer.js";

let idCounter = 0;
const newId = (prefix) => `${prefix}-${Date.now().toString(36)}${(idCounter++).toString(36)}`;
const now = () => performance.now();
// How many tokens a stream's generation may run ahead of its reader.
const STREAM_AHEAD = 2;
// Truncation lets the event loop run after about this many milliseconds of work.
const TRUNCATION_YIELD_MS = 10;
// Without max_tokens, truncation keeps this share of the context window for the reply.
const REPLY_SHARE = 0.25;

/** The tokens truncation keeps free for the reply: max_tokens, or REPLY_SHARE of the window. */
function replyRoom(window, maxTokens) {
  return Math.min(maxTokens ?? Math.floor(window * REPLY_SHARE), window - 1);
}

/**
 * An OpenAI-style engine over one or several model folders written by build-web.
 * See README.md ("Using the runtime") for the request fields and what they do.
 */
export class Engine {
  #models = new Map(); // model id -> LoadedModel
  #turn = Promise.resolve(); // models share the GPU queue and their KV caches: one request at a time
  #intake = Promise.resolve(); // prompts are made in the order requests came, so they queue in it
  #inProgress = new Set(); // the Controls of requests not ended: truncating, waiting or generating

  constructor() {
    this.chat = { completions: { create: (request) => this.#create("chat", request) } };
    this.completions = { create: (request) => this.#create("text", request) };
    this.embeddings = { create: (request) => this.#embeddings(request) };
    this.appConfig = null;
  }

  // The first loaded model's manifest and tokenizer, for tools and tests working with one model.
  get #first() {
    return this.#models.values().next().value;
  }
  get manifest() {
    return this.#first?.manifest;
  }
  get tokenizer() {
    return this.#first?.tokenizer;
  }
  /** Where each loaded model's weight shards came from: {modelId: {cache, network}}. */
  get weightSources() {
    return Object.fromEntries([...this.#models].map(([id, m]) => [id, m.shardsFrom]));
  }
  /** The ids of the loaded models, the names requests give in `model`. */
  get loadedModels() {
    return [...this.#models.keys()];
  }

  #exclusive(model, task) {
    const guarded = async () => {
      try {
        return await task();
      } catch (err) {
        // A lost device fails the pending GPU calls before `device.lost` settles.
        await new Promise((resolve) => setTimeout(resolve, 0));
        throw model?.lostError ?? err;
      }
    };
    const run = this.#turn.then(guarded, guarded);
    this.#turn = run.catch(() => {});
    return run;
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
   *          useCache?: boolean}} [options]
   *          `variant` overrides the kernel set chosen from the adapter; `backend` "wasm" runs on
   *          the CPU (WebAssembly), "webgpu" on the GPU, "auto" (the default) on WebGPU where the
   *          browser has it; `threads` caps the CPU backend's threads (default: one per core);
   *          `useCache: false` keeps weights out of the browser's Cache API store (by default
   *          shards are cached after the first download)
   */
  reload(model, { initProgressCallback, appConfig, variant, backend, threads, useCache = true } = {}) {
    const specs = Array.isArray(model) ? model : [model];
    if (specs.length === 0 || !specs.every((s) => typeof s === "string" && s.length > 0))
      throw new InvalidRequestError("model", "must be a model id or a URL, or a non-empty array of them");
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1))
      throw new InvalidRequestError("threads", "must be a whole number of threads, 1 or more");
    this.interruptGenerate();
    return this.#exclusive(null, async () => {
      this.#unloadAll();
      if (appConfig !== undefined) this.appConfig = appConfig;
      const started = now();
      try {
        for (const spec of specs) {
          const entry = this.appConfig?.model_list?.find((e) => e.model_id === spec);
          const urls = entry ? [entry.model].flat() : [spec];
          if (entry?.chat_template !== undefined && typeof entry.chat_template !== "string")
            throw new InvalidRequestError("appConfig.model_list.chat_template", "must be a string (a Jinja template)");
          const loaded = await LoadedModel.load(entry?.model_id, urls, {
            chatTemplate: entry?.chat_template,
            initProgressCallback,
            variant,
            backend,
            threads,
            useCache,
            onDeviceLost: (m, err) => (m.lostError = err),
          });
          if (this.#models.has(loaded.id)) {
            loaded.destroy();
            throw new ModelLoadError(`Two of the models are named ${loaded.id}`);
          }
          this.#models.set(loaded.id, loaded);
        }
      } catch (err) {
        this.#unloadAll(); // all of them or none
        throw err;
      }
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
    return this.#exclusive(null, () => this.#unloadAll());
  }

  #unloadAll() {
    for (const model of this.#models.values()) model.destroy();
    this.#models.clear();
  }

  /** Forgets the conversation held in the KV cache (of `modelId`, or of every model). */
  resetChat(keepStats = false, modelId = undefined) {
    return this.#exclusive(null, () => {
      for (const model of modelId ? [this.#resolve(modelId)] : this.#models.values()) {
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
    for (const control of this.#inProgress) control.abort();
  }

  /**
   * Where a loaded model runs, what it holds and how fast its last request went: {model_id,
   * task, backend, variant, threads, cross_origin_isolated, adapter, model_bytes,
   * wasm_memory_bytes, load_seconds, weights_from: {cache, network}, last_request}.
   */
  async runtimeStats(modelId = undefined) {
    return this.#resolve(modelId).runtimeStats();
  }

  /**
   * The last request's speeds and where the model runs, as a line, e.g. "prefill: 11.5 tok/s,
   * decode: 4.2 tok/s, backend: webgpu (software kernels)".
   */
  async runtimeStatsText(modelId = undefined) {
    const stats = await this.runtimeStats(modelId);
    const last = stats.last_request;
    const where =
      stats.backend === "wasm"
        ? `backend: wasm (CPU, ${cpuText(stats)})`
        : `backend: webgpu (${stats.variant} kernels)`;
    if (!last) return `prefill: no request yet, decode: no request yet, ${where}`;
    return (
      `prefill: ${last.prefill_tokens_per_s.toFixed(1)} tok/s, ` +
      `decode: ${last.decode_tokens_per_s.toFixed(1)} tok/s, ${where}`
    );
  }

  /**
   * Times each kernel launch of one decode step after `tokens` (run alone: on WebGPU each is
   * submitted and awaited by itself). For benchmarks: [{kernel, ms}].
   */
  profileDecode(tokens, modelId = undefined) {
    const model = this.#resolve(modelId);
    return this.#exclusive(model, async () => {
      this.#ready(model).cachedTokens = [];
      await model.prefill(tokens);
      return model.executor.profile("decode", [tokens.at(-1)], tokens.length + 1);
    });
  }

  /** Times each kernel launch of the prefill of `tokens`, as profileDecode does. */
  profilePrefill(tokens, modelId = undefined) {
    const model = this.#resolve(modelId);
    return this.#exclusive(model, async () => {
      this.#ready(model).cachedTokens = [];
      return model.executor.profile("prefill", tokens, tokens.length);
    });
  }

  /**
   * The loaded model a request names; with no name, the only one loaded (or, given `encoder`,
   * the only one of that kind: an engine may hold a chat model and an embedding model). A
   * model of the other kind than `encoder` asks for is an InvalidRequestError.
   */
  #resolve(name, encoder = undefined) {
    const ids = this.loadedModels;
    if (ids.length === 0) throw new ModelLoadError("No model is loaded: call reload(model) first");
    if (name == null) {
      const fitting = [...this.#models.values()].filter((m) => encoder === undefined || m.isEncoder === encoder);
      if (fitting.length === 1) return fitting[0];
      if (ids.length === 1) return this.#first;
      throw new InvalidRequestError("model", `several models are loaded (${ids.join(", ")}): name one`);
    }
    const model = this.#models.get(name);
    if (!model) throw new ModelNotFoundError(name, ids);
    if (encoder !== undefined && model.isEncoder !== encoder)
      throw new InvalidRequestError(
        "model",
        model.isEncoder
          ? `${name} is an embedding model: use engine.embeddings.create`
          : `${name} is a chat model: embeddings need an embedding model`,
      );
    return model;
  }

  #ready(model) {
    if (model.lostError) throw model.lostError;
    if (!model.executor) throw new ModelLoadError("The model was unloaded: call reload(model) first");
    return model;
  }

  /** Logits of the last position for `tokens` (a fresh cache): for tests and tools. */
  forwardLogits(tokens, modelId = undefined) {
    const model = this.#resolve(modelId);
    return this.#exclusive(model, async () => {
      this.#ready(model).cachedTokens = [];
      return (await model.prefill(tokens)).logits;
    });
  }

  /**
   * Generates from prompt token ids with the sampling fields of a request; calls
   * onToken(id, textDelta) for each new token, and waits for the promise it may return before
   * the next. For tests and tools.
   */
  generate(promptTokens, params = {}, onToken = undefined) {
    const model = this.#resolve(params.model);
    return this.#exclusive(model, async () => {
      const control = new Control();
      this.#inProgress.add(control);
      try {
        const result = await this.#generate(
          this.#ready(model),
          promptTokens,
          params,
          makeRandom(params.seed),
          control,
          onToken,
        );
        return { ...result, stats: model.lastStats };
      } finally {
        this.#inProgress.delete(control);
      }
    });
  }

  /** One completion of `prompt`: the loop of sampling and decoding, with every request field applied. */
  async #generate(model, prompt, params, random, control, onToken) {
    const window = model.contextWindow;
    if (prompt.length >= window) throw new ContextWindowExceededError(prompt.length, window, "prompt");
    if (control.aborted) {
      const timing = { prefilled: 0, prefillMs: 0, decodeSteps: 0, decodeMs: 0 };
      return { tokens: [], text: "", finish: "abort", logprobs: [], timing };
    }
    const processor = new LogitsProcessor(params, prompt);
    const grammar = () => this.#grammar(model);
    const mask = params.response_format
      ? await grammar().matcher(params.response_format)
      : usesTools(params)
        ? await grammar().toolMatcher(params.tools, params.toolChoice, params.parallel)
        : null;
    const stops = new StopStrings(params.stop ?? []);
    const eos = new Set(model.manifest.eos_token_ids);
    const decoder = new StreamDecoder(model.tokenizer);
    const maxTokens = params.max_tokens ?? Infinity;
    const topLogprobs = params.top_logprobs ?? 0;
    const tokens = [];
    const logprobs = [];
    let text = "";
    let finish = "length";
    try {
      const t0 = now();
      let { logits, prefilled } = await model.prefill(prompt, control);
      const t1 = now();
      for (;;) {
        if (control.aborted || logits === null) {
          finish = "abort";
          break;
        }
        processor.apply(logits);
        if (mask) await mask.apply(logits);
        const token = sample(logits, params, random);
        if (eos.has(token) && !params.ignore_eos) {
          finish = "stop";
          break;
        }
        tokens.push(token);
        processor.accept(token);
        mask?.accept(token);
        let entry = null;
        if (params.logprobs) {
          const lp = logSoftmax(logits);
          entry = {
            id: token,
            logprob: lp[token],
            top: topK(lp, topLogprobs)
              .filter((id) => Number.isFinite(lp[id]))
              .map((id) => ({ id, logprob: lp[id] })),
          };
          logprobs.push(entry);
        }
        const delta = stops.push(decoder.push(token));
        text += delta;
        await onToken?.(token, delta, entry); // a stream's reader sets the pace
        if (stops.stopped || mask?.terminated) {
          finish = "stop";
          break;
        }
        if (tokens.length >= maxTokens || model.cachedTokens.length + 1 >= window) break;
        logits = await model.decode(token, control);
      }
      // Text held back (an unfinished character or a possible stop string) is released.
      const rest = stops.push(model.tokenizer.decode(tokens).slice(decoder.emitted.length)) + stops.flush();
      if (rest) {
        text += rest;
        onToken?.(null, rest, null);
      }
      const t2 = now();
      const timing = { prefilled, prefillMs: t1 - t0, decodeSteps: Math.max(tokens.length - 1, 0), decodeMs: t2 - t1 };
      model.lastStats = stats([timing], model.backend);
      return { tokens, text, finish, logprobs, timing };
    } finally {
      mask?.dispose();
    }
  }

  #grammar(model) {
    model.grammar ??= new GrammarEngine(
      model.vocabulary,
      model.manifest.config.vocab_size,
      model.manifest.eos_token_ids,
    );
    return model.grammar;
  }

  /**
   * The prompt's token ids. With truncation "auto", the oldest turns are dropped (system
   * messages stay) so that the prompt leaves room for the reply (`replyRoom`). The turns kept
   * are counted from the newest back by their contents' tokens, then the kept conversation is
   * rendered, and the count corrected by what the template adds to each turn: a few
   * tokenizations of what is kept, however long the conversation, with the event loop let run
   * between steps. That is short enough to finish when the request is aborted meanwhile (the
   * abort takes effect before the prefill), so an aborted request reports the prompt it made.
   */
  async #promptTokens(model, kind, params) {
    const window = model.contextWindow;
    const { tokenizer } = model;
    const budget = window - replyRoom(window, params.max_tokens);
    if (kind === "text") {
      let tokens = typeof params.prompt === "string" ? tokenizer.encodePrompt(params.prompt) : params.prompt.slice();
      if (tokens.length === 0) throw new InvalidRequestError("prompt", "encodes to no tokens");
      if (tokens.length > budget && params.truncate) tokens = tokens.slice(tokens.length - budget);
      return tokens;
    }
    const { messages } = params;
    const tools = usesTools(params) ? params.tools : null;
    if (tools && !tokenizer.supportsTools)
      throw new InvalidRequestError("tools", "this model's chat template has no place for tools: it cannot call them");
    const render = (list) => tokenizer.encode(tokenizer.applyChatTemplate(list, true, tools));
    const turns = messages.flatMap((m, i) => (m.role === "system" ? [] : [i]));
    if (!params.truncate || turns.length <= 1) return render(messages);
    const keep = (count) => {
      const first = turns[turns.length - count];
      return render(messages.filter((m, i) => m.role === "system" || i >= first));
    };
    const contentTokens = (m) =>
      tokenizer.encode(m.content + (m.tool_calls ? JSON.stringify(m.tool_calls) : "")).length;
    let slice = now();
    const pause = async () => {
      if (now() - slice < TRUNCATION_YIELD_MS) return;
      await yieldToEventLoop();
      slice = now();
    };
    // The system messages' and the newest turns' contents, until they alone fill the budget.
    let fixed = 0;
    for (const m of messages) if (m.role === "system") fixed += contentTokens(m);
    const costs = [];
    for (let sum = fixed, k = turns.length - 1; k >= 0 && sum <= budget; k--) {
      costs.push(contentTokens(messages[turns[k]]));
      sum += costs[costs.length - 1];
      await pause();
    }
    // How many of the newest turns fit with `extra` tokens of template around each.
    const fitting = (extra) => {
      let total = fixed;
      let count = 0;
      while (count < costs.length && total + costs[count] + extra <= budget) total += costs[count++] + extra;
      return Math.max(count, 1);
    };
    let count = fitting(0);
    let tokens = keep(count);
    for (let round = 0; round < 3; round++) {
      await pause();
      let contents = fixed;
      for (let j = 0; j < count; j++) contents += costs[j];
      const next = fitting(Math.max(0, (tokens.length - contents) / count));
      if (next === count) break;
      [count, tokens] = [next, keep(next)];
    }
    // What is left of the estimate's error: the template's differences between turns.
    while (tokens.length > budget && count > 1) tokens = keep(--count);
    while (count < costs.length) {
      const more = keep(count + 1);
      if (more.length > budget) break;
      [count, tokens] = [count + 1, more];
    }
    return tokens;
  }

  async #create(kind, request) {
    const model = this.#resolve(requestedModel(request), false);
    const vocabSize = model.manifest.config.vocab_size;
    const params = kind === "chat" ? checkChatRequest(request, vocabSize) : checkCompletionRequest(request, vocabSize);
    if (params.schemas.length > 0) (await import("./request_schemas.js")).checkSchemas(params.schemas);
    this.#ready(model);
    const control = new Control();
    const signal = request.signal;
    if (signal) {
      if (signal.aborted) control.abort();
      else signal.addEventListener("abort", () => control.abort(), { once: true });
    }
    // Truncation yields to the event loop: chained, a later request cannot overtake it.
    const prompting = this.#intake.then(() => this.#promptTokens(model, kind, params));
    this.#intake = prompting.catch(() => {});
    // In progress from here (truncating, waiting for its turn, generating) until it ends:
    // interruptGenerate() ends it.
    this.#inProgress.add(control);
    let job;
    try {
      const prompt = await prompting;
      if (prompt.length >= model.contextWindow)
        throw new ContextWindowExceededError(
          prompt.length,
          model.contextWindow,
          kind === "chat" ? "messages" : "prompt",
        );
      const id = newId(kind === "chat" ? "chatcmpl" : "cmpl");
      job = { kind, model, params, prompt, control, id, created: Math.floor(Date.now() / 1000) };
    } catch (err) {
      this.#inProgress.delete(control);
      throw err;
    }
    if (request.stream) return this.#stream(job, Boolean(request.stream_options?.include_usage));
    try {
      return completionResponse(job, await this.#exclusive(model, () => this.#runChoices(job)));
    } finally {
      this.#inProgress.delete(control);
    }
  }

  /** engine.embeddings.create: OpenAI's embeddings endpoint (see embeddings.js). */
  async #embeddings(request) {
    const model = this.#resolve(requestedModel(request), true);
    const dimensions = model.manifest.config.hidden_size;
    const vocabSize = model.manifest.config.vocab_size;
    const { inputs, format, fields } = checkEmbeddingRequest(request, { vocabSize, dimensions });
    this.#ready(model);
    // Strings get the tokens the model puts around an input ([CLS] ... [SEP] for BERT).
    const tokens = inputs.map((input) => (typeof input === "string" ? model.tokenizer.encodePrompt(input) : input));
    tokens.forEach((ids, i) => {
      if (ids.length > model.contextWindow)
        throw new InvalidRequestError(
          fields[i],
          `is ${ids.length} tokens long; this model takes at most ${model.contextWindow}`,
        );
    });
    const vectors = await this.#exclusive(model, () => {
      if (request.signal?.aborted) throw new DOMException("The request was aborted", "AbortError");
      return this.#ready(model).embed(tokens);
    });
    const total = tokens.reduce((sum, ids) => sum + ids.length, 0);
    return embeddingResponse(model.id, vectors, format, total);
  }

  /** Runs the request's n choices one after another (the prompt stays in the KV cache). */
  async #runChoices(job, emit = undefined) {
    const { model, params, prompt, control } = job;
    this.#ready(model);
    const random = makeRandom(params.seed);
    const results = [];
    for (let index = 0; index < params.n; index++) {
      emit?.({ index, start: true });
      const result = await this.#generate(model, prompt, params, random, control, (token, text, logprob) =>
        emit?.({ index, text, logprob }),
      );
      results.push(result);
      emit?.({ index, finish: result.finish });
    }
    model.lastStats = stats(
      results.map((r) => r.timing),
      model.backend,
    );
    return results;
  }

  /**
   * The streamed form (responses.js shapes the chunks). The generation keeps at most
   * STREAM_AHEAD tokens ahead of the reader, so that an abort ends it where the reader is;
   * leaving the loop early ends it too. A stream must be read to its end or left.
   */
  async *#stream(job, includeUsage) {
    const events = new AsyncQueue();
    let results = null;
    const emit = (event) => (events.push(event), events.room(STREAM_AHEAD));
    this.#exclusive(job.model, () => this.#runChoices(job, emit))
      .then(
        (r) => ((results = r), events.close()),
        (err) => events.close(err),
      )
      .finally(() => this.#inProgress.delete(job.control));
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

function cpuText({ threads, cross_origin_isolated }) {
  if (threads > 1) return `${threads} threads`;
  return cross_origin_isolated ? "1 thread" : "1 thread: the page is not cross-origin isolated";
}

/** Speeds over the choices of one request, and where it ran ("webgpu" or "wasm"). */
function stats(timings, backend) {
  const first = timings[0];
  const steps = timings.reduce((s, t) => s + t.decodeSteps, 0);
  const ms = timings.reduce((s, t) => s + t.decodeMs, 0);
  return {
    prefill_tokens: first.prefilled,
    prefill_tokens_per_s: first.prefillMs > 0 ? first.prefilled / (first.prefillMs / 1000) : 0,
    decode_tokens_per_s: steps > 0 ? steps / (ms / 1000) : 0,
    time_to_first_token_s: first.prefillMs / 1000,
    backend,
  };
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
