// The scheduler of an engine's work: one task at a time on the models (they share the GPU
// queue and their KV caches), prompts made in the order their requests came, and the requests
// in progress, each with its Control, which interruptGenerate() aborts.
import { Control } from "../control.js";

/** @typedef {import("./model.js").LoadedModel} LoadedModel */

export class Scheduler {
  #turn = Promise.resolve(); // models share the GPU queue and their KV caches: one task at a time
  #intake = Promise.resolve(); // prompts are made in the order requests came, so they queue in it
  #inProgress = new Set(); // the Controls of requests not ended: truncating, waiting or generating

  /**
   * Runs `task` once the tasks given before it have ended. A failure of a task on `model`
   * after its device was lost is that loss.
   * @template T
   * @param {LoadedModel | null} model
   * @param {() => T | Promise<T>} task
   * @returns {Promise<T>}
   */
  exclusive(model, task) {
    const guarded = async () => {
      try {
        return await task();
      } catch (err) {
        // A lost device fails the pending GPU calls before `device.lost` settles.
        await new Promise((resolve) => setTimeout(resolve, 0));
        throw model?.lostError ?? err;
      }
    };
    const run = this.#turn.then(guarded, guarded);
    this.#turn = run.catch(() => {});
    return run;
  }

  /**
   * Runs `task` (the making of a prompt, which yields to the event loop) after those of the
   * requests that came before: a later request cannot overtake it.
   * @template T
   * @param {() => Promise<T>} task
   * @returns {Promise<T>}
   */
  inOrder(task) {
    const run = this.#intake.then(task);
    this.#intake = run.catch(() => {});
    return run;
  }

  /**
   * A request's Control, in progress (truncating, waiting for its turn, generating) until
   * `end(control)`: `interrupt()` aborts it, and so does `signal` (the request's AbortSignal).
   * @param {AbortSignal} [signal]
   */
  begin(signal = undefined) {
    const control = new Control();
    if (signal) {
      if (signal.aborted) control.abort();
      else signal.addEventListener("abort", () => control.abort(), { once: true });
    }
    this.#inProgress.add(control);
    return control;
  }

  /** @param {Control} control */
  end(control) {
    this.#inProgress.delete(control);
  }

  /** Aborts every request in progress; each finishes with finish_reason "abort". */
  interrupt() {
    for (const control of this.#inProgress) control.abort();
  }
}
