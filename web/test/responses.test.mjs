// OpenAI's response objects as responses.js shapes them from generated results (no model):
// the whole form and the streamed form of one request agree, chat and legacy completions.
import assert from "node:assert/strict";
import { test } from "node:test";

import { completionChunks, completionResponse } from "../src/api/responses.js";

// A model of four tokens: "He", "llo", the first and the second byte of "é".
const TOKENS = [[72, 101], [108, 108, 111], [0xc3], [0xa9]];
const model = {
  id: "tiny",
  vocabulary: { bytes: (id) => TOKENS[id] },
  tokenizer: { decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids.flatMap((id) => TOKENS[id]))) },
  lastStats: {
    prefill_tokens: 3,
    prefill_tokens_per_s: 10,
    decode_tokens_per_s: 5,
    time_to_first_token_s: 0.3,
    backend: "wasm",
  },
};
const entry = (id, logprob) => ({
  id,
  logprob,
  top: [
    { id, logprob },
    { id: 0, logprob: -3 },
  ],
});
const RESULT = {
  tokens: [0, 1, 2, 3],
  text: "Helloé",
  finish: "stop",
  logprobs: [entry(0, -0.1), entry(1, -0.2), entry(2, -0.3), entry(3, -0.4)],
  timing: { cached: 2 }, // two of the prompt's tokens were not prefilled
};
const job = (kind, params) => ({ kind, id: "x-1", created: 1, model, params: { n: 1, ...params }, prompt: [0, 1, 0] });

/** What the engine emits while it generates RESULT: per token its text (the "é" once both bytes came). */
async function* events() {
  yield { index: 0, start: true };
  const texts = ["He", "llo", "", "é"];
  for (const [i, text] of texts.entries()) yield { index: 0, text, logprob: RESULT.logprobs[i] };
  yield { index: 0, finish: "stop" };
}

async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

test("a chat completion: message, logprobs (a split character named by its bytes), usage", () => {
  const response = completionResponse(job("chat", { logprobs: true }), [RESULT]);
  assert.equal(response.object, "chat.completion");
  const [choice] = response.choices;
  assert.deepEqual(choice.message, { role: "assistant", content: "Helloé", refusal: null });
  assert.equal(choice.finish_reason, "stop");
  assert.deepEqual(
    choice.logprobs.content.map((c) => c.token),
    ["He", "llo", "bytes:\\xc3", "bytes:\\xa9"],
  );
  assert.deepEqual(choice.logprobs.content[2].bytes, [0xc3]);
  assert.deepEqual(choice.logprobs.content[0].top_logprobs[1], { token: "He", bytes: [72, 101], logprob: -3 });
  assert.deepEqual(response.usage, {
    prompt_tokens: 3,
    completion_tokens: 4,
    total_tokens: 7,
    prompt_tokens_details: { cached_tokens: 2 },
    extra: model.lastStats,
  });
});

test("a text completion with echo: the prompt before the reply, offsets counted from it", () => {
  const response = completionResponse(job("text", { prompt: "Hi ", echo: true, logprobs: true }), [RESULT]);
  const [choice] = response.choices;
  assert.equal(response.object, "text_completion");
  assert.equal(choice.text, "Hi Helloé");
  assert.deepEqual(choice.logprobs.text_offset, [3, 5, 8, 18]);
  assert.deepEqual(choice.logprobs.token_logprobs, [-0.1, -0.2, -0.3, -0.4]);
});

test("streamed chat chunks add up to the whole response's message and logprobs", async () => {
  const params = { logprobs: true };
  const chunks = await collect(completionChunks(job("chat", params), events(), () => ({ total_tokens: 7 })));
  const whole = completionResponse(job("chat", params), [RESULT]).choices[0];
  assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  assert.equal(text, whole.message.content);
  const logprobs = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
  assert.deepEqual(logprobs, whole.logprobs.content);
  const finishes = chunks.map((c) => c.choices[0]?.finish_reason ?? null).filter(Boolean);
  assert.deepEqual(finishes, ["stop"]);
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === null && c.object === "chat.completion.chunk"));
  assert.deepEqual(chunks.at(-1), {
    id: "x-1",
    object: "chat.completion.chunk",
    created: 1,
    model: "tiny",
    choices: [],
    usage: { total_tokens: 7 },
  });
});

test("with tools, a streamed call comes as OpenAI's deltas and finishes as tool_calls", async () => {
  const tools = [{ type: "function", function: { name: "f" } }];
  const reply = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>';
  async function* toolEvents() {
    yield { index: 0, start: true };
    for (let i = 0; i < reply.length; i += 7) yield { index: 0, text: reply.slice(i, i + 7), logprob: null };
    yield { index: 0, finish: "stop" };
  }
  const params = { tools, toolChoice: "auto" };
  const chunks = await collect(completionChunks(job("chat", params), toolEvents(), null));
  const calls = chunks.flatMap((c) => c.choices[0].delta.tool_calls ?? []);
  assert.equal(calls[0].function.name, "f");
  assert.equal(calls.map((c) => c.function.arguments ?? "").join(""), '{"a": 1}');
  assert.equal(chunks.at(-1).choices[0].finish_reason, "tool_calls");
  assert.ok(chunks.every((c) => !("usage" in c)));
  const whole = completionResponse(job("chat", params), [{ ...RESULT, text: reply, logprobs: [] }]).choices[0];
  assert.equal(whole.finish_reason, "tool_calls");
  assert.equal(whole.message.tool_calls[0].function.arguments, calls.map((c) => c.function.arguments ?? "").join(""));
});
