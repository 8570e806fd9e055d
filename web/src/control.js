/** What `Control.race` gives when the request was aborted before its work finished. */
export const ABORTED = Symbol("aborted");

/**
 * The abort state of one request. Its signal, `interruptGenerate()`, `unload()` and a stream's
 * reader leaving all end it. The generation checks `aborted` between steps; a step it cannot
 * cut short (GPU work already submitted) is raced against the abort, so that the request ends
 * at once while that work finishes on its own.
 */
export class Control {
  #aborted = false;
  #wake = null;
  #whenAborted = null;

  get aborted() {
    return this.#aborted;
  }

  abort() {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#wake?.();
  }

  /**
   * `work`'s result, or ABORTED as soon as the request is aborted. Work left behind goes on;
   * its result and any failure of it are dropped here (its owner sees them).
   * @template T
   * @param {Promise<T>} work
   * @returns {Promise<T | typeof ABORTED>}
   */
  race(work) {
    work.catch(() => {});
    if (this.#aborted) return Promise.resolve(ABORTED);
    this.#whenAborted ??= new Promise((resolve) => (this.#wake = () => resolve(ABORTED)));
    return Promise.race([work, this.#whenAborted]);
  }
}

/**
 * Lets the event loop run (messages, timers, aborts, painting): the CPU backend's kernels run
 * synchronously, and a generation of awaited steps (or a long truncation) would otherwise hold
 * the thread from its first step to its last. A message, then a timer: the timer lets the timers
 * already due run first, and set from a message task it is not clamped to 4 ms as timers set
 * from timers are.
 */
let yieldChannel = null;
const yielded = []; // resolvers waiting for their message

export function yieldToEventLoop() {
  // Node has setImmediate for this; an open MessageChannel would keep its process alive.
  if (typeof globalThis.setImmediate === "function") return new Promise((resolve) => setImmediate(resolve));
  if (!yieldChannel) {
    yieldChannel = new MessageChannel();
    yieldChannel.port1.onmessage = () => setTimeout(yielded.shift(), 0);
  }
  return new Promise((resolve) => {
    yielded.push(resolve);
    yieldChannel.port2.postMessage(null);
  });
}
