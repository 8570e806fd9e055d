// The page's side of the worker protocol (handler.js): the same API as the in-page Engine, its
// methods (api/methods.js) carried as messages over whatever channel reaches the handler
// (worker_client.js connects it to a dedicated worker or a service worker).
import { METHODS, mountMethods } from "../api/methods.js";
import { checkSignal, requestedModel } from "../api/request.js";
import { AsyncQueue } from "../engine/queue.js";
import * as errors from "../errors.js";

const BUILTIN_ERRORS = { TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError };
// How many chunks of a stream the handler may send before the reader takes them: enough to
// hide a message's way there and back, few enough that an abort stops where the reader is.
const STREAM_WINDOW = 4;

/** Rebuilds an error sent by the handler as the class it was thrown as, by name. */
function reviveError({ name, message, code, param }) {
  const named = Object.hasOwn(errors, name) ? errors[name] : BUILTIN_ERRORS[name];
  const Class = named?.prototype instanceof Error ? named : Error;
  // Constructed as an Error with the class's prototype: the classes' own constructors take
  // their arguments, not the message.
  const err = Reflect.construct(Error, [message], Class);
  err.name = name;
  if (code !== undefined) err.code = code;
  if (param !== undefined) err.param = param;
  return err;
}

/** Options without their function-valued fields (callbacks), which cannot cross postMessage. */
function cloneable(options) {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => typeof v !== "function"));
}

/** Model URLs resolved against this page, since the worker would resolve them against its script. */
function resolveUrls(model, appConfig) {
  const base = globalThis.location?.href;
  const absolute = (url) => {
    if (typeof url !== "string" || url === "" || !base) return url;
    try {
      return new URL(url, base).href;
    } catch {
      return url; // the engine says what is wrong with it
    }
  };
  const list = Array.isArray(appConfig?.model_list) ? appConfig.model_list : null;
  const ids = new Set(list?.map((e) => e?.model_id));
  // As the engine reads a spec: a model_id of the app config, else a URL.
  const spec = (s) => (ids.has(s) ? s : absolute(s));
  const resolved = Array.isArray(model) ? model.map(spec) : spec(model);
  if (!list) return { model: resolved, appConfig };
  const model_list = list.map((e) =>
    e && typeof e === "object"
      ? { ...e, model: Array.isArray(e.model) ? e.model.map(absolute) : absolute(e.model) }
      : e,
  );
  return { model: resolved, appConfig: { ...appConfig, model_list } };
}

/** The engine's API over a message channel to an EngineHandler (handler.js). */
export class WorkerEngine {
  #post;
  #calls = new Map(); // id -> {resolve, reject, progress?, stream?, chunk?}
  #nextId = 1;
  #expect = null; // {model, options} of the last successful reload
  #appConfig = undefined;
  #loadedModels = [];

  /**
   * @param {(message: object) => void} post  sends a message to the handler
   * @param {(receive: (message: any) => void, fail: (error: Error) => void) => void} connect
   *   subscribes to the handler's replies, and says when the worker behind it is gone
   */
  constructor(post, connect) {
    this.#post = post;
    connect(
      (message) => this.#receive(message),
      (error) => this.#failAll(error),
    );
    // The requests (engine.chat.completions.create...) and the methods forwarded as they are;
    // reload and unload are this class's own.
    const forwarded = METHODS.filter(({ kind }) => kind === "request" || kind === "call");
    mountMethods(
      this,
      Object.fromEntries(
        forwarded.map(({ name, kind }) => [
          name,
          kind === "request" ? (request) => this.#create(name, request) : (...args) => this.#call(name, args).done,
        ]),
      ),
    );
  }

  /** The ids of the loaded models, as of the handler's last reply. */
  get loadedModels() {
    return [...this.#loadedModels];
  }

  #receive(message) {
    const call = typeof message?.kiln === "string" ? this.#calls.get(message.id) : undefined;
    if (!call) return;
    if (Array.isArray(message.loadedModels)) this.#loadedModels = message.loadedModels;
    switch (message.kiln) {
      case "progress":
        call.progress?.(message.report);
        break;
      case "stream":
        call.stream?.();
        break;
      case "chunk":
        call.chunk?.(message.chunk);
        break;
      case "return":
        this.#calls.delete(message.id);
        call.resolve(message.value);
        break;
      case "error":
        this.#calls.delete(message.id);
        call.reject(reviveError(message.error));
        break;
    }
  }

