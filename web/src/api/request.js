// Requests are checked up front against OpenAI's documented ranges, so a bad field fails
// with its name before any GPU work starts: chat and text completions here, each field as
// request_fields.js describes it (with the checks its type and range cannot say written below),
// their tools in request_tools.js, the embeddings endpoint's in embeddings.js.
import { checkField, checkSchema, fail, isNumber } from "./checks.js";
import { REQUEST_FIELDS } from "./request_fields.js";
import { checkTools, messageToolCalls } from "./request_tools.js";

/** The fields of each kind of request ("chat", "text") by name, in the order they are checked. */
const FIELDS = Object.fromEntries(
  ["chat", "text"].map((kind) => [
    kind,
    new Map(REQUEST_FIELDS.filter((field) => field.kinds.includes(kind)).map((field) => [field.name, field])),
  ]),
);
const NOT_SUPPORTED = new Set(REQUEST_FIELDS.filter((field) => field.kinds.length === 0).map((field) => field.name));
const ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

/**
 * The checks of the fields whose type and range do not say it all, by name: each gets the
 * request, the field's entry and what the checks so far made of the request (`checked`), to
 * which it may add. The other fields are checked by checkField (checks.js).
 * @type {Record<string, (request: any, field: object, checked: any) => void>}
 */
const OWN_CHECKS = {
  messages: (request, field, checked) => (checked.messages = chatMessages(request.messages)),
  prompt: (request, field, checked) => (checked.prompt = promptOf(request.prompt, checked.vocabSize)),
  max_completion_tokens: (request, field) => {
    checkField(request, field);
    const { max_tokens, max_completion_tokens } = request;
    if (max_tokens != null && max_completion_tokens != null && max_tokens !== max_completion_tokens)
      fail("max_completion_tokens", "differs from max_tokens; give one of them");
  },
  top_logprobs: (request, field) => {
    checkField(request, field);
    if (request.top_logprobs != null && !request.logprobs) fail("top_logprobs", "requires logprobs: true");
  },
  best_of: ({ best_of, n }) => {
    if (best_of != null && best_of !== (n ?? 1)) fail("best_of", "is not supported (only best_of = n)");
  },
  tools: (request, field, checked) => (checked.tools = checkTools(request)),
  tool_choice: () => {}, // with the tools
  seed: ({ seed }) => {
    if (seed != null && !Number.isSafeInteger(seed))
      fail("seed", "must be an integer between -(2^53 - 1) and 2^53 - 1 (JavaScript's safe integers)");
  },
  stream_options: ({ stream, stream_options }) => {
    if (stream_options == null) return;
    if (!stream) fail("stream_options", "is only allowed when stream is true");
    if (typeof stream_options !== "object") fail("stream_options", "must be an object");
  },
  stop: ({ stop }, field, checked) => {
    const stops = stop == null ? [] : typeof stop === "string" ? [stop] : stop;
    if (!Array.isArray(stops) || stops.length > 4 || !stops.every((s) => typeof s === "string" && s.length > 0))
      fail("stop", "must be a non-empty string or an array of at most 4 non-empty strings");
    checked.stops = stops;
  },
  logit_bias: ({ logit_bias }, field, { vocabSize }) => {
    if (logit_bias == null) return;
    if (typeof logit_bias !== "object" || Array.isArray(logit_bias))
      fail("logit_bias", "must map token ids to numbers");
    for (const [id, value] of Object.entries(logit_bias)) {
      const token = Number(id);
      if (!(Number.isInteger(token) && token >= 0 && token < vocabSize))
        fail("logit_bias", `${id} is not a token id (the vocabulary has ${vocabSize})`);
      if (!(isNumber(value) && value >= -100 && value <= 100))
        fail("logit_bias", `the bias of token ${id} must be a number from -100 to 100`);
    }
  },
  response_format: ({ response_format }, field, checked) => {
    checked.schemas = []; // [field, schema] pairs, for checkSchemas (request_schemas.js)
    if (response_format == null) return;
    const type = response_format.type;
    if (checked.tools && checked.tools.toolChoice !== "none" && type !== "text")
      fail("response_format", "cannot be combined with tools (a tool call has its own format)");
    if (!["text", "json_object", "json_schema"].includes(type))
      fail("response_format.type", "must be text, json_object or json_schema");
    if (type === "json_schema" && (typeof response_format.json_schema !== "object" || !response_format.json_schema))
      fail("response_format.json_schema", "must be an object with a schema");
    const schema = type === "json_schema" ? response_format.json_schema.schema : response_format.schema;
    const place = type === "json_schema" ? "response_format.json_schema.schema" : "response_format.schema";
    if (schema != null) checked.schemas.push([place, checkSchema(schema, place)]);
  },
  signal: ({ signal }) => checkSignal(signal),
  ignore_eos: () => {}, // read as true or false, whatever it holds
  model: () => {}, // by requestedModel, first
};

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

