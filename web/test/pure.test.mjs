// Unit tests of the runtime's pure modules under Node's own test runner (no browser, no GPU):
// sampling, stop strings, logits processing, the plan's expression evaluator, request checks,
// embedding requests and responses.
import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_INPUTS, checkEmbeddingRequest, embeddingResponse } from "../src/api/embeddings.js";
import { InvalidRequestError } from "../src/errors.js";
import { exactNumberBounds } from "../src/text/grammar.js";
import { evaluate } from "../src/backends/expr.js";
import { LogitsProcessor, editRows, logSoftmax, topK } from "../src/engine/logits.js";
import { AsyncQueue } from "../src/engine/queue.js";
import { checkChatRequest, checkSignal } from "../src/api/request.js";
import { argmax, makeRandom, sample } from "../src/engine/sampler.js";
import { endlessRef, placeIn } from "../src/api/schema.js";
import { requestStats } from "../src/engine/stats.js";
import { StopStrings } from "../src/text/stop.js";
import { ToolCallParser, parseReply } from "../src/api/tools.js";

test("a seed fixes the random sequence, in [0, 1)", () => {
  const a = makeRandom(42);
  const b = makeRandom(42);
  const c = makeRandom(43);
  const first = Array.from({ length: 1000 }, a);
  assert.deepEqual(first, Array.from({ length: 1000 }, b));
  assert.notDeepEqual(first.slice(0, 10), Array.from({ length: 10 }, c));
  assert.ok(first.every((x) => x >= 0 && x < 1));
});

test("seeds that agree in their low 32 bits (or differ only in sign) give different sequences", () => {
  const draw = (seed) => Array.from({ length: 8 }, makeRandom(seed));
  const pairs = [
    [1, 2 ** 32 + 1],
    [7, 2 ** 40 + 7],
    [0, 2 ** 32],
    [0, 2 ** 52],
    [5, -5],
    [2 ** 53 - 1, 2 ** 53 - 2],
  ];
  for (const [x, y] of pairs) assert.notDeepEqual(draw(x), draw(y), `seeds ${x} and ${y}`);
  const seen = new Set();
  for (let i = 0; i < 2000; i++) seen.add(draw(i * 2 ** 32 + 3)[0]);
  assert.equal(seen.size, 2000);
});

test("sampling draws tokens with softmax(logits / temperature) frequencies", () => {
  const logits = [2.0, 1.0, 0.5, -1.0];
  const temperature = 0.8;
  const weights = logits.map((x) => Math.exp(x / temperature));
  const total = weights.reduce((s, w) => s + w, 0);
  const random = makeRandom(7);
  const counts = [0, 0, 0, 0];
  const draws = 40000;
  for (let i = 0; i < draws; i++) counts[sample(logits, { temperature, top_p: 1 }, random)]++;
  counts.forEach((count, i) => assert.ok(Math.abs(count / draws - weights[i] / total) < 0.01, `token ${i}`));
});

test("temperature 0 is argmax; top_p keeps the smallest set reaching its mass", () => {
  const logits = [0.1, 3.0, 2.9, -5];
  assert.equal(sample(logits, { temperature: 0 }, makeRandom(1)), 1);
  assert.equal(argmax(logits), 1);
  const random = makeRandom(3);
  const seen = new Set(Array.from({ length: 2000 }, () => sample(logits, { temperature: 1, top_p: 0.5 }, random)));
  assert.deepEqual([...seen], [1]); // token 1 alone holds more than half the mass
  const both = new Set(Array.from({ length: 2000 }, () => sample(logits, { temperature: 1, top_p: 0.9 }, random)));
  assert.deepEqual([...both].sort(), [1, 2]);
});

