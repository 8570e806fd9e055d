// The fields of chat and text completion requests, described once: the request checks
// (request.js) are made from this table, the request fuzzer (tests/fuzz_requests.js) takes its
// fields and their ranges from it, and web/test/request_fields.test.mjs holds the request types
// of web/types/kiln.d.ts to it. Plain data that imports nothing: the fuzzer loads it in pages.

const BOTH = Object.freeze(["chat", "text"]);
const CHAT = Object.freeze(["chat"]);
const TEXT = Object.freeze(["text"]);

/**
 * Each field by its name, in the order the checks read them: `kinds`, the requests that take
 * it ("chat": chat.completions, "text": completions; none: refused as not supported), and what
 * it holds. `type` is "number", "integer", "boolean", "string", "array", "object", "function",
 * "AbortSignal" or a list of those; `minimum`, `maximum` and `exclusiveMinimum` bound a number
 * and `enum` lists a string's values, as in JSON Schema. request.js checks a field by these
 * where they say it all, and by a check of its own otherwise. `ignored`: accepted and without
 * effect, since it only concerns a hosted service. A field whose type differs between the
 * requests is listed once for each.
 * @type {readonly {name: string, kinds: readonly ("chat" | "text")[], type?: string | readonly string[],
 *   minimum?: number, maximum?: number, exclusiveMinimum?: number, enum?: readonly string[], ignored?: boolean}[]}
 */
export const REQUEST_FIELDS = Object.freeze(
  [
    { name: "messages", kinds: CHAT, type: "array" },
    { name: "prompt", kinds: TEXT, type: ["string", "array"] },
    { name: "max_completion_tokens", kinds: CHAT, type: "integer", minimum: 1 },
    { name: "logprobs", kinds: CHAT, type: "boolean" },
    { name: "logprobs", kinds: TEXT, type: "integer", minimum: 0, maximum: 5 },
    { name: "top_logprobs", kinds: CHAT, type: "integer", minimum: 0, maximum: 20 },
    { name: "echo", kinds: TEXT, type: "boolean" },
    { name: "best_of", kinds: TEXT, type: "integer" },
    { name: "parallel_tool_calls", kinds: CHAT, type: "boolean" },
    { name: "tools", kinds: CHAT, type: "array" },
    { name: "tool_choice", kinds: CHAT, type: ["string", "object"] },
    { name: "temperature", kinds: BOTH, type: "number", minimum: 0, maximum: 2 },
    { name: "top_p", kinds: BOTH, type: "number", minimum: 0, maximum: 1 },
    { name: "top_k", kinds: BOTH, type: "integer", minimum: 0 },
    { name: "frequency_penalty", kinds: BOTH, type: "number", minimum: -2, maximum: 2 },
    { name: "presence_penalty", kinds: BOTH, type: "number", minimum: -2, maximum: 2 },
    { name: "repetition_penalty", kinds: BOTH, type: "number", exclusiveMinimum: 0 },
    { name: "n", kinds: BOTH, type: "integer", minimum: 1, maximum: 128 },
    { name: "max_tokens", kinds: BOTH, type: "integer", minimum: 1 },
    // JavaScript's safe integers.
    { name: "seed", kinds: BOTH, type: "integer", minimum: -(2 ** 53 - 1), maximum: 2 ** 53 - 1 },
    { name: "stream", kinds: BOTH, type: "boolean" },
    { name: "stream_options", kinds: BOTH, type: "object" },
    { name: "stop", kinds: BOTH, type: ["string", "array"] },
    { name: "logit_bias", kinds: BOTH, type: "object" },
    { name: "response_format", kinds: BOTH, type: "object" },
    { name: "truncation", kinds: BOTH, type: "string", enum: ["auto", "disabled"] },
    { name: "signal", kinds: BOTH, type: "AbortSignal" },
    { name: "prefillProgressCallback", kinds: BOTH, type: "function" },
    { name: "ignore_eos", kinds: BOTH, type: "boolean" },
    { name: "model", kinds: BOTH, type: "string" },
    { name: "user", kinds: BOTH, type: "string", ignored: true },
    { name: "store", kinds: BOTH, type: "boolean", ignored: true },
    { name: "metadata", kinds: BOTH, type: "object", ignored: true },
    { name: "service_tier", kinds: BOTH, type: "string", ignored: true },
    // OpenAI's, and not supported here.
    { name: "functions", kinds: [] },
    { name: "function_call", kinds: [] },
    { name: "audio", kinds: [] },
    { name: "modalities", kinds: [] },
    { name: "prediction", kinds: [] },
    { name: "web_search_options", kinds: [] },
    { name: "reasoning_effort", kinds: [] },
    { name: "suffix", kinds: [] },
  ].map((field) => Object.freeze(field)),
);
