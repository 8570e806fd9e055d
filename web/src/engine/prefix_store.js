// The prefix cache's entries kept across reloads: files in the Origin Private File System
// (navigator.storage.getDirectory()), one folder per model, read back after a reload so that a
// prompt that begins with a stored prefix skips its prefill.
//
// An entry is one file, `<name>.kv`:
//   8 bytes  "KILNKV01"
//   4 bytes  the header's length (uint32, little-endian)
//   header   JSON: {build, model_id, count, payload_bytes, sha256}
//   body     the prefix's `count` token ids (int32, little-endian), then the KV snapshot's bytes
//            (`payload_bytes`, backends/plans.js snapshotLayout's order)
// `build` names the exact build it was computed by (model.js: the manifest, the kernels, the
// backend and the runtime); `sha256` is the body's. Written under a temporary name and moved to
// its own once whole, so a half-written file is never taken for an entry (temporary files left
// by a closed page are deleted). An entry of another build, or whose length or checksum is
// wrong, is deleted when it is seen, never used.
import { PrefixCache } from "./prefix_cache.js";

const MAGIC = "KILNKV01";
const HEAD = 12; // the magic and the header's length
const FOLDER = "kiln-prefix-cache";
const STALE_TEMPORARY_MS = 10 * 60 * 1000; // a temporary file older than this is a dead write's

