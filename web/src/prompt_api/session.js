// A Prompt API session (an instance of LanguageModel) over an engine: it holds the conversation
// as chat messages and sends all of it with each prompt, so that the engine, which keeps the
// last conversation in its KV cache, prefills only what is new. Calls on a session run one
// after another, in the order they were made.
import { ContextWindowExceededError, InvalidRequestError } from "../errors.js";
import { constrained, domError, promptMessages, quotaExceeded, requestSampling } from "./inputs.js";

/** Passed by LanguageModel.create() and clone(): a page cannot construct a session itself. */
export const PRIVATE = Symbol("LanguageModel");
/** The method by which create() gives a new session its initialPrompts. */
export const INITIAL = Symbol("initialPrompts");

/** The engine's errors as the explainer's: a bad request field is a TypeError. */
function asPromptError(err) {
  if (err instanceof ContextWindowExceededError) return domError("QuotaExceededError", err.message);
  if (err instanceof InvalidRequestError) return new TypeError(err.message);
  return err;
}

export class LanguageModelSession extends EventTarget {
  #engine;
  #sampling;
  #messages = [];
  #kept = 0; // the leading messages never dropped on overflow: initialPrompts, or a first system message
  #usage = 0;
  #destroyed = new AbortController();
  #queue = Promise.resolve();
  #handlers = {};

