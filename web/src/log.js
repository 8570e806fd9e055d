// The one place the runtime reports a failure it recovers from (a cache write refused, a
// grammar engine dropped): the caller goes on, and the console says what happened.

/**
 * @param {string} what  what failed, and what the runtime does instead
 * @param {unknown} [err]
 */
export function warn(what, err = undefined) {
  console.warn(`[kiln] ${what}`, ...(err === undefined ? [] : [err]));
}
