import { InvalidRequestError } from "../errors.js";
import { checkSignal } from "./request.js";

// engine.embeddings.create: the request's checks and the response's shape, as OpenAI's
// embeddings endpoint defines them. The forward passes are the engine's (LoadedModel.embed).

// `signal`: an AbortSignal, as other requests take (a worker engine always passes one).
const FIELDS = new Set(["input", "model", "encoding_format", "dimensions", "user", "signal"]);
// OpenAI's limit on the inputs of one request.
export const MAX_INPUTS = 2048;

const fail = (field, message) => {
  throw new InvalidRequestError(field, message);
};

/**
 * A checked embeddings request: `inputs` (strings and arrays of token ids), the field that
 * names each (for errors), and the encoding. `dimensions` may only ask for the model's own.
 * @param {object} request
 * @param {{vocabSize: number, dimensions: number}} model
 */
export function checkEmbeddingRequest(request, { vocabSize, dimensions }) {
  for (const key of Object.keys(request)) {
    if (request[key] !== undefined && !FIELDS.has(key)) fail(key, "is not a recognized request argument");
  }
  const isIds = (x) => Array.isArray(x) && x.every((t) => Number.isInteger(t));
  const { input } = request;
  let inputs;
  if (typeof input === "string") inputs = [input];
  else if (Array.isArray(input) && input.length > 0 && isIds(input)) inputs = [input];
  else if (Array.isArray(input) && input.length > 0) inputs = input;
  else fail("input", "must be a string, an array of strings, an array of token ids or an array of such arrays");
  if (inputs.length > MAX_INPUTS) fail("input", `holds ${inputs.length} inputs; at most ${MAX_INPUTS} per request`);
  const listed = Array.isArray(input) && !isIds(input); // several inputs, named by index
  inputs.forEach((item, i) => {
    const field = listed ? `input[${i}]` : "input";
    if (typeof item === "string") {
      if (item.length === 0) fail(field, "must not be an empty string");
    } else if (isIds(item) && item.length > 0) {
      const bad = item.find((t) => t < 0 || t >= vocabSize);
      if (bad !== undefined) fail(field, `${bad} is not a token id (the vocabulary has ${vocabSize})`);
    } else {
      fail(field, "must be a non-empty string or a non-empty array of token ids");
    }
  });
  checkSignal(request.signal);
  const format = request.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") fail("encoding_format", 'must be "float" or "base64"');
  const asked = request.dimensions;
  if (asked != null && asked !== dimensions)
    fail("dimensions", `this model's embeddings have ${dimensions} dimensions and it cannot give others`);
  return { inputs, format, fields: inputs.map((_, i) => (listed ? `input[${i}]` : "input")) };
}

/** The little-endian float32 bytes of `vector` in base64, as OpenAI's base64 encoding gives them. */
function base64(vector) {
  const bytes = new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

/**
 * OpenAI's CreateEmbeddingResponse.
 * @param {string} model  the model's id
 * @param {Float32Array[]} vectors  one per input, in the request's order
 * @param {"float" | "base64"} format
 * @param {number} tokens  the inputs' tokens, special tokens included
 */
export function embeddingResponse(model, vectors, format, tokens) {
  return {
    object: "list",
    data: vectors.map((vector, index) => ({
      object: "embedding",
      index,
      embedding: format === "base64" ? base64(vector) : Array.from(vector),
    })),
    model,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  };
}
