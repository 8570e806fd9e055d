import { openDevice, pickBuild, requestAdapter } from "./device.js";
import { ContextWindowExceededError, InvalidRequestError, ModelLoadError } from "./errors.js";
import { Executor, kvCacheBytes } from "./executor.js";
import { fetchManifest, fetchTokenizerFiles, fetchVariant, loadWeights } from "./loader.js";
import { makeRandom, sample } from "./sampler.js";
import { ChatTokenizer, StreamDecoder } from "./tokenizer.js";

const ROLES = new Set(["system", "user", "assistant"]);

function validate(request) {
  const { messages, max_tokens, temperature, top_p } = request;
  if (!Array.isArray(messages) || messages.length === 0)
    throw new InvalidRequestError("messages", "must be a non-empty array");
  for (const [i, m] of messages.entries()) {
    if (!m || !ROLES.has(m.role))
      throw new InvalidRequestError(`messages[${i}].role`, "must be system, user or assistant");
    if (typeof m.content !== "string") throw new InvalidRequestError(`messages[${i}].content`, "must be a string");
  }
  if (max_tokens != null && !(Number.isInteger(max_tokens) && max_tokens > 0))
    throw new InvalidRequestError("max_tokens", "must be a positive integer");
  if (temperature != null && !(temperature >= 0 && temperature <= 2))
    throw new InvalidRequestError("temperature", "must be between 0 and 2");
  if (top_p != null && !(top_p > 0 && top_p <= 1)) throw new InvalidRequestError("top_p", "must be in (0, 1]");
}

/** Fails early, with the numbers, when a buffer the model needs exceeds the device's limits. */
function checkLimits(device, manifest, variant) {
  const largest = Math.max(
    kvCacheBytes(manifest),
    ...manifest.params.map((t) => t.bytes),
    ...Object.values(variant.functions).flatMap((f) => f.storages),
  );
  const limit = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
  if (largest > limit) {
    throw new ModelLoadError(
      `${manifest.model_id} needs a GPU buffer of ${largest} bytes but this device allows ${limit}. ` +
        "Rebuild it with a smaller --context-window or --prefill-chunk.",
    );
  }
}

let idCounter = 0;
const newId = (prefix) => `${prefix}-${Date.now().toString(36)}${(idCounter++).toString(36)}`;

/**
 * An OpenAI-style chat engine over one model folder.
 * `engine.chat.completions.create({messages, stream, max_tokens, temperature, top_p, seed})`.
 */
export class Engine {
  constructor() {
    this.chat = { completions: { create: (request) => this.createChatCompletion(request) } };
    this.executor = null;
    this.cachedTokens = []; // tokens whose keys and values sit in the KV cache
    this.lastStats = null;
    this.turn = Promise.resolve(); // requests share one KV cache: they run one at a time
  }

