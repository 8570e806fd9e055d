// The engine in a Web Worker or in a service worker, seen from the page: the protocol's client
// (client.js) connected to a dedicated worker (one running kiln-worker.js, or the runtime's own)
// or to the page's service worker (kiln-sw.js), and the functions that make one.
import * as errors from "../errors.js";
import { WorkerEngine } from "./client.js";

// Chrome stops a service worker after about 30 s without events.
const KEEP_ALIVE_MS = 10_000;

/**
 * A dedicated worker running the runtime's own worker script, found beside the bundled runtime
 * (build/kiln.js and its chunks, which esbuild writes to one folder and whose
 * `new URL(..., import.meta.url)` it leaves as written: the URL is relative to the bundle, not
 * to this source file). Written as `new Worker(new URL(literal, import.meta.url), {type: "module"})`
 * on purpose: bundlers (Vite, webpack, Parcel) recognise exactly that form, bundle the script
 * as a worker entry and rewrite the URL, so an app that installs the runtime copies no file by hand.
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
