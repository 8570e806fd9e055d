// One engine for every page of an origin: the protocol's client (client.js) connected either to
// a SharedWorker that holds the engine (kiln-shared-worker.js), or to the engine of a leader
// tab, one of the pages themselves, elected with a Web Lock and reached over a BroadcastChannel.
//
// Which one. Chromium (156, checked in its headless build here) gives a shared worker WebGPU
// (navigator.gpu, an adapter and a device), but no `Worker` constructor and no cross-origin
// isolation, hence no SharedArrayBuffer: the CPU backend would run there on one thread where
// the page has one per core. So the shared worker is used where the backend that would run
// has all it has in a page (WebGPU; threads where the page would have them), and a leader tab
// where it does not, or where there is no SharedWorker at all.
//
// The leader tab. Every page asks for the Web Lock `kiln-leader`; the one granted it runs the
// engine and says so on the BroadcastChannel `kiln-engine`; the others send their calls there,
// addressed to it. The leader runs the engine in a dedicated worker of its own (kiln-worker.js),
// relaying the other pages' calls to it: there the CPU backend has its threads, and the
// leader's page stays responsive while it serves the others. Each page holds a lock of its own while it
// lives (`kiln-page:ID`): the leader asks for a follower's to learn that it is gone (its
// requests are then aborted, its turn freed), and the followers ask for the leader's. When
// the leader goes, its leader lock passes to another page, which loads the model again on its
// first request (every request carries the last reload of its page); the calls the old leader
// had not begun to answer are sent to the new one, and a stream it was sending fails with a
// WorkerError.
import { isFallbackAdapter, requestAdapter } from "../backends/device.js";
import * as errors from "../errors.js";
import { WorkerEngine } from "./client.js";
import { newEngineWorker } from "./worker_client.js";

/** @typedef {{gpu: boolean, threads: boolean}} Abilities  what a scope offers the engine */

/**
 * Where the shared engine runs: "shared-worker" unless the worker lacks something of the
 * page's that `backend` would use, or there is no SharedWorker (`worker` null): then "tab".
 * @param {Abilities} page
 * @param {Abilities | null} worker
 * @param {"webgpu" | "wasm"} backend
 * @returns {"shared-worker" | "tab"}
 */
export function chooseHost(page, worker, backend) {
  if (!worker) return "tab";
  const lacks = backend === "webgpu" ? page.gpu && !worker.gpu : page.threads && !worker.threads;
  return lacks ? "tab" : "shared-worker";
}

/** The backend a reload with `backend` runs on here, as the engine's "auto" chooses. */
async function effectiveBackend(backend = "auto") {
  if (backend !== "auto") return backend;
  try {
    return isFallbackAdapter(await requestAdapter()) ? "wasm" : "webgpu";
  } catch {
    return "wasm";
  }
}

/** A lock held until the page goes; resolves once it is held. */
function holdLock(name) {
  return new Promise((held) =>
    navigator.locks.request(name, () => {
      held(undefined);
      return new Promise(() => {});
    }),
  );
}

let page = null; // this page's {id, lock}, its lock held
/** This page's id and the name of the Web Lock it holds while it lives. */
function thisPage() {
  page ??= (async () => {
    const id = crypto.randomUUID();
    const lock = `kiln-page:${id}`;
    await holdLock(lock);
    return { id, lock };
  })();
  return page;
}

/**
 * The runtime's own shared worker script (kiln-shared-worker.js), found beside the bundled
 * runtime; written in the form bundlers recognise, as newEngineWorker is (its options a
 * literal: Vite refuses options it cannot evaluate while bundling).
 */
export function newSharedEngineWorker() {
  return new SharedWorker(new URL("./kiln-shared-worker.js", import.meta.url), { type: "module", name: "kiln" });
}

/** The calls of one page to a leader tab's engine, whichever tab leads. */
class TabRelay {
  #channel;
  #id;
  #lock;
  #leader = null; // the id of the relay that runs the engine; null while unknown
  #worker = null; // the engine's dedicated worker, while this relay leads
  #relayed = new Map(); // "client id" -> [client, id] of the calls relayed to it and not answered
  #failure = null; // why the worker failed, once it has
  #pending = new Map(); // call id -> {message, streaming} not yet answered
  #receive = (message) => {};

