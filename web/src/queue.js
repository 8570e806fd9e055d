/**
 * Items pushed by a producer (the generation loop, or a worker's messages) and read by one
 * async iterator, which ends when the queue is closed (throwing the error it was closed with).
 */
export class AsyncQueue {
  #items = [];
  #wake = null;
  #end = null; // {error} once closed

  push(item) {
    this.#items.push(item);
    this.#wake?.();
  }

  close(error = null) {
    this.#end = { error };
    this.#wake?.();
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      while (this.#items.length) yield this.#items.shift();
      if (this.#end) {
        if (this.#end.error) throw this.#end.error;
        return;
      }
      await new Promise((resolve) => (this.#wake = resolve));
      this.#wake = null;
    }
  }
}
