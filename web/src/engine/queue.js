/**
 * Items pushed by a producer (the generation loop, or a worker's messages) and read by one
 * async iterator, which ends when the queue is closed (throwing the error it was closed with).
 * A producer that must not run far ahead of its reader awaits `room(limit)` after a push.
 */
export class AsyncQueue {
  #items = [];
  #wake = null;
  #end = null; // {error} once closed
  #room = null; // wakes the producer waiting in room()
  #released = false;

  push(item) {
    this.#items.push(item);
    this.#wake?.();
  }

  close(error = null) {
    this.#end = { error };
    this.#wake?.();
  }

  /**
   * Resolves once fewer than `limit` items wait to be read, or the reader has left
   * (`release`); undefined when that is so already.
   */
  room(limit) {
    if (this.#released || this.#items.length < limit) return undefined;
    return new Promise((resolve) => (this.#room = resolve));
  }

  /** The reader has left: a producer waiting for room, and every later one, goes on. */
  release() {
    this.#released = true;
    this.#room?.();
    this.#room = null;
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      while (this.#items.length) {
        const item = this.#items.shift();
        this.#room?.();
        this.#room = null;
        yield item;
      }
      if (this.#end) {
        if (this.#end.error) throw this.#end.error;
        return;
      }
      await new Promise((resolve) => (this.#wake = resolve));
      this.#wake = null;
    }
  }
}
