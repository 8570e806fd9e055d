// The page's side of an engine that runs in a Web Worker or a service worker (worker.js):
// the same API as the in-page Engine, carried over worker.js's message protocol.

import * as errors from "./errors.js";
import { AsyncQueue } from "./queue.js";
import { checkSignal, requestedModel } from "./request.js";

const BUILTIN_ERRORS = { TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError };
// Chrome stops a service worker after about 30 s without events.
const KEEP_ALIVE_MS = 10_000;
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

/** The engine's API over a message channel to an EngineHandler (worker.js). */
class WorkerEngine {
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
    this.chat = { completions: { create: (request) => this.#create("chat.completions.create", request) } };
    this.completions = { create: (request) => this.#create("completions.create", request) };
    this.embeddings = { create: (request) => this.#create("embeddings.create", request) };
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

  /** Forgets the conversation held in the KV cache (of `modelId`, or of every model). */
  async resetChat(keepStats = false, modelId = undefined) {
    await this.#call("resetChat", [keepStats, modelId]).done;
  }

  /** Ends the request in progress early; it finishes with finish_reason "abort". */
  async interruptGenerate() {
    await this.#call("interruptGenerate", []).done;
  }

  /** Where the model runs, what it holds and its last request's speeds (Engine.runtimeStats). */
  runtimeStats(modelId = undefined) {
    return this.#call("runtimeStats", modelId === undefined ? [] : [modelId]).done;
  }

  /** Speeds of the last request, e.g. "prefill: 11.5 tok/s, decode: 4.2 tok/s". */
  runtimeStatsText(modelId = undefined) {
    return this.#call("runtimeStatsText", modelId === undefined ? [] : [modelId]).done;
  }

  async #create(method, request) {
    // What cannot cross postMessage is checked here; the rest goes as it is, for the engine
    // to check. The signal stays here, carried as an abort message.
    requestedModel(request);
    const { signal, ...body } = request;
    checkSignal(signal);
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
        ...(signal?.aborted ? { aborted: true } : {}),
        ...(body?.stream ? { window: STREAM_WINDOW } : {}),
      },
      {
        stream: started,
        chunk: (chunk) => queue.push(chunk),
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

/**
 * A dedicated worker running the runtime's own worker script, found beside this module.
 * Written as `new Worker(new URL(literal, import.meta.url), {type: "module"})` on purpose:
 * bundlers (Vite, webpack, Parcel) recognise exactly that form, bundle the script as a worker
 * entry and rewrite the URL, so an app that installs the runtime copies no file by hand.
 */
export function newEngineWorker() {
  return new Worker(new URL("./kiln-worker.js", import.meta.url), { type: "module" });
}

/** An engine running in a dedicated worker that started a WebWorkerEngineHandler. */
export class WebWorkerEngine extends WorkerEngine {
  /**
   * @param {Worker | null} [worker]  e.g. `new Worker(base + "kiln-worker.js", {type: "module"})`;
   *   left out (or null), the runtime's own kiln-worker.js is started (newEngineWorker)
   */
  constructor(worker = null) {
    worker ??= newEngineWorker();
    super(
      (message) => worker.postMessage(message),
      (receive, fail) => {
        worker.addEventListener("message", (event) => receive(event.data));
        // A script that failed to load, or a crashed worker, would leave calls waiting forever.
        worker.addEventListener("error", (event) =>
          fail(new errors.WorkerError(`The engine's worker failed: ${event.message ?? "it could not be started"}`)),
        );
      },
    );
    this.worker = worker;
  }
}

/**
 * An engine running in a service worker that started a ServiceWorkerEngineHandler
 * (kiln-sw.js), shared with the other pages that use it and kept across page reloads.
 */
export class ServiceWorkerEngine extends WorkerEngine {
  #worker;

  /**
   * @param {ServiceWorker} serviceWorker  the active worker of the registration that runs
   *   kiln-sw.js (CreateServiceWorkerEngine finds it)
   */
  constructor(serviceWorker) {
    const container = navigator.serviceWorker;
    super(
      (message) => this.#worker.postMessage(message),
      (receive, fail) => {
        container.addEventListener("message", (event) => receive(event.data));
        // A new version of the worker took over: its engine starts empty (the next request
        // reloads the model), and the calls the old one was running get no answer.
        container.addEventListener("controllerchange", () => {
          const next = container.controller;
          if (!next || next === this.#worker || this.#worker.state !== "redundant") return;
          this.#worker = next;
          fail(new errors.WorkerError("The engine's service worker was replaced during this call; make it again."));
        });
      },
    );
    this.#worker = serviceWorker;
    // Listening with addEventListener does not start the client's message queue by itself.
    container.startMessages();
    setInterval(() => this.#worker.postMessage({ kiln: "keepAlive" }), KEEP_ALIVE_MS);
  }
}

/**
 * Starts an engine in `worker` (a module worker running kiln-worker.js) and loads `model`.
 * With `worker` null, the runtime starts its own kiln-worker.js (newEngineWorker).
 * @param {Worker | null} worker
 * @param {string | string[]} model
 * @param {Parameters<WorkerEngine["reload"]>[1]} [options]
 */
export async function CreateWebWorkerEngine(worker, model, options = {}) {
  const engine = new WebWorkerEngine(worker);
  await engine.reload(model, options);
  return engine;
}

/**
 * Loads `model` in the page's service worker (kiln-sw.js, registered by the page), or finds
 * it already loaded there. Waits for the worker to be active.
 * @param {string | string[]} model
 * @param {Parameters<WorkerEngine["reload"]>[1]} [options]
 */
export async function CreateServiceWorkerEngine(model, options = {}) {
  const container = navigator.serviceWorker;
  if (!container)
    throw new errors.WorkerError("Service workers are not available here (they need https or localhost).");
  const worker = container.controller ?? (await container.ready).active;
  const engine = new ServiceWorkerEngine(worker);
  await engine.reload(model, options);
  return engine;
}
