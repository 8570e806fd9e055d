// The engine's API as a page calls it, on an Engine or across a worker: every method, listed
// once. The in-page Engine (engine/engine.js) and the worker's client (workers/client.js) mount
// what this table lists, the worker's handler (workers/handler.js) answers it, and
// web/test/methods.test.mjs checks it against the EngineInterface that web/types/kiln.d.ts
// declares.

/**
 * Each method by its path on an engine ("chat.completions.create" is
 * engine.chat.completions.create), and its kind: what crossing to a worker takes.
 * - "load": the client resolves model URLs against its page and relays progress reports; the
 *   handler skips a reload of what it holds and shares one under way.
 * - "unload": forwarded; both sides forget the last reload.
 * - "call": forwarded, its arguments and result as they are.
 * - "request": an OpenAI-style request. Its AbortSignal stays with the client (abort messages
 *   carry it), a stream's chunks go at the pace the client reads them, and the client's last
 *   reload goes with it, so that it is never answered by another model.
 * @type {readonly {name: string, kind: "load" | "unload" | "call" | "request"}[]}
 */
export const METHODS = Object.freeze([
  { name: "reload", kind: "load" },
  { name: "unload", kind: "unload" },
  { name: "resetChat", kind: "call" },
  { name: "interruptGenerate", kind: "call" },
  { name: "runtimeStats", kind: "call" },
  { name: "runtimeStatsText", kind: "call" },
  { name: "chat.completions.create", kind: "request" },
  { name: "completions.create", kind: "request" },
  { name: "embeddings.create", kind: "request" },
]);

const KINDS = new Map(METHODS.map(({ name, kind }) => [name, kind]));

/**
 * The kind of the method `name`, or undefined where the API has no such method.
 * @param {unknown} name
 */
export function methodKind(name) {
  return KINDS.get(name);
}

/**
 * Calls the method `name` of `engine` (through its namespaces: engine.chat.completions).
 * @param {object} engine
 * @param {string} name
 * @param {unknown[]} args
 */
export function invoke(engine, name, args) {
  const path = name.split(".");
  const method = path.pop();
  const target = path.reduce((object, key) => object[key], engine);
  return target[method](...args);
}

/**
 * Sets the method `name` of `target` to `fn`, making the namespaces it goes through
 * (target.chat.completions) where they are missing.
 * @param {object} target
 * @param {string} name
 * @param {Function} fn
 */
export function mount(target, name, fn) {
  const path = name.split(".");
  const method = path.pop();
  const namespace = path.reduce((object, key) => (object[key] ??= {}), target);
  namespace[method] = fn;
}

/**
 * Mounts each of `implementations` (method name -> function) on `target`, then checks that
 * every method of the table is a function of `target` (its own, mounted, or its class's): an
 * engine that lacks a method of the table fails when it is made, not when the method is called.
 * @param {object} target
 * @param {Record<string, Function>} implementations
 */
export function mountMethods(target, implementations) {
  for (const [name, fn] of Object.entries(implementations)) {
    if (!KINDS.has(name)) throw new Error(`${name} is not a method of the API (api/methods.js)`);
    mount(target, name, fn);
  }
  const missing = METHODS.filter(({ name }) => typeof name.split(".").reduce((o, k) => o?.[k], target) !== "function");
  if (missing.length > 0)
    throw new Error(`${target.constructor.name} lacks ${missing.map((m) => m.name).join(", ")} (api/methods.js)`);
}
