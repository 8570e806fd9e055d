// How the loader fetches a model folder's files (loader.js, shards.js): with retries, an HTTP
// error status as the runtime's error, JSON parsed.
import { ModelLoadError } from "../errors.js";
import { fetchResource } from "../platform.js";

// A dropped connection or a busy server is retried this many times, waiting 250 ms, 500 ms,
// 1 s... in between; other failures (404, a corrupt shard) are final at once. Every request
// goes past the browser's HTTP cache to the server ("no-cache": what the cache holds is
// revalidated, so an unchanged file still comes from it): a server or CDN that marks its
// errors cacheable would otherwise have the retries, and every later load, answered with the
// cached error without a request.
const RETRIES = 3;
const BACKOFF_MS = 250;
const RETRIED_STATUS = new Set([408, 429, 500, 502, 503, 504]);

class Retry extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `attempt()` until it succeeds, retrying it after a `Retry` or a network failure
 * (fetch's TypeError, also thrown by a body read cut short) with backoff.
 * @template T
 * @param {string} what  named in the error, e.g. "weight shard params_shard_0.bin"
 * @param {() => Promise<T>} attempt
 * @returns {Promise<T>}
 */
export async function withRetries(what, attempt) {
  for (let tryNumber = 0; ; tryNumber++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof Retry || err instanceof TypeError)) throw err;
      if (tryNumber >= RETRIES)
        throw new ModelLoadError(`Could not download ${what} (${RETRIES + 1} requests): ${err.message}`);
      await sleep(BACKOFF_MS * 2 ** tryNumber);
    }
  }
}

/** A fetch that failed with a status, as an error: retried for a busy server, final otherwise. */
export function checkStatus(response, url) {
  if (response.ok) return response;
  const message = `${url}: HTTP ${response.status}`;
  if (RETRIED_STATUS.has(response.status)) throw new Retry(message);
  throw new ModelLoadError(`Could not fetch ${message}`);
}

/** The parsed JSON file at `url`. */
export function fetchJson(url) {
  return withRetries(String(url), async () => {
    const response = checkStatus(await fetchResource(url, { cache: "no-cache" }), url);
    try {
      return await response.json();
    } catch (err) {
      if (err instanceof SyntaxError) throw new ModelLoadError(`${url} is not valid JSON: ${err.message}`);
      throw err; // the body was cut short: retried
    }
  });
}