  #failAll(error) {
    for (const call of this.#calls.values()) call.reject(error);
    this.#calls.clear();
  }

  #call(method, args, fields = {}, hooks = {}) {
    const id = this.#nextId++;
    const done = new Promise((resolve, reject) => {
      this.#calls.set(id, { resolve, reject, ...hooks });
      try {
        this.#post({ kiln: "call", id, method, args, ...fields });
      } catch (err) {
        this.#calls.delete(id);
        // A value structured cloning cannot copy (a function, a Symbol...) or one nested past
        // its recursion limit (a RangeError) somewhere in the call's arguments.
        if (err?.name !== "DataCloneError" && err?.name !== "RangeError") throw err;
        const why = err.name === "RangeError" ? "it is nested too deeply" : err.message;
        throw new errors.InvalidRequestError(uncloneable(args[0]), `cannot be sent to the engine's worker: ${why}`);
      }
    });
    return { id, done };
  }

  /**
   * Loads models, replacing those loaded before (see Engine.reload); the worker keeps what it
   * has if it is the same.
   * @param {string | string[]} model
   * @param {{initProgressCallback?: (p: {progress: number, text: string}) => void,
   *          appConfig?: object, variant?: "software" | "gpu",
   *          backend?: "auto" | "webgpu" | "wasm", threads?: number, useCache?: boolean}} [options]
   */
  async reload(model, options = {}) {
    const { initProgressCallback, ...rest } = options ?? {};
    const fields = cloneable(rest);
    if (fields.appConfig !== undefined) this.#appConfig = fields.appConfig;
    const resolved = resolveUrls(model, this.#appConfig);
    if (fields.appConfig !== undefined) fields.appConfig = resolved.appConfig;
    this.#expect = null; // a failed reload leaves nothing loaded
    const { done } = this.#call(
      "reload",
      [resolved.model, fields],
      { progress: Boolean(initProgressCallback) },
      { progress: initProgressCallback },
    );
    await done;
    this.#expect = { model: resolved.model, options: fields };
  }

  /** Frees every model's GPU memory. */
  async unload() {
    this.#expect = null;
    await this.#call("unload", []).done;
  }

  async #create(method, request) {
    // What cannot cross postMessage is checked here; the rest goes as it is, for the engine
    // to check. The signal stays here, carried as an abort message, and so does a prefill
    // progress callback, which the handler's progress messages call.
    requestedModel(request);
    const { signal, ...body } = request;
    checkSignal(signal);
    const onProgress = typeof body.prefillProgressCallback === "function" ? body.prefillProgressCallback : undefined;
    if (onProgress) delete body.prefillProgressCallback;
    const queue = new AsyncQueue();
    let started;
    const accepted = new Promise((resolve) => (started = resolve));
    const { id, done } = this.#call(
      method,
      [body],
      // An abort message would reach the worker after the request and might be read only
      // once it has run a while: a signal already fired goes with the request.
      {
        expect: this.#expect ?? undefined,
        ...(onProgress ? { progress: true } : {}),
        ...(signal?.aborted ? { aborted: true } : {}),
        ...(body?.stream ? { window: STREAM_WINDOW } : {}),
      },
      {
        stream: started,
        chunk: (chunk) => queue.push(chunk),
        progress: onProgress,
      },
    );
    const abort = () => this.#post({ kiln: "abort", id });
    if (!signal?.aborted) signal?.addEventListener("abort", abort, { once: true });
    const settled = () => signal?.removeEventListener("abort", abort);
    done.then(
      () => (settled(), queue.close()),
      (err) => (settled(), queue.close(err)),
    );
    if (!body?.stream) return done;
    // Resolves once the handler has accepted the request; a rejected one rejects here.
    await Promise.race([accepted, done]);
    return this.#read(id, queue);
  }

  /** The stream's chunks; leaving the loop early ends the generation, as in the page. */
  async *#read(id, queue) {
    let finished = false;
    try {
      for await (const chunk of queue) {
        this.#post({ kiln: "read", id }); // the handler sends the next one
        yield chunk;
      }
      finished = true;
    } finally {
      if (!finished) this.#post({ kiln: "abort", id });
    }
  }
}

/** The first field of a request that structured cloning fails on, or "request". */
function uncloneable(request) {
  if (request === null || typeof request !== "object") return "request";
  for (const [field, value] of Object.entries(request)) {
    try {
      structuredClone(value);
    } catch {
      return field;
    }
  }
  return "request";
}
