// The engine hosted in a dedicated worker or a service worker: the protocol's handler
// (handler.js) listening to the scope's messages and replying to the client that sent each.
import { Engine } from "../engine/engine.js";
import { EngineHandler } from "./handler.js";

/**
 * Hosts an engine in a dedicated worker: `new WebWorkerEngineHandler()` in the worker's
 * script (kiln-worker.js does this), then `CreateWebWorkerEngine(worker, model)` in the page.
 */
export class WebWorkerEngineHandler extends EngineHandler {
  /**
   * @param {Engine} [engine]
   * @param {any} [scope]  the worker's global scope
   */
  constructor(engine = new Engine(), scope = globalThis) {
    super(engine);
    const watched = new Set();
    scope.addEventListener("message", ({ data }) => {
      if (data?.kiln !== "relay") return this.handle(data, (m) => scope.postMessage(m));
      // A leader tab's page relaying its own calls and the other pages' (shared.js).
      const { client, lock, message } = data;
      if (typeof lock === "string" && !watched.has(client)) {
        watched.add(client);
        this.watchClient(client, lock);
      }
      this.handle(message, (m) => scope.postMessage({ kiln: "relay", client, message: m }), client);
    });
  }
}

/**
 * Hosts an engine in a service worker, shared by every page that talks to it; it outlives
 * page reloads (kiln-sw.js starts one). Replies go to the client that asked.
 */
export class ServiceWorkerEngineHandler extends EngineHandler {
  /**
   * @param {Engine} [engine]
   * @param {any} [scope]  the service worker's global scope
   */
  constructor(engine = new Engine(), scope = globalThis) {
    super(engine);
    this.scope = scope;
    scope.addEventListener("message", (event) => {
      const client = event.source;
      if (!client || typeof client.postMessage !== "function") return;
      this.handle(event.data, (m) => client.postMessage(m), client.id);
    });
  }

  /** @param {string} client */
  async isGone(client) {
    return !(await this.scope.clients.get(client));
  }
}

/**
 * Hosts an engine in a SharedWorker, one for every page of the origin that connects to it
 * (kiln-shared-worker.js starts one; CreateSharedWorkerEngine connects). Each port is a client:
 * its first message names the Web Lock its page holds, by which the handler learns that the
 * page is gone.
 */
export class SharedWorkerEngineHandler extends EngineHandler {
  #ports = 0;

  /**
   * @param {Engine} [engine]
   * @param {any} [scope]  the shared worker's global scope
   */
  constructor(engine = new Engine(), scope = globalThis) {
    super(engine);
    scope.addEventListener("connect", (event) => {
      const port = event.ports[0];
      const client = `port-${++this.#ports}`;
      const reply = (m) => port.postMessage(m);
      port.addEventListener("message", (message) => {
        const data = message.data;
        if (data?.kiln !== "hello") return this.handle(data, reply, client);
        if (typeof data.lock === "string") this.watchClient(client, data.lock);
        // What the page weighs against its own (CreateSharedWorkerEngine): Chromium gives a
        // shared worker WebGPU, but neither nested workers nor cross-origin isolation, so the
        // CPU backend runs there on one thread.
        const threads = Boolean(scope.crossOriginIsolated) && typeof scope.Worker === "function";
        reply({ kiln: "hello", gpu: Boolean(scope.navigator?.gpu), threads });
      });
      port.start();
    });
  }
}