test("top_k keeps the k most likely tokens, their shares renormalized, before top_p", () => {
  const logits = [1.0, 3.0, -Infinity, 2.5, 0.2, 2.0];
  assert.equal(sample(logits, { temperature: 1.5, top_k: 1 }, makeRandom(1)), 1);
  const random = makeRandom(5);
  const draws = 30000;
  const counts = new Map();
  for (let i = 0; i < draws; i++) {
    const token = sample(logits, { temperature: 1, top_k: 3 }, random);
    counts.set(token, (counts.get(token) ?? 0) + 1);
  }
  assert.deepEqual([...counts.keys()].sort(), [1, 3, 5]);
  const weights = [3.0, 2.5, 2.0].map(Math.exp);
  const total = weights.reduce((s, w) => s + w, 0);
  [1, 3, 5].forEach((token, j) => assert.ok(Math.abs(counts.get(token) / draws - weights[j] / total) < 0.01));
  // top_p then counts the mass of the kept tokens alone: token 1 holds 0.46 of all, 0.62 of two.
  const drawn = (params) => [...new Set(Array.from({ length: 2000 }, () => sample(logits, params, random)))].sort();
  assert.deepEqual(drawn({ top_p: 0.6 }), [1, 3]);
  assert.deepEqual(drawn({ top_k: 2, top_p: 0.6 }), [1]);
  // Fewer allowed tokens than top_k (a grammar's mask): the masked ones are never drawn.
  const masked = [-Infinity, 1, -Infinity, -Infinity];
  assert.ok(Array.from({ length: 200 }, () => sample(masked, { top_k: 3 }, random)).every((t) => t === 1));
});

test("a stop string split across deltas is never shown, and held text is released", () => {
  const stops = new StopStrings(["</end>", "STOP"]);
  assert.equal(stops.push("Hello </e"), "Hello ");
  assert.equal(stops.push("nd"), "");
  assert.equal(stops.push("> more"), "");
  assert.ok(stops.stopped);
  const open = new StopStrings(["STOP"]);
  assert.equal(open.push("a ST"), "a ");
  assert.equal(open.push("ILL"), "STILL");
  assert.equal(open.push(" ST"), " ");
  assert.equal(open.flush(), "ST");
  const first = new StopStrings(["bb", "a"]);
  assert.equal(first.push("xxabb"), "xx"); // the earliest stop wins
});

test("the plan's integer expressions follow Python's floor division and modulo", () => {
  const vars = { n: -7, total_len: 10 };
  assert.equal(evaluate(["//", "n", 2], vars), -4);
  assert.equal(evaluate(["%", "n", 2], vars), 1);
  assert.equal(evaluate(["+", ["*", "total_len", 3], ["max", "n", 0]], vars), 30);
  assert.equal(evaluate(["min", 5, ["-", "total_len", 1]], vars), 5);
  assert.throws(() => evaluate("missing", vars), /plan variable missing is not set/);
});

test("penalties and biases change the logits as transformers and OpenAI define them", () => {
  const processor = new LogitsProcessor(
    { repetition_penalty: 2, frequency_penalty: 0.5, presence_penalty: 0.25, logit_bias: { 3: 10 } },
    [0],
  );
  processor.accept(1);
  processor.accept(1);
  const logits = processor.apply([4, -2, 1, 0]);
  // token 0: in the prompt, positive: / 2; token 1: generated twice, negative: * 2, then
  // minus 2 * 0.5 + 0.25; token 2: untouched; token 3: + 10.
  assert.deepEqual(logits, [2, -5.25, 1, 10]);
});

test("the device's edit rows hold one edit per token touched, after a first row", () => {
  const processor = new LogitsProcessor(
    { repetition_penalty: 1.5, frequency_penalty: 0.5, logit_bias: { 7: -3, 0: 1 } },
    [0, 2],
  );
  processor.accept(2);
  const edits = new Map(processor.edits().map(([id, divisor, offset]) => [id, [divisor, offset]]));
  // 0: seen and biased; 2: seen, generated once; 7: biased alone.
  assert.deepEqual(Object.fromEntries(edits), { 0: [1.5, 1], 2: [1.5, -0.5], 7: [1, -3] });
  const rows = editRows(processor.edits(), true);
  assert.deepEqual(Array.from(rows.subarray(0, 3)), [-Infinity, 3, 1]);
  assert.equal(rows.length, 3 * 4);
  assert.deepEqual(Array.from(editRows([], false)), [-Infinity, 0, 0]);
});

test("a request's stats: the page's own milliseconds per decoded token over its choices", () => {
  const timing = (decodeSteps, decodeMs, hostMs) => ({ prefilled: 4, prefillMs: 100, decodeSteps, decodeMs, hostMs });
  const stats = requestStats([timing(10, 1000, 30), timing(5, 600, 15)], "webgpu");
  assert.equal(stats.decode_tokens_per_s, 15 / 1.6);
  assert.equal(stats.host_ms_per_token, 45 / 15);
  assert.equal(requestStats([timing(0, 0, 0)], "wasm").host_ms_per_token, 0);
});

test("random numbers put back are drawn again first, in their order", () => {
  const a = makeRandom(7);
  const b = makeRandom(7);
  const drawn = [a(), a(), a()];
  const again = [b(), b()];
  b.putBack(again);
  assert.deepEqual([b(), b(), b()], drawn);
});