  /**
   * @param {{id: string, lock: string}} page
   * @param {number} index  tells this page's relays apart
   */
  constructor(page, index) {
    this.#id = `${page.id}/${index}`;
    this.#lock = page.lock;
    this.#channel = new BroadcastChannel("kiln-engine");
    this.#channel.addEventListener("message", (event) => this.#onMessage(event.data));
    navigator.locks.request("kiln-leader", () => this.#lead());
    this.#channel.postMessage({ kilnTab: "who" });
  }

  get leading() {
    return this.#worker !== null;
  }

  /** @param {(message: any) => void} receive */
  connect(receive) {
    this.#receive = receive;
  }

  /** @param {any} message */
  post(message) {
    const copy = structuredClone(message); // fails as postMessage would, for the client to report
    if (copy.kiln === "call") this.#pending.set(copy.id, { message: copy, streaming: false });
    const pending = this.#pending.get(copy.id);
    if (copy.kiln === "abort" && pending) pending.message.aborted = true; // if sent again
    if (this.#leader !== null) this.#send(copy);
  }

  #send(message) {
    if (this.#leader === this.#id) {
      this.#relay(this.#id, undefined, message);
    } else {
      this.#channel.postMessage({ kilnTab: "call", from: this.#id, to: this.#leader, lock: this.#lock, message });
    }
  }

  /** A message of the leader's handler, to this page's client. */
  #deliver(message) {
    const pending = this.#pending.get(message?.id);
    if (pending && message.kiln === "stream") pending.streaming = true;
    if (message?.kiln === "return" || message?.kiln === "error") this.#pending.delete(message.id);
    this.#receive(message);
  }

