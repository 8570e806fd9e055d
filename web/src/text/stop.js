/**
 * Cuts generated text at the first of the request's stop strings. Text that could still
 * turn out to begin a stop string is held back until the next delta settles it, so a
 * streamed reply never shows part of a stop string.
 */
export class StopStrings {
  /** @param {string[]} stops */
  constructor(stops) {
    this.stops = stops.filter((s) => s.length > 0);
    this.pending = ""; // text received but not yet released
    this.stopped = false;
  }

  /**
   * Takes the next piece of generated text; returns the text that is safe to show.
   * After a stop string is found, `stopped` is true and the rest is dropped.
   */
  push(text) {
    if (this.stopped) return "";
    this.pending += text;
    if (this.stops.length === 0) return this.#release(this.pending.length);
    let cut = -1;
    for (const stop of this.stops) {
      const at = this.pending.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      const out = this.pending.slice(0, cut);
      this.pending = "";
      return out;
    }
    // Hold back the longest tail that is a proper prefix of some stop string.
    let hold = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, this.pending.length); k > hold; k--) {
        if (this.pending.endsWith(stop.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return this.#release(this.pending.length - hold);
  }

  /** The held-back text, once generation ended without completing a stop string. */
  flush() {
    return this.stopped ? "" : this.#release(this.pending.length);
  }

  #release(count) {
    const out = this.pending.slice(0, count);
    this.pending = this.pending.slice(count);
    return out;
  }
}