test("log-softmax sums to one in probability; topK is ordered", () => {
  const logs = logSoftmax([1, 2, 3, -Infinity]);
  const mass = logs.reduce((s, x) => s + Math.exp(x), 0);
  assert.ok(Math.abs(mass - 1) < 1e-12);
  assert.equal(logs[3], -Infinity);
  assert.deepEqual(topK([0.1, 0.9, 0.5, 0.7], 3), [1, 3, 2]);
  assert.deepEqual(topK([1, 2], 0), []);
});

test("bad chat requests get InvalidRequestError naming the field", () => {
  const cases = [
    [{ messages: [] }, "messages"],
    [{ messages: [{ role: "robot", content: "hi" }] }, "messages[0].role"],
    [{ messages: [{ role: "user", content: "hi" }], max_tokens: 0 }, "max_tokens"],
    [{ messages: [{ role: "user", content: "hi" }], temperature: "hot" }, "temperature"],
    [{ messages: [{ role: "user", content: "hi" }], unknown: 1 }, "unknown"],
    [{ messages: [{ role: "user", content: "hi" }], model: 7 }, "model"],
  ];
  for (const [request, param] of cases) {
    assert.throws(
      () => checkChatRequest(request, 100),
      (err) => err instanceof InvalidRequestError && err.param === param,
      JSON.stringify(request),
    );
  }
  assert.throws(() => checkSignal({ aborted: false }), InvalidRequestError);
  const ok = checkChatRequest({ messages: [{ role: "developer", content: "be brief" }] }, 100);
  assert.equal(ok.messages[0].role, "system");
});

test("embedding requests: inputs normalized, each bad field named", () => {
  const model = { vocabSize: 100, dimensions: 8 };
  assert.deepEqual(checkEmbeddingRequest({ input: "hi" }, model), {
    inputs: ["hi"],
    format: "float",
    fields: ["input"],
  });
  const ids = checkEmbeddingRequest({ input: [1, 2, 3], encoding_format: "base64", dimensions: 8 }, model);
  assert.deepEqual(ids, { inputs: [[1, 2, 3]], format: "base64", fields: ["input"] });
  const many = checkEmbeddingRequest({ input: ["a", [4, 5]], model: "m", user: "u" }, model);
  assert.deepEqual(many.fields, ["input[0]", "input[1]"]);
  const cases = [
    [{}, "input"],
    [{ input: [] }, "input"],
    [{ input: "" }, "input"],
    [{ input: ["a", ""] }, "input[1]"],
    [{ input: ["a", [1, 100]] }, "input[1]"],
    [{ input: [[-1]] }, "input[0]"],
    [{ input: [1.5] }, "input[0]"],
    [{ input: ["a", null] }, "input[1]"],
    [{ input: Array(MAX_INPUTS + 1).fill("a") }, "input"],
    [{ input: "a", encoding_format: "binary" }, "encoding_format"],
    [{ input: "a", dimensions: 4 }, "dimensions"],
    [{ input: "a", temperature: 1 }, "temperature"],
  ];
  for (const [request, param] of cases) {
    assert.throws(
      () => checkEmbeddingRequest(request, model),
      (err) => err instanceof InvalidRequestError && err.param === param,
      JSON.stringify(request).slice(0, 80),
    );
  }
});

test("an embedding response in base64 holds the float32 bytes, little-endian", () => {
  const vector = Float32Array.from([1, -0.5, 3.25]);
  const out = embeddingResponse("m", [vector], "base64", 3);
  const bytes = Buffer.from(out.data[0].embedding, "base64");
  assert.deepEqual(Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, 3)), [1, -0.5, 3.25]);
  assert.deepEqual(embeddingResponse("m", [vector], "float", 3).data[0].embedding, [1, -0.5, 3.25]);
  assert.deepEqual(out.usage, { prompt_tokens: 3, total_tokens: 3 });
});