/**
 * Checks a request of `kind` ("chat" or "text"), field by field in the table's order; returns
 * what the checks made of it (`checked`) and its sampling settings, normalized.
 */
function checkRequest(request, kind, vocabSize) {
  requestedModel(request);
  const fields = FIELDS[kind];
  for (const key of Object.keys(request)) {
    if (request[key] === undefined) continue;
    if (NOT_SUPPORTED.has(key)) fail(key, "is not supported by this engine");
    if (!fields.has(key)) fail(key, "is not a recognized request argument");
  }
  const checked = { vocabSize };
  for (const field of fields.values()) {
    if (!field.ignored) (OWN_CHECKS[field.name] ?? checkField)(request, field, checked);
  }
  const sampling = {
    temperature: request.temperature ?? 1,
    top_p: request.top_p ?? 1,
    top_k: request.top_k ?? 0,
    frequency_penalty: request.frequency_penalty ?? 0,
    presence_penalty: request.presence_penalty ?? 0,
    repetition_penalty: request.repetition_penalty ?? 1,
    logit_bias: request.logit_bias,
    stop: checked.stops,
    seed: request.seed,
    n: request.n ?? 1,
    response_format: request.response_format,
    ignore_eos: Boolean(request.ignore_eos),
    truncate: request.truncation === "auto",
    prefillProgressCallback: request.prefillProgressCallback ?? undefined,
    schemas: checked.schemas,
  };
  return { checked, sampling };
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

/** A chat request's messages normalized to {role, content: string} (tool calls and results kept). */
function chatMessages(messages) {
  if (!Array.isArray(messages) || messages.length === 0) fail("messages", "must be a non-empty array");
  return messages.map((m, i) => {
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
}

/** A text request's prompt: a string or token ids (a list of one prompt taken as that prompt). */
function promptOf(prompt, vocabSize) {
  const isTokens = (p) =>
    Array.isArray(p) && p.length > 0 && p.every((t) => Number.isInteger(t) && t >= 0 && t < vocabSize);
  let text = prompt;
  if (Array.isArray(prompt) && prompt.length === 1 && (typeof prompt[0] === "string" || isTokens(prompt[0])))
    text = prompt[0];
  if (!(typeof text === "string" || isTokens(text)))
    fail("prompt", "must be a string, or an array of token ids (several prompts per request are not supported)");
  return text;
}

/** A checked chat request: messages normalized to {role, content: string} (tool calls and results kept). */
export function checkChatRequest(request, vocabSize) {
  const { checked, sampling } = checkRequest(request, "chat", vocabSize);
  const { max_tokens, max_completion_tokens, logprobs, top_logprobs } = request;
  return {
    ...sampling,
    ...checked.tools,
    schemas: [...sampling.schemas, ...checked.tools.schemas],
    messages: checked.messages,
    max_tokens: max_completion_tokens ?? max_tokens,
    logprobs: Boolean(logprobs),
    top_logprobs: top_logprobs ?? 0,
  };
}

/** A checked text-completion request (OpenAI's legacy `completions`). */
export function checkCompletionRequest(request, vocabSize) {
  const { checked, sampling } = checkRequest(request, "text", vocabSize);
  const { logprobs, echo } = request;
  return {
    ...sampling,
    prompt: checked.prompt,
    // OpenAI's default for text completions.
    max_tokens: request.max_tokens ?? 16,
    logprobs: logprobs != null,
    top_logprobs: logprobs ?? 0,
    echo: Boolean(echo),
  };
}
