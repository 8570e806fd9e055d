// Requests are checked up front against OpenAI's documented ranges, so a bad field fails
// with its name before any GPU work starts: chat and text completions here, their tools in
// request_tools.js, the embeddings endpoint's in embeddings.js.
import { checkInteger, checkRange, checkSchema, fail, isNumber } from "./checks.js";
import { checkTools, messageToolCalls } from "./request_tools.js";

const NOT_SUPPORTED = new Set([
  "functions",
  "function_call",
  "audio",
  "modalities",
  "prediction",
  "web_search_options",
  "reasoning_effort",
  "suffix",
]);
// Accepted and without effect here: they only concern a hosted service.
const IGNORED = ["user", "store", "metadata", "service_tier"];
const SAMPLING = [
  "model",
  "stream",
  "stream_options",
  "max_tokens",
  "temperature",
  "top_p",
  "stop",
  "seed",
  "frequency_penalty",
  "presence_penalty",
  "repetition_penalty",
  "logit_bias",
  "n",
  "signal",
  "response_format",
  "ignore_eos",
  "truncation",
  ...IGNORED,
];
const CHAT_FIELDS = new Set([
  "messages",
  "max_completion_tokens",
  "logprobs",
  "top_logprobs",
  "tools",
  "tool_choice",
  "parallel_tool_calls",
  ...SAMPLING,
]);
const COMPLETION_FIELDS = new Set(["prompt", "logprobs", "echo", "best_of", ...SAMPLING]);
const ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

/**
 * The `model` a request names, or undefined: checked before the engine looks the model up,
 * so that a value of the wrong type fails with its name rather than somewhere inside.
 */
export function requestedModel(request) {
  if (request == null || typeof request !== "object" || Array.isArray(request)) fail("request", "must be an object");
  const { model } = request;
  if (model != null && typeof model !== "string") fail("model", "must be a string: the id of a loaded model");
  return model ?? undefined;
}

/** Throws unless `signal` is absent or an AbortSignal (anything with `aborted` and `addEventListener`). */
export function checkSignal(signal) {
  if (signal != null && !(typeof signal.aborted === "boolean" && typeof signal.addEventListener === "function"))
    fail("signal", "must be an AbortSignal");
}

function checkFields(request, known) {
  requestedModel(request);
  for (const key of Object.keys(request)) {
    if (request[key] === undefined) continue;
    if (NOT_SUPPORTED.has(key)) fail(key, "is not supported by this engine");
    if (!known.has(key)) fail(key, "is not a recognized request argument");
  }
}

/** Checks what chat and text completions share; returns the normalized sampling settings. */
function checkSampling(request, vocabSize) {
  checkRange(request, "temperature", 0, 2);
  checkRange(request, "top_p", 0, 1);
  checkRange(request, "frequency_penalty", -2, 2);
  checkRange(request, "presence_penalty", -2, 2);
  const { repetition_penalty, stop, seed, logit_bias, stream_options, response_format, truncation } = request;
  if (repetition_penalty != null && !(isNumber(repetition_penalty) && repetition_penalty > 0))
    fail("repetition_penalty", "must be a number greater than 0");
  checkInteger(request, "n", 1, 128);
  checkInteger(request, "max_tokens", 1);
  if (seed != null && !Number.isSafeInteger(seed))
    fail("seed", "must be an integer between -(2^53 - 1) and 2^53 - 1 (JavaScript's safe integers)");
  if (request.stream != null && typeof request.stream !== "boolean") fail("stream", "must be a boolean");
  if (stream_options != null) {
    if (!request.stream) fail("stream_options", "is only allowed when stream is true");
    if (typeof stream_options !== "object") fail("stream_options", "must be an object");
  }
  const stops = stop == null ? [] : typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(stops) || stops.length > 4 || !stops.every((s) => typeof s === "string" && s.length > 0))
    fail("stop", "must be a non-empty string or an array of at most 4 non-empty strings");
  if (logit_bias != null) {
    if (typeof logit_bias !== "object" || Array.isArray(logit_bias))
      fail("logit_bias", "must map token ids to numbers");
    for (const [id, value] of Object.entries(logit_bias)) {
      const token = Number(id);
      if (!(Number.isInteger(token) && token >= 0 && token < vocabSize))
        fail("logit_bias", `${id} is not a token id (the vocabulary has ${vocabSize})`);
      if (!(isNumber(value) && value >= -100 && value <= 100))
        fail("logit_bias", `the bias of token ${id} must be a number from -100 to 100`);
    }
  }
  const schemas = []; // [field, schema] pairs, for checkSchemas (request_schemas.js)
  if (response_format != null) {
    const type = response_format.type;
    if (!["text", "json_object", "json_schema"].includes(type))
      fail("response_format.type", "must be text, json_object or json_schema");
    if (type === "json_schema" && (typeof response_format.json_schema !== "object" || !response_format.json_schema))
      fail("response_format.json_schema", "must be an object with a schema");
    const schema = type === "json_schema" ? response_format.json_schema.schema : response_format.schema;
    const field = type === "json_schema" ? "response_format.json_schema.schema" : "response_format.schema";
    if (schema != null) schemas.push([field, checkSchema(schema, field)]);
  }
  if (truncation != null && truncation !== "auto" && truncation !== "disabled")
    fail("truncation", 'must be "auto" or "disabled"');
  checkSignal(request.signal);
  return {
    temperature: request.temperature ?? 1,
    top_p: request.top_p ?? 1,
    frequency_penalty: request.frequency_penalty ?? 0,
    presence_penalty: request.presence_penalty ?? 0,
    repetition_penalty: repetition_penalty ?? 1,
    logit_bias,
    stop: stops,
    seed,
    n: request.n ?? 1,
    response_format,
    ignore_eos: Boolean(request.ignore_eos),
    truncate: truncation === "auto",
    schemas,
  };
}

