// The engine's side of the worker protocol: an engine answering the messages of pages (the
// client side is client.js), whatever carries them (worker.js hosts it in a dedicated worker
// or a service worker). No DOM here: this runs in worker scopes.
//
// Protocol. Every message is a plain object whose `kiln` field says what it is; others are
// ignored, so a worker may carry other traffic too. Ids are chosen by each client and are
// only unique per client (a service worker keys them by client).
//
// client -> handler
//   {kiln: "call", id, method, args, progress?, expect?, aborted?, window?}
//       method: a name of the API's method table (api/methods.js), whose kind says how it is
//       answered; args are the engine method's arguments as they are, less what cannot be
//       cloned: the client strips functions and `signal`. `progress: true` asks for the
//       reload's progress reports, or a request's prefill progress reports.
//       `expect: {model, options}` (requests only): the reload the client last made; if this
//       handler has something else loaded (another page reloaded, or the service worker was
//       restarted), it loads that first, so a request is never answered by another model.
//       `aborted: true` (requests only): its AbortSignal had fired before it was sent.
//       `window: n` (streams only): at most n chunks are sent ahead of the client's "read"
//       messages, so that the generation stays where the client reads (and an abort ends it
//       there). Without it, chunks are sent as they come.
//   {kiln: "read", id}        the client's reader took one chunk of the stream
//   {kiln: "abort", id}       the request's AbortSignal fired, or its stream was left early
//   {kiln: "keepAlive"}       sent periodically to a service worker so that it is not stopped
//   {kiln: "hello", lock}     (shared worker) the first message on a port: `lock` names a Web
//                             Lock the client's page holds while it lives (see watchClient)
//   {kiln: "relay", client, lock?, message}   (dedicated worker) a leader tab's page relaying
//                             the message of one of the pages it serves, its own included;
//                             the replies go back wrapped alike, {kiln: "relay", client, message}
// handler -> client
//   {kiln: "progress", id, report}   an initProgressCallback report ({progress, text, ...}),
//                                    or a request's prefillProgressCallback report
//   {kiln: "stream", id}             the request was accepted; its chunks follow
//   {kiln: "chunk", id, chunk}       one streamed chunk
//   {kiln: "return", id, value, loadedModels}   the call's result (after a stream: none)
//   {kiln: "error", id, error: {name, message, code, param}, loadedModels}
//   {kiln: "hello", gpu, threads}    (shared worker) the answer to hello: whether this scope
//                                    has WebGPU, and threads for the CPU backend
//
// Turns. The handler gives the engine one request at a time, the clients' requests in rotation
// (fair_queue.js): with several pages on one engine, each page's next request waits for one
// request of each other page that waits, not for every request sent before it. A reload of
// another model waits its turn too (it would end the request running). interruptGenerate ends
// the requests of the client that calls it, not the other pages'.
//
// A reload of what is already loaded (same model specs and options) does nothing but report
// `{progress: 1, alreadyLoaded: true}`: with a service worker, a page that is reloaded finds
// its model still in GPU memory.

import { invoke, methodKind } from "../api/methods.js";
import { WorkerError } from "../errors.js";
import { FairQueue } from "./fair_queue.js";

// While a stream waits for its client to read, how often the handler checks the client is there.
const GONE_CHECK_MS = 1000;

/** How many chunks of a stream are sent and not yet read, against the client's window. */
class Credit {
  #unread = 0;
  #wake = null;

  /** @param {number} window */
  constructor(window) {
    this.window = window;
  }

  get full() {
    return this.#unread >= this.window;
  }

  sent() {
    this.#unread++;
  }

  read() {
    this.#unread--;
    this.#wake?.();
  }

  /** No more waiting for reads. */
  lift() {
    this.window = Infinity;
    this.#wake?.();
  }

  /** Resolves at the next read (or lift), or after `ms`. */
  wait(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
    });
  }
}

/** An error as a message can carry it; the client rebuilds the class by `name`. */
function serializeError(err) {
  if (!(err instanceof Error) && !(err instanceof DOMException)) return { name: "Error", message: String(err) };
  const out = { name: err.name, message: err.message };
  if (typeof err.code === "string") out.code = err.code;
  if (err.param !== undefined) out.param = err.param;
  return out;
}

/** Answers the protocol's messages with one engine; the transport is the subclasses'. */
export class EngineHandler {
  #loadedKey = null; // what the engine holds, as a reload key; null if unknown or nothing
  #loading = null; // {key, promise, listeners} of the reload in progress
  #requests = new Map(); // client/id -> {client, controller, credit} of a request in progress
  #turns = new FairQueue(); // the engine's work, the clients in rotation
  #gone = new Set(); // clients whose page is gone (watchClient)

  /** @param {import("../engine/engine.js").Engine} engine */
  constructor(engine) {
    this.engine = engine;
  }

  /**
   * Handles one message from a client.
   * @param {any} message
   * @param {(message: object) => void} reply  posts a message back to that client
   * @param {string} [client]  tells clients apart, whose request ids may collide
   */
  handle(message, reply, client = "") {
    if (message?.kiln === "call") return this.#call(message, reply, client);
    const request = this.#requests.get(`${client}/${message?.id}`);
    if (message?.kiln === "read") request?.credit.read();
    if (message?.kiln === "abort") {
      request?.controller.abort();
      request?.credit.lift(); // the client may have left its loop: nothing would be read
    }
  }

  /**
   * Whether the client that sent a request is gone (its page closed): a stream it no longer
   * reads is then aborted, and one that waits for its turn is not run. Dedicated workers go
   * with their page; service workers override this, pages watched by watchClient are known.
   * @param {string} client
   */
  async isGone(client) {
    return this.#gone.has(client);
  }

