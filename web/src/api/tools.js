import { TOOL_CALL_OPEN } from "../text/grammar.js";

// A reply with tool calls, read as it streams: text, then calls in the Hermes format chat
// templates ask for (Qwen2.5's among them), each
//     <tool_call>\n{"name": "NAME", "arguments": {...}}\n</tool_call>
// turned into OpenAI's deltas: `content` for the text, and per call a first `tool_calls`
// entry with its index, id and name, then its arguments' JSON text in pieces as it comes.
// The grammar (text/grammar.js, toolCallTag) makes every call the model begins well formed; one
// cut short (max_tokens) never reaches the caller.

const HEAD = /^<tool_call>\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*/;
const TAIL = /^\s*\}\s*<\/tool_call>/;

let counter = 0;
const callId = () => `call_${Date.now().toString(36)}${(counter++).toString(36)}`;

export class ToolCallParser {
  #state = "text"; // "text" | "head" (the call's name) | "arguments" | "tail"
  #buffer = ""; // text not yet turned into deltas
  #depth = 0; // of the arguments' braces and brackets
  #inString = false;
  #escaped = false;

  constructor() {
    /** @type {{id: string, type: "function", function: {name: string, arguments: string}}[]} */
    this.calls = [];
    this.content = "";
  }

  /** The deltas that `text` completes (`{content}` or `{tool_calls: [...]}`), in order. */
  push(text) {
    this.#buffer += text;
    const deltas = [];
    for (let progress = true; progress; ) {
      progress = false;
      if (this.#state === "text") {
        const at = this.#buffer.indexOf(TOOL_CALL_OPEN);
        // Text that may be the start of a call is held back until it is known not to be, and
        // so is trailing whitespace until what follows it is known (before a call it is
        // dropped).
        const safe = at >= 0 ? at : this.#buffer.length - heldBack(this.#buffer);
        const text = this.#buffer.slice(0, safe).trimEnd();
        if (text) {
          deltas.push({ content: text });
          this.content += text;
        }
        this.#buffer = this.#buffer.slice(at >= 0 ? at : text.length);
        if (at >= 0) [this.#state, progress] = ["head", true];
      } else if (this.#state === "head") {
        const match = HEAD.exec(this.#buffer);
        if (match) {
          const call = {
            id: callId(),
            type: "function",
            function: { name: JSON.parse(`"${match[1]}"`), arguments: "" },
          };
          this.calls.push(call);
          const index = this.calls.length - 1;
          deltas.push({
            tool_calls: [
              { index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } },
            ],
          });
          this.#buffer = this.#buffer.slice(match[0].length);
          [this.#state, this.#depth, this.#inString, this.#escaped] = ["arguments", 0, false, false];
          progress = true;
        }
      } else if (this.#state === "arguments") {
        if (!this.calls.at(-1).function.arguments) this.#buffer = this.#buffer.trimStart(); // before the value
        const { length, piece, done } = this.#takeArguments();
        this.#buffer = this.#buffer.slice(length);
        if (piece) {
          this.calls.at(-1).function.arguments += piece;
          deltas.push({ tool_calls: [{ index: this.calls.length - 1, function: { arguments: piece } }] });
        }
        if (done) [this.#state, progress] = ["tail", true];
      } else {
        const match = TAIL.exec(this.#buffer);
        if (match) {
          this.#buffer = this.#buffer.slice(match[0].length);
          [this.#state, progress] = ["text", true];
        }
      }
    }
    return deltas;
  }

  /**
   * The buffer's part of the arguments' JSON value: its `length`, the `piece` of JSON text it
   * gives (a raw control character inside a string, which JSON forbids and the grammar lets
   * through, escaped), and whether the value is `done`.
   */
  #takeArguments() {
    let piece = "";
    for (let i = 0; i < this.#buffer.length; i++) {
      const c = this.#buffer[i];
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (c === "\\") this.#escaped = true;
        else if (c === '"') this.#inString = false;
        else if (c < " ") {
          piece += `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
          continue;
        }
      } else if (c === '"') this.#inString = true;
      else if (c === "{" || c === "[") this.#depth++;
      else if ((c === "}" || c === "]") && --this.#depth === 0) return { length: i + 1, piece: piece + c, done: true };
      piece += c;
    }
    return { length: this.#buffer.length, piece, done: false };
  }

  /**
   * The reply has ended: held-back text is released; a call cut short is dropped (with its
   * deltas already sent, the caller learns it from finish_reason "length").
   */
  flush() {
    const deltas = [];
    if (this.#state === "text" && (this.#buffer.trim() || (this.#buffer && !this.calls.length))) {
      deltas.push({ content: this.#buffer });
      this.content += this.#buffer;
    } else if (this.#state === "arguments") {
      this.calls.pop();
    }
    this.#buffer = "";
    return deltas;
  }

  /** The whole message: `content` (null when the reply is only calls) and its complete calls. */
  message() {
    if (!this.calls.length) return { content: this.content };
    return { content: this.content.trim() ? this.content : null, tool_calls: this.calls };
  }
}

/** How many characters at the end of `text` could begin TOOL_CALL_OPEN. */
function heldBack(text) {
  for (let n = Math.min(TOOL_CALL_OPEN.length - 1, text.length); n > 0; n--) {
    if (TOOL_CALL_OPEN.startsWith(text.slice(-n))) return n;
  }
  return 0;
}

/** A whole reply's message, as the stream of it would build it. */
export function parseReply(text) {
  const parser = new ToolCallParser();
  parser.push(text);
  parser.flush();
  return parser.message();
}