function messageText(message, i) {
  const { content } = message;
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part, j) => {
        if (part?.type !== "text" || typeof part.text !== "string")
          fail(`messages[${i}].content[${j}]`, "only text parts are supported");
        return part.text;
      })
      .join("");
  }
  return fail(`messages[${i}].content`, "must be a string or an array of text parts");
}

/** A checked chat request: messages normalized to {role, content: string} (tool calls and results kept). */
export function checkChatRequest(request, vocabSize) {
  checkFields(request, CHAT_FIELDS);
  const { messages, max_tokens, max_completion_tokens, logprobs, top_logprobs } = request;
  if (!Array.isArray(messages) || messages.length === 0) fail("messages", "must be a non-empty array");
  const normalized = messages.map((m, i) => {
    if (!m || typeof m !== "object") fail(`messages[${i}]`, "must be an object");
    if (!ROLES.has(m.role)) fail(`messages[${i}].role`, "must be system, developer, user, assistant or tool");
    const role = m.role === "developer" ? "system" : m.role;
    if (role === "assistant" && m.tool_calls != null) {
      const content = m.content == null ? "" : messageText(m, i);
      return { role, content, tool_calls: messageToolCalls(m, i) };
    }
    if (role === "tool") {
      if (typeof m.tool_call_id !== "string") fail(`messages[${i}].tool_call_id`, "must be a string");
      return { role, content: messageText(m, i), tool_call_id: m.tool_call_id };
    }
    return { role, content: messageText(m, i) };
  });
  checkInteger(request, "max_completion_tokens", 1);
  if (max_tokens != null && max_completion_tokens != null && max_tokens !== max_completion_tokens)
    fail("max_completion_tokens", "differs from max_tokens; give one of them");
  if (logprobs != null && typeof logprobs !== "boolean") fail("logprobs", "must be a boolean");
  checkInteger(request, "top_logprobs", 0, 20);
  if (top_logprobs != null && !logprobs) fail("top_logprobs", "requires logprobs: true");
  const tools = checkTools(request);
  if (tools.toolChoice !== "none" && request.response_format != null && request.response_format.type !== "text")
    fail("response_format", "cannot be combined with tools (a tool call has its own format)");
  const sampling = checkSampling(request, vocabSize);
  return {
    ...sampling,
    ...tools,
    schemas: [...sampling.schemas, ...tools.schemas],
    messages: normalized,
    max_tokens: max_completion_tokens ?? max_tokens,
    logprobs: Boolean(logprobs),
    top_logprobs: top_logprobs ?? 0,
  };
}

/** A checked text-completion request (OpenAI's legacy `completions`). */
export function checkCompletionRequest(request, vocabSize) {
  checkFields(request, COMPLETION_FIELDS);
  const { prompt, logprobs, echo, best_of } = request;
  const isTokens = (p) =>
    Array.isArray(p) && p.length > 0 && p.every((t) => Number.isInteger(t) && t >= 0 && t < vocabSize);
  let text = prompt;
  if (Array.isArray(prompt) && prompt.length === 1 && (typeof prompt[0] === "string" || isTokens(prompt[0])))
    text = prompt[0];
  if (!(typeof text === "string" || isTokens(text)))
    fail("prompt", "must be a string, or an array of token ids (several prompts per request are not supported)");
  checkInteger(request, "logprobs", 0, 5);
  if (echo != null && typeof echo !== "boolean") fail("echo", "must be a boolean");
  if (best_of != null && best_of !== (request.n ?? 1)) fail("best_of", "is not supported (only best_of = n)");
  return {
    ...checkSampling(request, vocabSize),
    prompt: text,
    // OpenAI's default for text completions.
    max_tokens: request.max_tokens ?? 16,
    logprobs: logprobs != null,
    top_logprobs: logprobs ?? 0,
    echo: Boolean(echo),
  };
}