  /**
   * Watches the page of `client` through the Web Lock named `lock`, which that page holds
   * while it lives: the lock is granted here once the page is gone (closed, crashed or
   * navigated away), and then its running request is aborted and its waiting ones dropped,
   * so that the next page's request runs. A lock rather than a message: a closing page sends
   * none, and a MessagePort or BroadcastChannel says nothing when the other side goes.
   * @param {string} client
   * @param {string} lock
   */
  watchClient(client, lock) {
    navigator.locks.request(lock, () => this.clientGone(client));
  }

  /**
   * The page of `client` is gone (a transport that says so calls this; watchClient does for
   * pages watched by a lock): its running request is aborted and its waiting ones dropped.
   * @param {string} client
   */
  clientGone(client) {
    this.#gone.add(client);
    this.#turns.drop(client, new WorkerError("The page that sent this request is gone."));
    this.#abortClient(client);
  }

  /** Aborts the requests of `client`, running or waiting for their turn. */
  #abortClient(client) {
    for (const request of this.#requests.values()) {
      if (request.client !== client) continue;
      request.controller.abort();
      request.credit.lift();
    }
  }

  async #call({ id, method, args = [], progress, expect, aborted, window }, reply, client) {
    const onProgress = progress ? (report) => reply({ kiln: "progress", id, report }) : undefined;
    const key = `${client}/${id}`;
    const kind = methodKind(method);
    // Registered before anything is awaited: the abort message may be the very next one.
    const controller = kind === "request" ? new AbortController() : null;
    const credit = new Credit(Number.isInteger(window) && window > 0 ? window : Infinity);
    if (controller) this.#requests.set(key, { client, controller, credit });
    if (aborted) controller?.abort();
    try {
      let value;
      if (kind === "load") {
        const load = () => this.#reload(args[0], args[1], onProgress);
        // What is loaded, or loading, is joined at once; another model waits for its turn.
        await (this.#holds(args[0], args[1]) ? load() : this.#turns.run(client, load));
      } else if (controller) {
        value = await this.#turns.run(client, async () => {
          if (await this.isGone(client)) throw new WorkerError("The page that sent this request is gone.");
          return this.#request(id, method, args[0], expect, { controller, credit, onProgress, reply, client });
        });
      } else if (method === "interruptGenerate") {
        // The engine's own interruptGenerate would end the other pages' requests too.
        this.#abortClient(client);
      } else if (kind === "unload" || kind === "call") {
        if (kind === "unload") this.#forget();
        value = await invoke(this.engine, method, args);
      } else {
        throw new Error(`Unknown engine method: ${method}`);
      }
      reply({ kiln: "return", id, value, loadedModels: this.engine.loadedModels });
    } catch (err) {
      // A lost device leaves the models unusable: the next reload must really load.
      if (err?.name === "DeviceLostError") this.#forget();
      reply({ kiln: "error", id, error: serializeError(err), loadedModels: this.engine.loadedModels });
    } finally {
      if (controller) this.#requests.delete(key);
    }
  }

  /** Runs one request in its turn: a stream's chunks are sent as the client reads them. */
  async #request(id, method, request, expect, { controller, credit, onProgress, reply, client }) {
    if (expect) await this.#reload(expect.model, expect.options);
    const isObject = request !== null && typeof request === "object" && !Array.isArray(request);
    const own = { signal: controller.signal, ...(onProgress && { prefillProgressCallback: onProgress }) };
    const result = await invoke(this.engine, method, [isObject ? { ...request, ...own } : request]);
    if (!result || typeof result[Symbol.asyncIterator] !== "function") return result;
    reply({ kiln: "stream", id });
    for await (const chunk of result) {
      reply({ kiln: "chunk", id, chunk });
      credit.sent();
      while (credit.full) {
        await credit.wait(GONE_CHECK_MS);
        if (credit.full && (await this.isGone(client))) {
          controller.abort();
          credit.lift();
        }
      }
    }
    return undefined;
  }

  #forget() {
    this.#loadedKey = null;
    this.#loading = null;
  }

  /** Whether the engine holds, or is loading, `model` with `options`. */
  #holds(model, options = {}) {
    const key = JSON.stringify([model, options]);
    return this.#loading ? this.#loading.key === key : this.#loadedKey === key;
  }

  /** Loads unless the same reload is done or under way; concurrent callers share one load. */
  #reload(model, options = {}, onProgress = undefined) {
    const key = JSON.stringify([model, options]);
    const loading = this.#loading;
    if (loading?.key === key) {
      if (onProgress) loading.listeners.add(onProgress);
      return loading.promise.finally(() => loading.listeners.delete(onProgress));
    }
    if (!loading && this.#loadedKey === key) {
      onProgress?.({
        progress: 1,
        text: `${this.engine.loadedModels.join(", ")} already loaded`,
        alreadyLoaded: true,
      });
      return Promise.resolve();
    }
    const listeners = new Set(onProgress ? [onProgress] : []);
    const initProgressCallback = (report) => listeners.forEach((listener) => listener(report));
    this.#loadedKey = null;
    // An async wrapper so that reload's synchronous argument checks reject like the rest.
    const promise = (async () => this.engine.reload(model, { ...options, initProgressCallback }))();
    const current = { key, promise, listeners };
    this.#loading = current;
    const settle = (loaded) => {
      if (this.#loading !== current) return; // unloaded or superseded meanwhile
      this.#loading = null;
      this.#loadedKey = loaded ? key : null;
    };
    promise.then(
      () => settle(true),
      () => settle(false),
    );
    return promise;
  }
}
