import { ContextWindowExceededError, InvalidRequestError, ModelLoadError, ModelNotFoundError } from "./errors.js";
import { GrammarEngine } from "./grammar.js";
import { LogitsProcessor, logSoftmax, topK } from "./logits.js";
import { LoadedModel } from "./model.js";
import { AsyncQueue } from "./queue.js";
import { checkEmbeddingRequest, embeddingResponse } from "./embeddings.js";
import { checkChatRequest, checkCompletionRequest, requestedModel } from "./request.js";
import { makeRandom, sample } from "./sampler.js";
import { StopStrings } from "./stop.js";
import { StreamDecoder } from "./tokenizer.js";
import { ToolCallParser, parseReply } from "./tools.js";

let idCounter = 0;
const newId = (prefix) => `${prefix}-${Date.now().toString(36)}${(idCounter++).toString(36)}`;
const now = () => performance.now();
const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * An OpenAI-style engine over one or several model folders written by build-web.
 * See README.md ("Using the runtime") for the request fields and what they do.
 */
export class Engine {
  #models = new Map(); // model id -> LoadedModel
  #turn = Promise.resolve(); // models share the GPU queue and their KV caches: one request at a time
  #intake = Promise.resolve(); // prompts are made in the order requests came, so they queue in it
  #running = null; // the abort control of the request in progress

  constructor() {
    this.chat = { completions: { create: (request) => this.#create("chat", request) } };
    this.completions = { create: (request) => this.#create("text", request) };
    this.embeddings = { create: (request) => this.#embeddings(request) };
    this.appConfig = null;
  }

  // The first loaded model's parts, for tools and tests working with one model.
  get #first() {
    return this.#models.values().next().value;
  }
  get modelId() {
    return this.#first?.id;
  }
  get manifest() {
    return this.#first?.manifest;
  }
  get tokenizer() {
    return this.#first?.tokenizer;
  }
  get variant() {
    return this.#first?.variant;
  }
  /** "webgpu", or "wasm" (the CPU backend) */
  get backend() {
    return this.#first?.backend;
  }
  get executor() {
    return this.#first?.executor;
  }
  get device() {
    return this.#first?.device;
  }
  get adapterInfo() {
    return this.#first?.adapterInfo;
  }
  get loadSeconds() {
    return this.#first?.loadSeconds;
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

  /** Ends the request in progress early; it finishes with finish_reason "abort". */
  interruptGenerate() {
    if (this.#running) this.#running.aborted = true;
  }

  /**
   * Speeds of the last request and where it ran, e.g. "prefill: 11.5 tok/s, decode: 4.2 tok/s,
   * backend: webgpu (software kernels)".
   */
  async runtimeStatsText(modelId = undefined) {
    const model = this.#resolve(modelId);
    const stats = model.lastStats;
    if (!stats) return "prefill: no request yet, decode: no request yet";
    return (
      `prefill: ${stats.prefill_tokens_per_s.toFixed(1)} tok/s, ` +
      `decode: ${stats.decode_tokens_per_s.toFixed(1)} tok/s, ` +
      (model.backend === "wasm"
        ? `backend: wasm (CPU, ${cpuText(model.executor)})`
        : `backend: webgpu (${model.variant} kernels)`)
    );
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
   * onToken(id, textDelta) for each new token. For tests and tools.
   */
  generate(promptTokens, params = {}, onToken = undefined) {
    const model = this.#resolve(params.model);
    return this.#exclusive(model, async () => {
      const control = { aborted: false };
      this.#running = control;
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
        this.#running = null;
      }
    });
  }

  /** One completion of `prompt`: the loop of sampling and decoding, with every request field applied. */
  async #generate(model, prompt, params, random, control, onToken) {
    const window = model.contextWindow;
    if (prompt.length >= window) throw new ContextWindowExceededError(prompt.length, window);
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
      let { logits, prefilled } = await model.prefill(prompt);
      const t1 = now();
      for (;;) {
        if (control.aborted) {
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
        onToken?.(token, delta, entry);
        if (stops.stopped || mask?.terminated) {
          finish = "stop";
          break;
        }
        if (tokens.length >= maxTokens || model.cachedTokens.length + 1 >= window) break;
        logits = await model.decode(token);
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
   * The prompt's token ids. With truncation "auto", the fewest oldest turns (system messages
   * stay) are dropped that make the prompt fit the context window. Dropping more turns never
   * makes a prompt longer, so that number is found by bisection: a few renders of the
   * template, not one per message. Between renders the event loop runs, so an abort is seen;
   * the shortest prompt found by then is kept, for a request that ends at once.
   */
  async #promptTokens(model, kind, params, control) {
    const window = model.contextWindow;
    const { tokenizer } = model;
    if (kind === "text") {
      let tokens = typeof params.prompt === "string" ? tokenizer.encodePrompt(params.prompt) : params.prompt.slice();
      if (tokens.length === 0) throw new InvalidRequestError("prompt", "encodes to no tokens");
      if (tokens.length >= window && params.truncate) tokens = tokens.slice(tokens.length - window + 1);
      return tokens;
    }
    const { messages } = params;
    const tools = usesTools(params) ? params.tools : null;
    if (tools && !tokenizer.supportsTools)
      throw new InvalidRequestError("tools", "this model's chat template has no place for tools: it cannot call them");
    const render = (list) => tokenizer.encode(tokenizer.applyChatTemplate(list, true, tools));
    const all = render(messages);
    const turns = messages.flatMap((m, i) => (m.role === "system" ? [] : [i]));
    if (all.length < window || !params.truncate || turns.length <= 1) return all;
    const dropping = (count) => {
      const dropped = new Set(turns.slice(0, count));
      return render(messages.filter((_, i) => !dropped.has(i)));
    };
    // Dropping `fits` turns makes the prompt fit, dropping `tooLong` does not.
    let tooLong = 0;
    let fits = turns.length - 1;
    let best = dropping(fits);
    if (best.length >= window) return best; // even the last turn alone is too long
    while (fits - tooLong > 1 && !control.aborted) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      const middle = (tooLong + fits) >> 1;
      const tokens = dropping(middle);
      if (tokens.length < window) [fits, best] = [middle, tokens];
      else tooLong = middle;
    }
    return best;
  }

  async #create(kind, request) {
    const model = this.#resolve(requestedModel(request), false);
    const vocabSize = model.manifest.config.vocab_size;
    const params = kind === "chat" ? checkChatRequest(request, vocabSize) : checkCompletionRequest(request, vocabSize);
    this.#ready(model);
    const control = { aborted: false };
    const signal = request.signal;
    if (signal) {
      if (signal.aborted) control.aborted = true;
      else signal.addEventListener("abort", () => (control.aborted = true), { once: true });
    }
    // Truncation yields to the event loop: chained, a later request cannot overtake it.
    const prompting = this.#intake.then(() => this.#promptTokens(model, kind, params, control));
    this.#intake = prompting.catch(() => {});
    const prompt = await prompting;
    if (prompt.length >= model.contextWindow) throw new ContextWindowExceededError(prompt.length, model.contextWindow);
    const job = {
      kind,
      model,
      params,
      prompt,
      control,
      id: newId(kind === "chat" ? "chatcmpl" : "cmpl"),
      created: Math.floor(Date.now() / 1000),
    };
    if (request.stream) return this.#stream(job, Boolean(request.stream_options?.include_usage));
    const results = await this.#exclusive(model, () => this.#runChoices(job));
    return this.#response(job, results);
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
    this.#running = control;
    const random = makeRandom(params.seed);
    const results = [];
    try {
      for (let index = 0; index < params.n; index++) {
        emit?.({ index, start: true });
        const result = await this.#generate(model, prompt, params, random, control, (token, text, logprob) =>
          emit?.({ index, text, logprob }),
        );
        results.push(result);
        emit?.({ index, finish: result.finish });
      }
    } finally {
      this.#running = null;
    }
    model.lastStats = stats(
      results.map((r) => r.timing),
      model.backend,
    );
    return results;
  }