/** The storage's root folder, or null where there is none (Node, an insecure page). */
async function storageRoot() {
  try {
    return (await globalThis.navigator?.storage?.getDirectory?.()) ?? null;
  } catch {
    return null;
  }
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The SHA-256 (hex) of a string: a build's identity, an entry's name. */
export function hashText(text) {
  return sha256Hex(new TextEncoder().encode(text));
}

/** Entries of one build of one model in the browser's storage, within a budget of bytes. */
export class PrefixStore {
  #folder;
  #writes = Promise.resolve(); // one write at a time
  #queued = new Set(); // the token sequences being written

  /**
   * The store of `modelId`'s build `build`, its entries read (their headers and tokens; the
   * rest is checked when an entry is used); null where the browser gives no such storage.
   * Entries of another build are deleted.
   * @param {string} modelId
   * @param {string} build
   * @param {number} budget  bytes the entries may take together
   */
  static async open(modelId, build, budget) {
    const root = await storageRoot();
    if (!root || !globalThis.crypto?.subtle) return null;
    try {
      const top = await root.getDirectoryHandle(FOLDER, { create: true });
      const folder = await top.getDirectoryHandle(modelId.replace(/[^A-Za-z0-9._-]/g, "_"), { create: true });
      const store = new PrefixStore(folder, modelId, build, budget);
      await store.#scan();
      return store;
    } catch {
      return null; // storage refused (a quota, a private window): nothing is kept
    }
  }

  constructor(folder, modelId, build, budget) {
    this.#folder = folder;
    this.modelId = modelId;
    this.build = build;
    this.index = new PrefixCache(budget, ({ name }) => this.#remove(name));
  }

  async #scan() {
    const found = [];
    for await (const [name, handle] of this.#folder.entries()) {
      if (handle.kind !== "file") continue;
      const file = await handle.getFile();
      if (!name.endsWith(".kv")) {
        if (Date.now() - file.lastModified > STALE_TEMPORARY_MS) await this.#remove(name);
        continue;
      }
      const head = await readHead(file);
      if (!head || head.build !== this.build) await this.#remove(name);
      else found.push({ name, tokens: head.tokens, bytes: file.size, modified: file.lastModified });
    }
    // The index's use order starts as the files' write order.
    found.sort((a, b) => a.modified - b.modified);
    for (const { name, tokens, bytes } of found) this.index.add(tokens, { name }, bytes);
  }

  async #remove(name) {
    try {
      await this.#folder.removeEntry(name);
    } catch {
      // gone already (another page of this origin)
    }
  }

  /**
   * The stored entry that agrees longest with `tokens` within its first `limit` ones.
   * @returns {{depth: number, entry: {tokens: number[], value: {name: string}} | null}}
   */
  match(tokens, limit = tokens.length) {
    return this.index.match(tokens, limit);
  }

  /**
   * How far `tokens` agrees with what is stored, or being written.
   * @param {number[]} tokens
   */
  depth(tokens) {
    let depth = this.index.depth(tokens);
    for (const queued of this.#queued) {
      let n = 0;
      while (n < queued.length && n < tokens.length && queued[n] === tokens[n]) n++;
      depth = Math.max(depth, n);
    }
    return depth;
  }

  /**
   * An entry's KV bytes, checked whole (header, length, build and checksum); null, the file
   * deleted and the entry forgotten, where any check fails.
   * @returns {Promise<Uint8Array | null>}
   */
  async read(entry) {
    let payload = null;
    try {
      const file = await (await this.#folder.getFileHandle(entry.value.name)).getFile();
      const head = await readHead(file);
      if (head && head.build === this.build && sameTokens(head.tokens, entry.tokens)) {
        const body = new Uint8Array(await file.slice(head.bodyStart).arrayBuffer());
        if ((await sha256Hex(body)) === head.sha256) payload = body.subarray(head.count * 4);
      }
    } catch {
      payload = null;
    }
    if (!payload) this.index.delete(/** @type {any} */ (entry));
    return payload;
  }

  /**
   * Stores `payload`, the KV snapshot of `tokens`' rows (or the promise of it), once the
   * writes asked for before are done; dropping the least recently used entries past the budget.
   * `depth` counts it from now on. Failures are silent: the entry is simply not kept.
   * @param {number[]} tokens
   * @param {Uint8Array | Promise<Uint8Array>} payload
   */
  write(tokens, payload) {
    Promise.resolve(payload).catch(() => {}); // a failed read is this write's failure, below
    this.#queued.add(tokens);
    this.#writes = this.#writes
      .then(() => this.#write(tokens, payload))
      .catch(() => {})
      .finally(() => this.#queued.delete(tokens));
    return this.#writes;
  }

  async #write(tokens, bytes) {
    const payload = await bytes;
    const body = new Uint8Array(tokens.length * 4 + payload.length);
    const ids = new DataView(body.buffer);
    tokens.forEach((t, i) => ids.setInt32(i * 4, t, true));
    body.set(payload, tokens.length * 4);
    const header = new TextEncoder().encode(
      JSON.stringify({
        build: this.build,
        model_id: this.modelId,
        count: tokens.length,
        payload_bytes: payload.length,
        sha256: await sha256Hex(body),
      }),
    );
    const head = new Uint8Array(HEAD);
    head.set(new TextEncoder().encode(MAGIC));
    new DataView(head.buffer).setUint32(8, header.length, true);
    const name = `${(await hashText(`${this.build}:${tokens.join(",")}`)).slice(0, 32)}.kv`;
    const temporary = `${name}.${Math.random().toString(36).slice(2)}.tmp`;
    const handle = await this.#folder.getFileHandle(temporary, { create: true });
    try {
      const writable = await handle.createWritable();
      await writable.write(new Blob([head, header, body]));
      await writable.close();
      await this.#remove(name);
      await handle.move(name);
    } catch (err) {
      await this.#remove(temporary);
      throw err;
    }
    this.index.add(tokens, { name }, HEAD + header.length + body.length);
  }
}

/**
 * An entry file's header and tokens, or null where they do not hold together (the magic, the
 * header's JSON and fields, the file's length).
 * @param {Blob} file
 */
async function readHead(file) {
  try {
    if (file.size < HEAD) return null;
    const first = new Uint8Array(await file.slice(0, HEAD).arrayBuffer());
    if (new TextDecoder().decode(first.subarray(0, 8)) !== MAGIC) return null;
    const length = new DataView(first.buffer).getUint32(8, true);
    const header = JSON.parse(new TextDecoder().decode(await file.slice(HEAD, HEAD + length).arrayBuffer()));
    const { build, count, payload_bytes: payloadBytes, sha256 } = header;
    if (typeof build !== "string" || typeof sha256 !== "string") return null;
    if (!Number.isInteger(count) || count < 1 || !Number.isInteger(payloadBytes) || payloadBytes < 1) return null;
    const bodyStart = HEAD + length;
    if (file.size !== bodyStart + count * 4 + payloadBytes) return null;
    const ids = new DataView(await file.slice(bodyStart, bodyStart + count * 4).arrayBuffer());
    const tokens = Array.from({ length: count }, (_, i) => ids.getInt32(i * 4, true));
    return { build, count, sha256, tokens, bodyStart };
  } catch {
    return null;
  }
}

function sameTokens(a, b) {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}
