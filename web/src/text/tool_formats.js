// How each model family writes a tool call, in one table: the grammar (text/grammar.js,
// toolCallTag) holds a reply to its format, the parser (api/tools.js) reads the calls back, and
// the prompt builder (engine/prompt.js) hands the tools to the template where it expects them.
// build-web names a model's format from its chat template (compiler/tool_format.py) and records
// it in the manifest's `tool_call_format`; a manifest without the field, or a template with no
// format of its own (null: an app's `chat_template` that renders tools), gets Hermes, the
// format chat templates most often ask for.
//
// A call is `begin` NAME `", "<argumentsKey>": ` ARGUMENTS `end`. Formats with an `open` write
// their calls as one list, `open` CALL `separator` CALL ... `close`; the others write each call
// on its own, `separator` between them. `trigger` is the text that begins the calls in a reply
// that may also be text (tool_choice "auto"). `parallel` false: the template takes one call a
// turn. `idLength`: the template checks call ids for that many letters and digits.

/**
 * @typedef {{name: string, trigger: string, open: string, close: string, begin: string,
 *   argumentsKey: string, end: string, separator: string, parallel: boolean,
 *   idLength?: number, toolsInSystem?: boolean}} ToolCallFormat
 */

/** @type {Record<string, ToolCallFormat>} */
export const TOOL_CALL_FORMATS = {
  // Qwen2.5, Qwen3, Hermes, SmolLM3: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>
  hermes: {
    name: "hermes",
    trigger: "<tool_call>",
    open: "",
    close: "",
    begin: '<tool_call>\n{"name": "',
    argumentsKey: "arguments",
    end: "}\n</tool_call>",
    separator: "\n",
    parallel: true,
  },
  // Llama 3.1, 3.2, 3.3 (custom tools): a bare {"name": ..., "parameters": {...}}, one a turn
  // (the template refuses an assistant turn with more). The <|python_tag|> these models may
  // write first is a special token that the text leaves out, and the grammar too.
  llama3_json: {
    name: "llama3_json",
    trigger: '{"name": ',
    open: "",
    close: "",
    begin: '{"name": "',
    argumentsKey: "parameters",
    end: "}",
    separator: "",
    parallel: false,
  },
  // Mistral (v3 tokenizers: Mistral-7B-Instruct-v0.3, Nemo): [TOOL_CALLS][{...}, {...}]
  mistral: {
    name: "mistral",
    trigger: "[TOOL_CALLS]",
    open: "[TOOL_CALLS][",
    close: "]",
    begin: '{"name": "',
    argumentsKey: "arguments",
    end: "}",
    separator: ", ",
    parallel: true,
    idLength: 9,
  },
  // Phi-4-mini: <|tool_call|>[{...}]<|/tool_call|>; its template reads the tools from the
  // system message's `tools` (JSON text), not from a `tools` variable.
  phi4_mini: {
    name: "phi4_mini",
    trigger: "<|tool_call|>",
    open: "<|tool_call|>[",
    close: "]<|/tool_call|>",
    begin: '{"name": "',
    argumentsKey: "arguments",
    end: "}",
    separator: ", ",
    parallel: true,
    toolsInSystem: true,
  },
};

/** The tool-call format of a manifest (Hermes where it names none). */
export function toolCallFormat(manifest) {
  return TOOL_CALL_FORMATS[manifest?.tool_call_format ?? "hermes"] ?? TOOL_CALL_FORMATS.hermes;
}

/** The text of a call to `name` up to its arguments. */
export function callHead(format, name) {
  return `${format.begin}${name}", "${format.argumentsKey}": `;
}

/** The format's fixed strings: those a vocabulary may hold as special tokens. */
export function markers(format) {
  const parts = [format.trigger, format.open, format.close, format.begin, format.end];
  // The tags themselves, without the JSON around them: "[TOOL_CALLS]", "<|/tool_call|>".
  return new Set(parts.flatMap((p) => p.match(/<[^<>]+>|\[[A-Z_]+\]/g) ?? []));
}

/**
 * Special tokens of `vocabulary` that are the format's markers (Mistral's [TOOL_CALLS],
 * Phi-4-mini's <|tool_call|>): the text of a reply keeps them, so that the parser sees a
 * call begin, and the grammar lets the model write them.
 * @param {import("./vocab.js").Vocabulary} vocabulary
 * @returns {Map<number, string>} id -> text
 */
export function markerTokens(format, vocabulary) {
  const wanted = markers(format);
  const found = new Map();
  for (const id of vocabulary.special) if (wanted.has(vocabulary.tokens[id])) found.set(id, vocabulary.tokens[id]);
  return found;
}

const ALPHANUMERIC = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
let counter = 0;

/** A fresh call id: `call_...`, or as many letters and digits as the template checks for. */
export function callId(format) {
  if (!format.idLength) return `call_${Date.now().toString(36)}${(counter++).toString(36)}`;
  let id = "";
  for (let i = 0; i < format.idLength; i++) id += ALPHANUMERIC[Math.floor(Math.random() * ALPHANUMERIC.length)];
  return id;
}

/**
 * The messages as the format's template takes `tools`: unchanged, or (toolsInSystem) with the
 * functions' JSON text on the first system message, one added where there is none: a list of
 * {name, description, parameters}, as Phi-4-mini's model card lists them.
 */
export function messagesWithTools(format, messages, tools) {
  if (!format.toolsInSystem || !tools) return messages;
  const at = messages.findIndex((m) => m.role === "system");
  const listed = JSON.stringify(tools.map((tool) => tool.function));
  if (at < 0) return [{ role: "system", content: "", tools: listed }, ...messages];
  return messages.map((m, i) => (i === at ? { ...m, tools: listed } : m));
}
