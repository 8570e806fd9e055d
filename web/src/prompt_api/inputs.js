// What the Prompt API takes, made into what the engine takes: a prompt (a string, or messages
// whose content is a string or text parts) as chat messages, a session's sampling options as a
// request's, a responseConstraint as a response_format; and the errors the explainer names,
// as DOMExceptions (github.com/webmachinelearning/prompt-api, README.md and index.bs).

export const ROLES = Object.freeze(["system", "user", "assistant"]);

/**
 * LanguageModel.params(): Chrome's defaults for topK and temperature, Chrome's largest topK,
 * and the engine's largest temperature (requests take 0 to 2).
 */
export const PARAMS = Object.freeze({ defaultTopK: 3, maxTopK: 128, defaultTemperature: 1, maxTemperature: 2 });

/**
 * The explainer's samplingMode presets as topK and temperature (its values are left to each
 * implementation): "most-predictable" is greedy, "balanced" the defaults of PARAMS.
 */
export const SAMPLING_MODES = Object.freeze({
  "most-predictable": { topK: 1, temperature: 0 },
  predictable: { topK: 3, temperature: 0.5 },
  balanced: { topK: PARAMS.defaultTopK, temperature: PARAMS.defaultTemperature },
  creative: { topK: 40, temperature: 1.2 },
  "most-creative": { topK: PARAMS.maxTopK, temperature: 1.5 },
});

export const domError = (name, message) => new DOMException(message, name);

/**
 * The DOMException of an input that does not fit: `requested` tokens where `quota` are left,
 * as the explainer's QuotaExceededError (whatwg/webidl#1465) has them.
 */
export function quotaExceeded(requested, quota) {
  const error = domError(
    "QuotaExceededError",
    `The input takes ${requested} tokens of the context window, where ${quota} are left and no ` +
      "earlier turn can be dropped to make room. Shorten it, or start a new session.",
  );
  return Object.defineProperties(error, { requested: { value: requested }, quota: { value: quota } });
}

/**
 * A session's sampling from create()'s options, as the explainer says: a temperature below 0
 * or a topK below 1 is a RangeError, larger ones than PARAMS' are clamped, a fractional topK is
 * rounded down, and samplingMode excludes both.
 * @returns {{samplingMode: string, temperature: number, topK: number}}
 */
export function sessionSampling({ samplingMode, temperature, topK }) {
  if (samplingMode !== undefined) {
    if (temperature !== undefined || topK !== undefined)
      throw new TypeError("samplingMode cannot be given with temperature or topK: give one or the other");
    if (!Object.hasOwn(SAMPLING_MODES, samplingMode))
      throw new TypeError(`samplingMode must be one of ${Object.keys(SAMPLING_MODES).join(", ")}`);
    return { samplingMode, ...SAMPLING_MODES[samplingMode] };
  }
  const sampling = { samplingMode: "balanced", temperature: PARAMS.defaultTemperature, topK: PARAMS.defaultTopK };
  if (temperature !== undefined) {
    const value = Number(temperature);
    if (!(value >= 0)) throw new RangeError("temperature must be 0 or more");
    sampling.temperature = Math.min(value, PARAMS.maxTemperature);
  }
  if (topK !== undefined) {
    const value = Number(topK);
    if (!(value >= 1)) throw new RangeError("topK must be 1 or more");
    sampling.topK = Math.min(Math.floor(value), PARAMS.maxTopK);
  }
  return sampling;
}

/** A request's sampling fields for a session's: temperature 0 or topK 1 are greedy. */
export function requestSampling({ temperature, topK }) {
  return temperature === 0 || topK === 1 ? { temperature: 0 } : { temperature, top_k: topK };
}

/** Whether expectedInputs and expectedOutputs ask for text alone (all the engine takes and gives). */
export function textOnly({ expectedInputs, expectedOutputs } = {}) {
  const text = (list) => list == null || [...list].every((entry) => entry?.type === "text");
  return text(expectedInputs) && text(expectedOutputs);
}

/** A message's content as text: a string, or parts {type: "text", value} (others are refused). */
function contentText(content, i) {
  if (typeof content === "string") return content;
  if (content == null || typeof content[Symbol.iterator] !== "function")
    throw new TypeError(`messages[${i}].content must be a string or an array of {type, value} parts`);
  return [...content]
    .map((part, j) => {
      if (part?.type !== "text")
        throw domError("NotSupportedError", `messages[${i}].content[${j}]: only text is supported, not ${part?.type}`);
      if (typeof part.value !== "string") throw new TypeError(`messages[${i}].content[${j}].value must be a string`);
      return part.value;
    })
    .join("");
}

/**
 * A prompt as {role, content} messages: a string is one user message (as WebIDL's DOMString,
 * anything not a list is made a string). `first`: the session holds no message yet, where
 * alone a system message may come, and only first.
 */
export function promptMessages(input, first) {
  if (input === null || typeof input !== "object" || typeof input[Symbol.iterator] !== "function")
    return [{ role: "user", content: String(input) }];
  return [...input].map((message, i) => {
    if (message === null || typeof message !== "object") throw new TypeError(`messages[${i}] must be an object`);
    if (!ROLES.includes(message.role))
      throw new TypeError(`messages[${i}].role must be one of ${ROLES.join(", ")}, not ${message.role}`);
    if (message.role === "system" && !(first && i === 0))
      throw domError(
        "NotSupportedError",
        "A system message must be the first of the session: in initialPrompts, or first in the first prompt or append",
      );
    if (message.prefix) throw domError("NotSupportedError", "prefix (an assistant reply to continue) is not supported");
    return { role: message.role, content: contentText(message.content, i) };
  });
}

/**
 * A prompt's responseConstraint as a request's response_format, and the messages with the
 * schema put to the model (unless omitResponseConstraintInput): appended to the last user
 * message, or as a user message after an assistant one.
 */
export function constrained(messages, { responseConstraint, omitResponseConstraintInput }) {
  if (responseConstraint === undefined || responseConstraint === null) {
    if (omitResponseConstraintInput) throw new TypeError("omitResponseConstraintInput needs a responseConstraint");
    return { messages, response_format: undefined };
  }
  if (responseConstraint instanceof RegExp)
    throw domError("NotSupportedError", "a RegExp responseConstraint is not supported; give a JSON schema");
  if (typeof responseConstraint !== "object") throw new TypeError("responseConstraint must be a JSON schema object");
  const response_format = { type: "json_schema", json_schema: { name: "response", schema: responseConstraint } };
  if (omitResponseConstraintInput) return { messages, response_format };
  const ask = `Respond with JSON that matches this JSON schema: ${JSON.stringify(responseConstraint)}`;
  const last = messages.at(-1);
  const asked =
    last?.role === "user"
      ? [...messages.slice(0, -1), { role: "user", content: `${last.content}\n\n${ask}` }]
      : [...messages, { role: "user", content: ask }];
  return { messages: asked, response_format };
}
