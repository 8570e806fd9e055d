// The turns of an engine shared by several clients (pages): one task at a time, the clients in
// rotation. Each client's tasks run in the order it gave them; a client whose task ran goes to
// the back of the rotation, behind the clients that waited meanwhile, so that a page that sends
// ten requests holds another page's one back by one request, not by ten. (A plain chain of
// promises, as the engine's scheduler keeps, is first come, first served per request.)

/** @typedef {{task: () => any, resolve: (value: any) => void, reject: (error: any) => void}} Turn */

export class FairQueue {
  /** @type {Map<string, Turn[]>} waiting clients, in the order of the rotation */
  #waiting = new Map();
  /** @type {string | null} the client whose task runs */
  #running = null;
  /** @type {Turn[]} the running client's next tasks, kept out of the rotation until it ends */
  #runningNext = [];

  /**
   * Runs `task` once the turn of `client` comes; resolves or rejects as the task does.
   * @template T
   * @param {string} client
   * @param {() => T | Promise<T>} task
   * @returns {Promise<T>}
   */
  run(client, task) {
    return new Promise((resolve, reject) => {
      const turn = { task, resolve, reject };
      if (client === this.#running) this.#runningNext.push(turn);
      else if (this.#waiting.has(client)) this.#waiting.get(client)?.push(turn);
      else this.#waiting.set(client, [turn]);
      this.#next();
    });
  }

  /**
   * Drops the tasks of `client` that wait (its page is gone), rejecting them with `error`.
   * @param {string} client
   * @param {Error} error
   */
  drop(client, error) {
    const dropped = client === this.#running ? this.#runningNext.splice(0) : (this.#waiting.get(client) ?? []);
    this.#waiting.delete(client);
    for (const turn of dropped) turn.reject(error);
  }

  /** How many tasks wait, the running one left out. */
  get waiting() {
    let count = this.#runningNext.length;
    for (const turns of this.#waiting.values()) count += turns.length;
    return count;
  }

  async #next() {
    if (this.#running !== null) return;
    const first = this.#waiting.entries().next();
    if (first.done) return;
    const [client, turns] = first.value;
    this.#waiting.delete(client);
    const turn = /** @type {Turn} */ (turns.shift());
    this.#running = client;
    this.#runningNext = turns;
    try {
      turn.resolve(await turn.task());
    } catch (err) {
      turn.reject(err);
    }
    // Back of the rotation, behind the clients that came while it ran.
    if (this.#runningNext.length) this.#waiting.set(client, this.#runningNext);
    this.#running = null;
    this.#runningNext = [];
    this.#next();
  }
}