test("tool calls are read from a reply as it streams, the same as all at once", () => {
  const reply =
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris \\"}\\" x", "days": [1, {"a": 2}]}}\n</tool_call>\n' +
    '<tool_call>\n{"name": "add", "arguments": {}}\n</tool_call>';
  const whole = parseReply(reply);
  assert.equal(whole.content, "Let me check.");
  assert.deepEqual(
    whole.tool_calls.map((c) => [c.function.name, JSON.parse(c.function.arguments)]),
    [
      ["get_weather", { city: 'Paris "}" x', days: [1, { a: 2 }] }],
      ["add", {}],
    ],
  );
  for (const size of [1, 2, 3, 7, 1000]) {
    const parser = new ToolCallParser();
    const deltas = [];
    for (let i = 0; i < reply.length; i += size) deltas.push(...parser.push(reply.slice(i, i + size)));
    deltas.push(...parser.flush());
    const content = deltas.map((d) => d.content ?? "").join("");
    assert.equal(content, whole.content);
    const calls = [];
    for (const d of deltas.flatMap((x) => x.tool_calls ?? [])) {
      if (d.id) calls[d.index] = { name: d.function.name, arguments: "" };
      calls[d.index].arguments += d.function.arguments;
    }
    assert.deepEqual(
      calls,
      whole.tool_calls.map((c) => ({ name: c.function.name, arguments: c.function.arguments })),
    );
  }
  // Text alone stays text (a "<" that begins no call included); a call cut short is dropped.
  assert.deepEqual(parseReply("a < b and <tool"), { content: "a < b and <tool" });
  const cut = parseReply('<tool_call>\n{"name": "add", "arguments": {"x": 1');
  assert.deepEqual(cut, { content: "" });
  // A raw control character inside a string (the grammar lets one through) comes escaped.
  const raw = parseReply('<tool_call>\n{"name": "note", "arguments": {"text": "a\nb\tc"}}\n</tool_call>');
  assert.deepEqual(JSON.parse(raw.tool_calls[0].function.arguments), { text: "a\nb\tc" });
});

test("number bounds are rewritten so that XGrammar's integer-part bounds are exact", () => {
  const level = exactNumberBounds({ type: "number", minimum: 0, maximum: 1, description: "d" });
  assert.deepEqual(level, {
    description: "d",
    anyOf: [
      { type: "integer", minimum: 0, maximum: 1 },
      { type: "number", minimum: 0, maximum: 0, description: "d" },
    ],
  });
  const nested = exactNumberBounds({ type: "object", properties: { t: { type: "number", minimum: -5 } } });
  assert.deepEqual(nested.properties.t.anyOf[1], { type: "number", minimum: -4 });
  assert.deepEqual(exactNumberBounds({ type: "number", maximum: 0.5 }), { type: "number", maximum: 0.5 });
});

test("a producer waiting for room goes on when the reader takes an item, or leaves", async () => {
  const queue = new AsyncQueue();
  const produced = [];
  const producer = (async () => {
    for (let i = 0; i < 10; i++) {
      queue.push(i);
      produced.push(i);
      await queue.room(2);
    }
    queue.close();
  })();
  const reader = queue[Symbol.asyncIterator]();
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(produced, [0, 1]); // two ahead of a reader that has read nothing
  assert.equal((await reader.next()).value, 0);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(produced, [0, 1, 2]);
  queue.release(); // the reader left: the producer runs to its end
  await producer;
  assert.equal(produced.length, 10);
});

test("a $ref cycle with no way out is found, one with a way out is not", () => {
  const endless = [
    [{ $ref: "#" }, { ref: "#", at: "" }],
    [
      { type: "object", properties: { next: { $ref: "#" } }, required: ["next"] },
      { ref: "#", at: "/properties/next" },
    ],
    [
      { $defs: { a: { $ref: "#/$defs/b" }, b: { allOf: [{ $ref: "#/$defs/a" }] } }, $ref: "#/$defs/a" },
      { ref: "#/$defs/a", at: "" },
    ],
    [
      { type: "array", minItems: 1, items: { $ref: "#/$defs/n" }, $defs: { n: { $ref: "#" } } },
      { ref: "#/$defs/n", at: "/items" },
    ],
  ];
  for (const [schema, found] of endless) assert.deepEqual(endlessRef(schema), found, JSON.stringify(schema));
  const ending = [
    { type: "object", properties: { next: { $ref: "#" } } }, // optional: a linked list ends
    { type: "array", items: { $ref: "#" } }, // the empty array
    { anyOf: [{ type: "null" }, { type: "object", properties: { a: { $ref: "#" } }, required: ["a"] }] },
    { $ref: "https://example.com/other.json" }, // not followed
    { type: "string" },
  ];
  for (const schema of ending) assert.equal(endlessRef(schema), null, JSON.stringify(schema));
  assert.equal(
    placeIn("tools[0].function.parameters", "/properties/a~1b/$ref"),
    "tools[0].function.parameters.properties.a/b.$ref",
  );
});
