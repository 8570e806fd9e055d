// What differs between a browser and Node.js: reading a model folder, the CPU backend's
// threads and the WebAssembly features its kernels use. Node's built-in modules are imported
// only when running in Node (the bundle leaves `node:*` imports to the host), so a browser
// never loads them.
import { ModelLoadError } from "./errors.js";

/** Whether this is Node.js (or a runtime that says it is one): not a browser or its workers. */
export const IN_NODE =
  typeof globalThis.process === "object" &&
  typeof globalThis.process.versions?.node === "string" &&
  typeof globalThis.window === "undefined" &&
  typeof globalThis.importScripts === "undefined";

/**
 * The URL of a model folder or file given as a URL (absolute, or relative to the page) or, in
 * Node, as a filesystem path.
 * @param {string | URL} location
 */
export async function resolveLocation(location) {
  const text = String(location);
  if (IN_NODE && !/^[a-z][a-z0-9+.-]+:/i.test(text)) {
    const [{ pathToFileURL }, { resolve }] = await Promise.all([import("node:url"), import("node:path")]);
    const url = pathToFileURL(resolve(text));
    // A folder keeps its trailing slash, which later relative URLs resolve against.
    if (/[\\/]$/.test(text) && !url.pathname.endsWith("/")) url.pathname += "/";
    return url;
  }
  return new URL(text, globalThis.location?.href);
}

/**
 * `fetch`, which in Node also reads `file:` URLs (Node's fetch does not): the whole file, or a
 * 404 when it is missing, as a response of the same shape a server gives.
 * @param {string | URL} url
 * @param {RequestInit} [init]
 * @returns {Promise<Response>}
 */
export async function fetchResource(url, init = undefined) {
  const target = new URL(String(url), globalThis.location?.href);
  if (!IN_NODE || target.protocol !== "file:") return fetch(target, init);
  const { readFile } = await import("node:fs/promises");
  try {
    const data = await readFile(target);
    return new Response(data, { status: 200, headers: { "Content-Length": String(data.length) } });
  } catch (err) {
    if (err?.code === "ENOENT" || err?.code === "EISDIR") return new Response(null, { status: 404 });
    throw new ModelLoadError(`Could not read ${target.pathname}: ${err.message}`);
  }
}

/** Cores the CPU backend may run threads on, or 1 where no worker can share memory. */
export async function parallelism() {
  if (IN_NODE) {
    const os = await import("node:os");
    return os.availableParallelism?.() ?? os.cpus().length;
  }
  if (!globalThis.crossOriginIsolated || typeof Worker === "undefined") return 1;
  return navigator.hardwareConcurrency || 1;
}

const THREAD_SCRIPT = "./kiln-thread.js"; // beside the runtime

/**
 * A thread of the CPU backend running kiln-thread.js, sent `message`: a module Worker in a
 * browser, a worker_threads Worker in Node (unreferenced: the threads wait for work forever,
 * and must not keep a finished script's process alive).
 * @param {object} message
 * @param {(message: string) => void} onError
 * @returns {Promise<{terminate: () => void}>}
 */
export async function startThread(message, onError) {
  if (IN_NODE) {
    const { Worker: NodeWorker } = await import("node:worker_threads");
    // A name, not a literal, so that bundlers leave this Node-only URL alone (given a
    // literal, Vite would inline the script as an unused data: URL in the browser bundle).
    const thread = new NodeWorker(new URL(THREAD_SCRIPT, import.meta.url));
    thread.on("error", (err) => onError(err?.message ?? String(err)));
    thread.unref();
    thread.postMessage(message);
    return thread;
  }
  // Written out as `new Worker(new URL(literal, import.meta.url), ...)`:
  // that exact form is what bundlers (Vite, webpack) recognise to bundle the thread script,
  // imports included, as a worker of an app that installed the runtime from npm. Given a
  // URL made elsewhere, Vite inlines the script as a data: URL, whose imports cannot load.
  const thread = new Worker(new URL("./kiln-thread.js", import.meta.url), { type: "module" });
  thread.onerror = (event) => onError(event.message || "the thread script failed");
  thread.postMessage(message);
  return thread;
}

let nodeFlags = null;

/**
 * Turns on, in Node 20 and 21, the WebAssembly features the CPU kernels use that V8 11 still
 * keeps behind a flag (relaxed SIMD; on by default from Node 22). V8 reads the flag when it
 * compiles a module, in every thread of the process, so setting it before the kernels are
 * compiled is enough. A no-op in browsers and in Node 22 and later.
 */
export function enableWasmFeatures() {
  if (!IN_NODE) return Promise.resolve();
  nodeFlags ??= (async () => {
    const major = Number(globalThis.process.versions.node.split(".")[0]);
    if (major >= 22) return;
    const v8 = await import("node:v8");
    v8.setFlagsFromString("--experimental-wasm-relaxed-simd");
  })();
  return nodeFlags;
}

/** What to do, in Node, about WebAssembly features the CPU kernels use that it lacks. */
export const NODE_WASM_ADVICE = "Run Node.js 22 or later, or start node with --experimental-wasm-relaxed-simd";