  #onMessage(data) {
    if (data?.kilnTab === "leader") this.#follow(data.from, data.lock);
    else if (data?.kilnTab === "who" && this.leading) this.#announce();
    else if (data?.to !== this.#id) return;
    else if (data.kilnTab === "reply" && data.from === this.#leader) this.#deliver(data.message);
    else if (data.kilnTab === "call" && this.#worker) this.#relay(data.from, data.lock, data.message);
  }

  /** The leader's part: a call of a page (this one included) to the engine's worker. */
  #relay(client, lock, message) {
    if (message?.kiln === "call") {
      if (this.#failure) return this.#reply(client, failed(message.id, this.#failure));
      this.#relayed.set(`${client} ${message.id}`, [client, message.id]);
    }
    this.#worker.postMessage({ kiln: "relay", client, lock, message });
  }

  /** The leader's part: a message of the engine's worker to a page (this one included). */
  #reply(client, message) {
    if (message?.kiln === "return" || message?.kiln === "error") this.#relayed.delete(`${client} ${message.id}`);
    if (client === this.#id) this.#deliver(message);
    else this.#channel.postMessage({ kilnTab: "reply", from: this.#id, to: client, message });
  }

  /** Granted the leader lock: runs the engine until the page goes. */
  #lead() {
    const worker = newEngineWorker();
    worker.addEventListener("message", ({ data }) => {
      if (data?.kiln === "relay") this.#reply(data.client, data.message);
    });
    // The worker's script failed or the worker crashed: the calls it had, and those that come
    // later, fail as a WebWorkerEngine's do.
    worker.addEventListener("error", (event) => {
      this.#failure = `The shared engine's worker failed: ${event.message ?? "it could not be started"}`;
      for (const [client, id] of [...this.#relayed.values()]) this.#reply(client, failed(id, this.#failure));
    });
    this.#worker = worker;
    this.#announce();
    this.#follow(this.#id, this.#lock);
    return new Promise(() => {});
  }

  #announce() {
    this.#channel.postMessage({ kilnTab: "leader", from: this.#id, lock: this.#lock });
  }

  /** Sends this page's calls to the relay `id`, which leads now and whose page holds `lock`. */
  #follow(id, lock) {
    if (id === this.#leader) return;
    this.#leader = id;
    if (id !== this.#id) {
      navigator.locks.request(lock, () => {
        if (this.#leader === id) this.#leader = null; // calls wait for the next leader
      });
    }
    for (const [callId, pending] of this.#pending) {
      if (!pending.streaming) this.#send(pending.message);
      else this.#deliver(failed(callId, "The tab that ran the shared engine closed during this stream; ask again."));
    }
  }
}

let relays = 0;

/** The handler's answer to call `id` that failed with a WorkerError saying `message`. */
function failed(id, message) {
  return { kiln: "error", id, error: { name: "WorkerError", code: "worker_failed", message } };
}

/**
 * An engine shared by every page of the origin that makes one: held by a
 * SharedWorker (`host` "shared-worker") or by one of the pages (`host` "tab"; `leading` says
 * whether it is this one). CreateSharedWorkerEngine makes one.
 */
export class SharedEngine extends WorkerEngine {
  #relay;

  /**
   * @param {"shared-worker" | "tab"} host
   * @param {(message: object) => void} post
   * @param {(receive: (message: any) => void, fail: (error: Error) => void) => void} connect
   * @param {TabRelay | null} [relay]
   */
  constructor(host, post, connect, relay = null) {
    super(post, connect);
    this.host = host;
    this.#relay = relay;
  }

  /** Whether this page runs the engine (a leader tab). */
  get leading() {
    return this.#relay?.leading ?? false;
  }
}

/** Says hello to a shared worker: gives it this page's lock, and learns what it offers. */
function greet(worker, lock) {
  return new Promise((resolve, reject) => {
    const port = worker.port;
    const onMessage = (event) => {
      if (event.data?.kiln !== "hello") return;
      port.removeEventListener("message", onMessage);
      resolve({ gpu: Boolean(event.data.gpu), threads: Boolean(event.data.threads) });
    };
    port.addEventListener("message", onMessage);
    worker.addEventListener("error", () =>
      reject(new errors.WorkerError("The engine's shared worker failed to start.")),
    );
    port.start();
    port.postMessage({ kiln: "hello", lock });
  });
}

/**
 * Connects to the engine every page of the origin shares (see SharedEngine) and loads `model`
 * there, or finds it loaded. `worker` is a SharedWorker running kiln-shared-worker.js, or null
 * for the runtime's own (newSharedEngineWorker). `options.host` "auto" (the default) takes the
 * shared worker where it has what the backend needs and a leader tab where not (see above).
 * @param {SharedWorker | null} worker
 * @param {string | string[]} model
 * @param {Parameters<WorkerEngine["reload"]>[1] & {host?: "auto" | "shared-worker" | "tab"}} [options]
 */
export async function CreateSharedWorkerEngine(worker, model, options = {}) {
  const { host = "auto", ...reload } = options ?? {};
  if (!["auto", "shared-worker", "tab"].includes(host))
    throw new errors.InvalidRequestError("host", 'must be "auto", "shared-worker" or "tab"');
  if (!globalThis.navigator?.locks)
    throw new errors.WorkerError(
      "A shared engine needs Web Locks, which this page lacks (they need https or localhost).",
    );
  const me = await thisPage();
  const hasSharedWorker = typeof SharedWorker === "function";
  if (host === "shared-worker" && !hasSharedWorker && !worker)
    throw new errors.WorkerError("This browser has no SharedWorker.");
  let where = host === "auto" ? null : host;
  if (where !== "tab" && (worker || hasSharedWorker)) {
    worker ??= newSharedEngineWorker();
    const offers = await greet(worker, me.lock);
    if (!where) {
      const threads =
        Boolean(globalThis.crossOriginIsolated) && (navigator.hardwareConcurrency ?? 1) > 1 && reload.threads !== 1;
      where = chooseHost({ gpu: Boolean(navigator.gpu), threads }, offers, await effectiveBackend(reload.backend));
    }
  }
  let engine;
  if (where === "shared-worker" && worker) {
    const port = worker.port;
    engine = new SharedEngine(
      "shared-worker",
      (message) => port.postMessage(message),
      (receive, fail) => {
        port.addEventListener("message", (event) => receive(event.data));
        worker.addEventListener("error", (event) =>
          fail(new errors.WorkerError(`The engine's shared worker failed: ${event.message ?? "it stopped"}`)),
        );
      },
    );
  } else {
    worker?.port.close(); // asked, and not used
    const relay = new TabRelay(me, relays++);
    engine = new SharedEngine(
      "tab",
      (message) => relay.post(message),
      (receive) => relay.connect(receive),
      relay,
    );
  }
  await engine.reload(model, reload);
  return engine;
}