  /** @param {symbol} key  @param {any} engine  @param {object} state */
  constructor(key, engine, { sampling, messages = [], kept = 0, usage = 0 }) {
    if (key !== PRIVATE) throw new TypeError("Illegal constructor: use LanguageModel.create()");
    super();
    this.#engine = engine;
    this.#sampling = sampling;
    [this.#messages, this.#kept, this.#usage] = [messages, kept, usage];
  }

  get temperature() {
    return this.#sampling.temperature;
  }
  get topK() {
    return this.#sampling.topK;
  }
  get samplingMode() {
    return this.#sampling.samplingMode;
  }
  /** The tokens the conversation takes in the context window. */
  get contextUsage() {
    return this.#usage;
  }
  get contextWindow() {
    return this.#engine.manifest.context_window;
  }
  get inputUsage() {
    return this.contextUsage;
  }
  get inputQuota() {
    return this.contextWindow;
  }
  get oncontextoverflow() {
    return this.#handlers.contextoverflow ?? null;
  }
  set oncontextoverflow(handler) {
    if (this.#handlers.contextoverflow) this.removeEventListener("contextoverflow", this.#handlers.contextoverflow);
    this.#handlers.contextoverflow = typeof handler === "function" ? handler : null;
    if (this.#handlers.contextoverflow) this.addEventListener("contextoverflow", this.#handlers.contextoverflow);
  }
  get onquotaoverflow() {
    return this.oncontextoverflow;
  }
  set onquotaoverflow(handler) {
    this.oncontextoverflow = handler;
  }

  /** The model's reply to `input`, which joins the conversation with it. */
  prompt(input, options = {}) {
    return this.#run(options.signal, async (signal) => {
      const turn = this.#turn(input, options, signal);
      const reply = await this.#engine.chat.completions.create(turn.request).catch((err) => {
        throw asPromptError(err);
      });
      signal.throwIfAborted();
      const text = reply.choices[0].message.content ?? "";
      turn.commit(text);
      return text;
    });
  }

  /** The reply as a ReadableStream of its text, a piece at a time, generated as it is read. */
  promptStreaming(input, options = {}) {
    this.#usable();
    const cancel = new AbortController();
    let opened;
    const open = new Promise((resolve, reject) => (opened = { resolve, reject }));
    open.catch(() => {}); // a stream never read reports its failure to no one
    let release;
    const released = new Promise((resolve) => (release = resolve));
    // The stream takes its turn now; the session goes on to its next call when it ends.
    this.#run(AbortSignal.any([cancel.signal, ...(options.signal ? [options.signal] : [])]), async (signal) => {
      const turn = this.#turn(input, options, signal);
      const chunks = await this.#engine.chat.completions.create({ ...turn.request, stream: true }).catch((err) => {
        throw asPromptError(err);
      });
      opened.resolve({ turn, chunks: chunks[Symbol.asyncIterator](), signal });
      await released;
    }).catch(opened.reject);
    let text = "";
    return new ReadableStream(
      {
        async pull(controller) {
          try {
            const { turn, chunks, signal } = await open;
            for (;;) {
              const { value, done } = await chunks.next();
              if (done) {
                signal.throwIfAborted();
                turn.commit(text);
                controller.close();
                return release();
              }
              const delta = value.choices[0]?.delta?.content;
              if (delta) {
                text += delta;
                return controller.enqueue(delta);
              }
            }
          } catch (err) {
            controller.error(err);
            release();
          }
        },
        cancel(reason) {
          cancel.abort(reason);
          open
            .then(
              ({ chunks }) => chunks.return(),
              () => {},
            )
            .finally(release);
        },
      },
      { highWaterMark: 0 },
    );
  }

  /** Adds `input` to the conversation without a reply; the engine prefills it now. */
  append(input, options = {}) {
    return this.#run(options.signal, (signal) =>
      this.#append(promptMessages(input, this.#messages.length === 0), signal),
    );
  }

  /** The tokens `input` would add to the conversation (with the schema, where it is put to the model). */
  measureContextUsage(input, options = {}) {
    return this.#run(options.signal, async () => {
      const { messages } = constrained(promptMessages(input, this.#messages.length === 0), options);
      return this.#count(this.#messages.concat(messages), false) - this.#usage;
    });
  }
  measureInputUsage(input, options = {}) {
    return this.measureContextUsage(input, options);
  }

  /** A new session with this one's conversation and sampling, independent of it from now on. */
  clone(options = {}) {
    return this.#run(options.signal, async () => {
      const state = {
        sampling: this.#sampling,
        messages: this.#messages.slice(),
        kept: this.#kept,
        usage: this.#usage,
      };
      return new /** @type {any} */ (this.constructor)(PRIVATE, this.#engine, state);
    });
  }

  /** Ends the calls in progress or waiting (AbortError); later calls are an InvalidStateError. */
  destroy() {
    this.#destroyed.abort(domError("AbortError", "The session was destroyed"));
  }

  /** Gives a new session its initialPrompts (create()), kept whatever the overflow. */
  [INITIAL](messages, signal) {
    return this.#run(signal, async (combined) => {
      await this.#append(messages, combined);
      this.#kept = messages.length;
    });
  }

  #usable() {
    if (this.#destroyed.signal.aborted) throw domError("InvalidStateError", "The session was destroyed");
  }

  /**
   * Runs `call` after the calls made before it, with a signal that aborts on `signal` or on
   * destroy(); a call waiting or in progress rejects at once when aborted.
   */
  #run(signal, call) {
    try {
      this.#usable();
      if (signal != null && !(signal instanceof AbortSignal)) throw new TypeError("signal must be an AbortSignal");
    } catch (err) {
      return Promise.reject(err);
    }
    const combined = AbortSignal.any([this.#destroyed.signal, ...(signal ? [signal] : [])]);
    const turn = this.#queue.then(() => (combined.throwIfAborted(), call(combined)));
    this.#queue = turn.catch(() => {});
    return new Promise((resolve, reject) => {
      combined.addEventListener("abort", () => reject(combined.reason), { once: true });
      if (combined.aborted) reject(combined.reason);
      turn.then(resolve, reject);
    });
  }

  #count(messages, withReplyPrompt) {
    if (messages.length === 0) return 0;
    const { tokenizer } = this.#engine;
    return tokenizer.encode(tokenizer.applyChatTemplate(messages, withReplyPrompt)).length;
  }

  /**
   * Makes room for `added` messages (and the reply's opening where `withReplyPrompt`): where
   * the conversation with them would not fit, its oldest turns (a user message through the
   * assistant's reply) are dropped, the kept leading ones never, and "contextoverflow" is
   * fired; a QuotaExceededError, with nothing dropped, where that is not enough.
   */
  #makeRoom(added, withReplyPrompt) {
    const window = this.contextWindow;
    let messages = this.#messages;
    let total = this.#count(messages.concat(added), withReplyPrompt);
    while (total >= window && messages.length > this.#kept) {
      let end = this.#kept;
      while (end < messages.length - 1 && messages[end].role !== "assistant") end++;
      messages = messages.slice(0, this.#kept).concat(messages.slice(end + 1));
      total = this.#count(messages.concat(added), withReplyPrompt);
    }
    if (total >= window) throw quotaExceeded(total - this.#usage, window - this.#usage);
    if (messages !== this.#messages) {
      [this.#messages, this.#usage] = [messages, this.#count(messages, false)];
      this.dispatchEvent(new Event("contextoverflow"));
    }
  }

  /** A prompt's request, and how its reply joins the conversation. */
  #turn(input, options, signal) {
    const first = this.#messages.length === 0;
    const { messages: added, response_format } = constrained(promptMessages(input, first), options);
    this.#makeRoom(added, true);
    if (first && added[0]?.role === "system") this.#kept = Math.max(this.#kept, 1);
    const messages = this.#messages.concat(added);
    const request = { messages, ...requestSampling(this.#sampling), response_format, signal };
    const commit = (text) => {
      this.#messages = messages.concat({ role: "assistant", content: text });
      this.#usage = this.#count(this.#messages, false);
    };
    return { request, commit };
  }

  /** Adds messages, prefilled in the engine's KV cache now (a raw completion of one token). */
  async #append(added, signal) {
    if (added.length === 0) return;
    const first = this.#messages.length === 0;
    this.#makeRoom(added, false);
    if (first && added[0].role === "system") this.#kept = Math.max(this.#kept, 1);
    const messages = this.#messages.concat(added);
    const { tokenizer } = this.#engine;
    const prompt = tokenizer.encode(tokenizer.applyChatTemplate(messages, false));
    await this.#engine.completions.create({ prompt, max_tokens: 1, temperature: 0, signal }).catch((err) => {
      throw asPromptError(err);
    });
    signal.throwIfAborted();
    [this.#messages, this.#usage] = [messages, prompt.length];
  }
}