  #usage(job, results) {
    const completion = results.reduce((sum, r) => sum + r.tokens.length, 0);
    return {
      prompt_tokens: job.prompt.length,
      completion_tokens: completion,
      total_tokens: job.prompt.length + completion,
      extra: job.model.lastStats,
    };
  }

  #response(job, results) {
    const { kind, model, params } = job;
    const head = { id: job.id, object: kind === "chat" ? "chat.completion" : "text_completion", created: job.created };
    if (kind === "chat") {
      return {
        ...head,
        model: model.id,
        choices: results.map((r, index) => {
          const message = usesTools(params) ? parseReply(r.text) : { content: r.text };
          return {
            index,
            message: { role: "assistant", ...message, refusal: null },
            logprobs: params.logprobs ? this.#chatLogprobs(model, r.logprobs) : null,
            finish_reason: message.tool_calls && r.finish === "stop" ? "tool_calls" : r.finish,
          };
        }),
        usage: this.#usage(job, results),
      };
    }
    const echo = params.echo ? this.#promptText(job) : "";
    return {
      ...head,
      model: model.id,
      choices: results.map((r, index) => ({
        text: echo + r.text,
        index,
        logprobs: params.logprobs ? this.#textLogprobs(model, r.logprobs, echo.length) : null,
        finish_reason: r.finish,
      })),
      usage: this.#usage(job, results),
    };
  }

  #promptText(job) {
    const { params, model } = job;
    return typeof params.prompt === "string" ? params.prompt : model.tokenizer.decode(params.prompt);
  }

  #tokenInfo(model, id) {
    const bytes = model.vocabulary.bytes(id);
    try {
      return { token: STRICT_UTF8.decode(Uint8Array.from(bytes)), bytes };
    } catch {
      // Part of a character: named by its bytes, as OpenAI does.
      return { token: "bytes:" + bytes.map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join(""), bytes };
    }
  }

  /** OpenAI's chat `logprobs`: each token with its log probability and the most likely alternatives. */
  #chatLogprobs(model, entries) {
    return {
      content: entries.map(({ id, logprob, top }) => ({
        ...this.#tokenInfo(model, id),
        logprob,
        top_logprobs: top.map((t) => ({ ...this.#tokenInfo(model, t.id), logprob: t.logprob })),
      })),
      refusal: null,
    };
  }

  /** The legacy completions `logprobs`: parallel lists, and character offsets into the text. */
  #textLogprobs(model, entries, offset) {
    const tokens = entries.map((e) => this.#tokenInfo(model, e.id).token);
    const textOffset = [];
    for (const token of tokens) {
      textOffset.push(offset);
      offset += token.length;
    }
    return {
      tokens,
      token_logprobs: entries.map((e) => e.logprob),
      top_logprobs: entries.map((e) =>
        Object.fromEntries(e.top.map((t) => [this.#tokenInfo(model, t.id).token, t.logprob])),
      ),
      text_offset: textOffset,
    };
  }

  /**
   * The streamed form: chat.completion.chunk (or text_completion) objects as tokens arrive.
   * Leaving the loop early ends the generation.
   */
  async *#stream(job, includeUsage) {
    const { kind, model, params, control } = job;
    const events = new AsyncQueue();
    let results = null;
    this.#exclusive(model, () => this.#runChoices(job, (event) => events.push(event))).then(
      (r) => ((results = r), events.close()),
      (err) => events.close(err),
    );
    const head = {
      id: job.id,
      object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
      created: job.created,
      model: model.id,
    };
    const chunk = (index, content, logprobs, finish = null) => ({
      ...head,
      choices: [
        kind === "chat"
          ? { index, delta: content, logprobs, finish_reason: finish }
          : { text: content, index, logprobs, finish_reason: finish },
      ],
      ...(includeUsage ? { usage: null } : {}),
    });
    const echo = kind === "text" && params.echo ? this.#promptText(job) : "";
    let text = "";
    let pending = []; // logprobs of tokens whose text has not been sent yet
    const flush = (index) => {
      const logprobs = !params.logprobs
        ? null
        : kind === "chat"
          ? this.#chatLogprobs(model, pending)
          : this.#textLogprobs(model, pending, 0);
      pending = [];
      const out = kind === "chat" ? chunk(index, { content: text }, logprobs) : chunk(index, text, logprobs);
      text = "";
      return out;
    };
    const parsers = kind === "chat" && usesTools(params) ? [] : null; // per choice
    let finished = false;
    try {
      for await (const event of events) {
        if (parsers) {
          // With tools, text and calls arrive as their deltas (tools.js); no logprobs.
          const { index } = event;
          if (event.start) {
            parsers[index] = new ToolCallParser();
            yield chunk(index, { role: "assistant", content: "" }, null);
          } else {
            const parser = parsers[index];
            for (const delta of event.finish ? parser.flush() : parser.push(event.text))
              yield chunk(index, delta, null);
            if (event.finish) {
              const finish = parser.calls.length && event.finish === "stop" ? "tool_calls" : event.finish;
              yield chunk(index, {}, null, finish);
            }
          }
          continue;
        }
        if (event.start) {
          if (kind === "chat") yield chunk(event.index, { role: "assistant", content: "" }, null);
          else if (echo) yield chunk(event.index, echo, null);
        } else if (event.finish) {
          if (text || pending.length) yield flush(event.index);
          yield kind === "chat"
            ? chunk(event.index, {}, null, event.finish)
            : chunk(event.index, "", null, event.finish);
        } else {
          text += event.text;
          if (event.logprob) pending.push(event.logprob);
          if (text) yield flush(event.index);
        }
      }
      if (includeUsage) yield { ...head, choices: [], usage: this.#usage(job, results) };
      finished = true;
    } finally {
      if (!finished) control.aborted = true; // the caller stopped reading
    }
  }
}

/** Whether a checked chat request lets the model call its tools. */
function usesTools(params) {
  return Boolean(params.tools) && params.toolChoice !== "none";
}

function cpuText(executor) {
  const threads = executor?.threadCount ?? 1;
  if (threads > 1) return `${threads} threads`;
  return globalThis.crossOriginIsolated ? "1 thread" : "1 thread: the page is not cross-origin isolated";
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
