// The prefix cache's bookkeeping, apart from what it keeps: token sequences in a radix trie,
// each with a value (a KV snapshot in memory, or a file in the browser's storage), looked up by
// the longest prefix they share with a prompt, and dropped least recently used first once their
// bytes pass a budget. Pure: the values are freed through a callback (model.js, prefix_store.js).
//
// Written here rather than taken from a library: the packages that give tries or radix trees
// key them by strings, and a token sequence would have to be encoded into one for every lookup
// (a prompt of thousands of tokens, once per request); LRU packages keep entries by key, not
// by the longest shared prefix.

/**
 * A radix trie of token sequences: each edge holds a run of tokens, each node may end an entry's
 * sequence. `longestMatch` finds how far a prompt agrees with any sequence held.
 * @template V
 */
export class PrefixTrie {
  #root = newNode([], null);

  /**
   * Adds `tokens` (a sequence not held yet) with its value; returns the entry.
   * @param {number[]} tokens
   * @param {V} value
   * @returns {{tokens: number[], value: V}}
   */
  insert(tokens, value) {
    let node = this.#root;
    let i = 0;
    for (;;) {
      if (i === tokens.length) break;
      const child = node.children.get(tokens[i]);
      if (!child) {
        const leaf = newNode(tokens.slice(i), node);
        node.children.set(tokens[i], leaf);
        node = leaf;
        break;
      }
      const k = agreement(child.edge, tokens, i, child.edge.length);
      if (k < child.edge.length) {
        // Split the edge where the sequences part.
        const middle = newNode(child.edge.slice(0, k), node);
        node.children.set(tokens[i], middle);
        child.edge = child.edge.slice(k);
        child.parent = middle;
        middle.children.set(child.edge[0], child);
      }
      node = node.children.get(tokens[i]);
      i += k;
    }
    if (node.entry) throw new Error("PrefixTrie.insert: the sequence is held already");
    node.entry = { tokens, value, node };
    return node.entry;
  }

  /**
   * Removes an entry `insert` returned.
   * @param {{tokens: number[], value: V}} entry
   */
  remove(entry) {
    let node = /** @type {any} */ (entry).node;
    if (node.entry !== entry) return;
    node.entry = null;
    // Nodes that end nothing and lead nowhere go; one with a single child merges into it.
    while (node.parent && !node.entry && node.children.size === 0) {
      node.parent.children.delete(node.edge[0]);
      node = node.parent;
    }
    if (node.parent && !node.entry && node.children.size === 1) {
      const [only] = node.children.values();
      only.edge = node.edge.concat(only.edge);
      only.parent = node.parent;
      node.parent.children.set(only.edge[0], only);
    }
  }

  /**
   * How many of the first `limit` tokens of `tokens` agree with some sequence held (`depth`),
   * and an entry that agrees that far (null where none agrees on a token). Among several, the
   * one `prefer` ranks highest (say, the most recently used).
   * @param {number[]} tokens
   * @param {number} [limit]
   * @param {(entry: {tokens: number[], value: V}) => number} [prefer]
   * @returns {{depth: number, entry: {tokens: number[], value: V} | null}}
   */
  longestMatch(tokens, limit = tokens.length, prefer = () => 0) {
    limit = Math.min(limit, tokens.length);
    let node = this.#root;
    let depth = 0;
    while (depth < limit) {
      const child = node.children.get(tokens[depth]);
      if (!child) break;
      const k = agreement(child.edge, tokens, depth, Math.min(child.edge.length, limit - depth));
      node = child;
      depth += k;
      if (k < child.edge.length) break;
    }
    if (depth === 0) return { depth: 0, entry: null };
    let best = null;
    const stack = [node];
    while (stack.length > 0) {
      const next = stack.pop();
      if (next.entry && (!best || prefer(next.entry) > prefer(best))) best = next.entry;
      stack.push(...next.children.values());
    }
    return { depth, entry: best };
  }
}

function newNode(edge, parent) {
  return { edge, parent, children: new Map(), entry: null };
}

/** How many of `edge`'s first `most` tokens equal those of `tokens` from `from`. */
function agreement(edge, tokens, from, most) {
  let k = 0;
  while (k < most && from + k < tokens.length && edge[k] === tokens[from + k]) k++;
  return k;
}

/**
 * Token sequences with values of known size within a budget of bytes, least recently used out
 * first. A sequence that another held sequence begins with adds nothing (the longer one holds
 * its rows), so adding a sequence drops those it extends, and adding one that a held sequence
 * extends only marks that one used.
 * @template V
 */
export class PrefixCache {
  #trie = new PrefixTrie();
  #used = new Map(); // entry -> use stamp, least recently used first
  #stamp = 0;
  #bytes = 0;

  /**
   * @param {number} budget  bytes the values may hold together
   * @param {(value: V) => void} free  called for each value dropped (or refused)
   */
  constructor(budget, free) {
    this.budget = budget;
    this.free = free;
  }

  /** Bytes the values held take together. */
  get bytes() {
    return this.#bytes;
  }

  get size() {
    return this.#used.size;
  }

  /** The entries, least recently used first. */
  entries() {
    return [...this.#used.keys()];
  }

  /**
   * The entry that agrees longest with `tokens` within its first `limit` ones (the most
   * recently used of those that agree as far), marked used; `depth`: how far it agrees.
   * @param {number[]} tokens
   * @param {number} [limit]
   * @returns {{depth: number, entry: {tokens: number[], value: V, bytes: number} | null}}
   */
  match(tokens, limit = tokens.length) {
    const found = this.#trie.longestMatch(tokens, limit, (e) => this.#used.get(e) ?? -1);
    if (found.entry) this.#touch(found.entry);
    return /** @type {any} */ (found);
  }

  /**
   * How far `tokens` agrees with the sequences held, no entry marked used.
   * @param {number[]} tokens
   */
  depth(tokens) {
    return this.#trie.longestMatch(tokens).depth;
  }

  /**
   * Keeps `tokens` with `value` (`bytes` long), dropping the least recently used entries past
   * the budget. Returns false (and frees `value`) where it adds nothing: a held sequence
   * extends `tokens` (marked used instead), or `value` alone is over the budget.
   * @param {number[]} tokens
   * @param {V} value
   * @param {number} bytes
   */
  add(tokens, value, bytes) {
    const found = this.#trie.longestMatch(tokens);
    if (found.depth === tokens.length && found.entry) {
      this.#touch(found.entry);
      this.free(value);
      return false;
    }
    if (bytes > this.budget || tokens.length === 0) {
      this.free(value);
      return false;
    }
    // Held sequences that `tokens` extends: those that end on its path.
    for (const entry of [...this.#used.keys()]) {
      if (entry.tokens.length < tokens.length && entry.tokens.every((t, i) => t === tokens[i])) this.delete(entry);
    }
    const entry = /** @type {any} */ (this.#trie.insert(tokens, value));
    entry.bytes = bytes;
    this.#bytes += bytes;
    this.#touch(entry);
    while (this.#bytes > this.budget) this.delete(this.#used.keys().next().value);
    return true;
  }

  /**
   * Drops an entry and frees its value.
   * @param {{tokens: number[], value: V, bytes: number}} entry
   */
  delete(entry) {
    if (!this.#used.delete(entry)) return;
    this.#trie.remove(entry);
    this.#bytes -= entry.bytes;
    this.free(entry.value);
  }

  /** Drops every entry. */
  clear() {
    for (const entry of this.entries()) this.delete(entry);
  }

  #touch(entry) {
    this.#used.delete(entry);
    this.#used.set(entry, ++this.#stamp);
  }
}