  #exclusive(task) {
    const guarded = async () => {
      try {
        return await task();
      } catch (err) {
        // A lost device fails the pending GPU calls before `device.lost` settles.
        await new Promise((resolve) => setTimeout(resolve, 0));
        throw this.deviceLostError ?? err;
      }
    };
    const run = this.turn.then(guarded, guarded);
    this.turn = run.catch(() => {});
    return run;
  }

  /**
   * Loads (or replaces) the model at `modelUrl`, a folder written by build-web, or the first
   * of several builds of one model (say its q4f16 and q4f32 folders) that the adapter can run.
   * @param {string | string[]} modelUrl
   * @param {{initProgressCallback?: (p: {progress: number, text: string}) => void,
   *          variant?: "software" | "gpu"}} [options]  `variant` overrides the kernel set
   *          chosen from the adapter
   */
  async reload(modelUrl, { initProgressCallback, variant } = {}) {
    this.unload();
    this.deviceLostError = null;
    const started = performance.now();
    const adapter = await requestAdapter();
    const candidates = await Promise.all((Array.isArray(modelUrl) ? modelUrl : [modelUrl]).map(fetchManifest));
    const chosen = pickBuild(
      adapter,
      candidates.map((c) => c.manifest),
    );
    const files = candidates.find((c) => c.manifest === chosen);
    const { tokenizer, tokenizerConfig } = await fetchTokenizerFiles(files.base, files.manifest);
    const { device, adapterInfo } = await openDevice(adapter, files.manifest, (err) => {
      if (this.device === device) this.deviceLostError = err; // not an unload() of ours
    });
    this.device = device;
    this.adapterInfo = adapterInfo;
    this.manifest = files.manifest;
    this.modelId = files.manifest.model_id;
    this.tokenizer = new ChatTokenizer(tokenizer, tokenizerConfig);
    const kernels = await fetchVariant(files.base, files.manifest, adapterInfo, variant);
    this.variant = kernels.name;
    checkLimits(device, files.manifest, kernels);
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    const weights = await loadWeights(device, files.base, files.manifest, initProgressCallback);
    this.executor = new Executor(device, files.manifest, kernels, weights);
    for (const error of [await device.popErrorScope(), await device.popErrorScope()]) {
      if (error) {
        this.unload();
        throw new ModelLoadError(`The GPU rejected the model's buffers or kernels: ${error.message}`);
      }
    }
    this.loadSeconds = (performance.now() - started) / 1000;
    initProgressCallback?.({
      progress: 1,
      text: `Loaded ${this.modelId} in ${this.loadSeconds.toFixed(1)}s`,
      timeElapsed: this.loadSeconds,
    });
  }

  unload() {
    const device = this.device;
    this.device = null;
    this.executor?.destroy();
    device?.destroy();
    this.executor = null;
    this.cachedTokens = [];
  }

  resetChat() {
    this.cachedTokens = [];
  }

  #requireModel() {
    if (this.deviceLostError) throw this.deviceLostError;
    if (!this.executor) throw new ModelLoadError("No model is loaded: call reload(modelUrl) first");
  }

  /** Runs the prompt through the model, reusing the cached prefix; returns last logits. */
  async #prefill(tokens) {
    let start = 0;
    while (start < this.cachedTokens.length && start < tokens.length - 1 && this.cachedTokens[start] === tokens[start])
      start++;
    const chunk = this.manifest.prefill_chunk;
    let logits;
    for (let i = start; i < tokens.length; i += chunk) {
      const ids = tokens.slice(i, Math.min(tokens.length, i + chunk));
      logits = await this.executor.run("prefill", ids, i + ids.length);
    }
    this.cachedTokens = tokens.slice();
    return { logits, prefilled: tokens.length - start };
  }

  /** Logits of the last position for `tokens` (a fresh cache): for tests and tools. */
  forwardLogits(tokens) {
    return this.#exclusive(async () => {
      this.#requireModel();
      this.cachedTokens = [];
      const { logits } = await this.#prefill(tokens);
      return logits;
    });
  }

  /** Generates from prompt tokens; calls onToken(id, textDelta) for each new token. */
  generate(promptTokens, params, onToken) {
    return this.#exclusive(() => this.#generate(promptTokens, params, onToken));
  }

  async #generate(promptTokens, params, onToken) {
    this.#requireModel();
    const window = this.manifest.context_window;
    if (promptTokens.length >= window) throw new ContextWindowExceededError(promptTokens.length, window);
    const random = makeRandom(params.seed);
    const stops = new Set(this.manifest.eos_token_ids);
    const decoder = new StreamDecoder(this.tokenizer);
    const maxTokens = params.max_tokens ?? window;
    const t0 = performance.now();
    let { logits, prefilled } = await this.#prefill(promptTokens);
    const t1 = performance.now();
    const output = [];
    let finish = "length";
    for (;;) {
      const token = sample(logits, params, random);
      if (stops.has(token) && !params.ignore_eos) {
        finish = "stop";
        break;
      }
      output.push(token);
      onToken?.(token, decoder.push(token));
      if (output.length >= maxTokens || this.cachedTokens.length + 1 >= window) break;
      this.cachedTokens.push(token);
      logits = await this.executor.run("decode", [token], this.cachedTokens.length);
    }
    const t2 = performance.now();
    const decodeSteps = Math.max(output.length - 1, 0);
    this.lastStats = {
      prefill_tokens: prefilled,
      prefill_tokens_per_s: prefilled / ((t1 - t0) / 1000),
      decode_tokens_per_s: decodeSteps > 0 ? decodeSteps / ((t2 - t1) / 1000) : 0,
      time_to_first_token_s: (t1 - t0) / 1000,
    };
    return { tokens: output, text: decoder.tokenizer.decode(output), finish, stats: this.lastStats };
  }

  createChatCompletion(request) {
    validate(request);
    if (request.stream) return this.#stream(request);
    return this.#complete(request);
  }

  #promptTokens(request) {
    this.#requireModel();
    return this.tokenizer.encode(this.tokenizer.applyChatTemplate(request.messages));
  }

  #usage(promptTokens, completionTokens, stats) {
    return {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
      extra: stats,
    };
  }

  async #complete(request) {
    const prompt = this.#promptTokens(request);
    const result = await this.generate(prompt, request);
    return {
      id: newId("chatcmpl"),
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model: this.modelId,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: result.text },
          finish_reason: result.finish,
          logprobs: null,
        },
      ],
      usage: this.#usage(prompt.length, result.tokens.length, result.stats),
    };
  }

  async *#stream(request) {
    const prompt = this.#promptTokens(request);
    const id = newId("chatcmpl");
    const created = Math.floor(Date.now() / 1000);
    const chunk = (delta, finish_reason = null) => ({
      id,
      object: "chat.completion.chunk",
      created,
      model: this.modelId,
      choices: [{ index: 0, delta, finish_reason, logprobs: null }],
    });
    // Tokens arrive from the generation loop through a small queue the iterator drains.
    const queue = [];
    let wake = null;
    let done = false;
    let failure = null;
    const generation = this.generate(prompt, request, (_, text) => {
      if (text) queue.push(text);
      wake?.();
    }).then(
      (result) => {
        done = result;
        wake?.();
      },
      (err) => {
        failure = err;
        wake?.();
      },
    );
    yield chunk({ role: "assistant", content: "" });
    for (;;) {
      while (queue.length) yield chunk({ content: queue.shift() });
      if (failure) throw failure;
      if (done) break;
      await new Promise((resolve) => (wake = resolve));
      wake = null;
    }
    await generation;
    const final = chunk({}, done.finish);
    if (request.stream_options?.include_usage) final.usage = this.#usage(prompt.length, done.tokens.length, done.stats);
    yield final;
  }
}

/** Creates an engine and loads the model folder at `modelUrl` into it. */
export async function CreateEngine(modelUrl, options = {}) {
  const engine = new Engine();
  await engine.reload(modelUrl, options);
  return engine;
}
