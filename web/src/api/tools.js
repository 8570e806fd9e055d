import { TOOL_CALL_FORMATS, callId } from "../text/tool_formats.js";

// A reply with tool calls, read as it streams: text, then calls in the model's own format
// (text/tool_formats.js: Hermes' <tool_call>{"name": ..., "arguments": {...}}</tool_call>,
// Mistral's [TOOL_CALLS][...], ...) turned into OpenAI's deltas: `content` for the text, and
// per call a first `tool_calls` entry with its index, id and name, then its arguments' JSON
// text in pieces as it comes. The grammar (text/grammar.js, toolCallTag) makes every call the
// model begins well formed; one cut short (max_tokens) never reaches the caller.

/**
 * A regex source for `literal` that also takes whitespace around its JSON punctuation, and
 * any whitespace where it has some: what a model writes need not space a call as the
 * grammar's text does (without a grammar, or before it was held to it).
 */
function loose(literal) {
  let out = "\\s*";
  for (const ch of literal) {
    if (/\s/.test(ch)) {
      if (!out.endsWith("\\s*")) out += "\\s*";
    } else if ("{}[],:".includes(ch)) {
      if (!out.endsWith("\\s*")) out += "\\s*";
      out += `\\${ch}\\s*`;
    } else {
      out += ch.replace(/[.*+?^$|()\\/<>-]/g, "\\$&");
    }
  }
  return out;
}

/** The format's patterns, each anchored at the buffer's start. */
function patterns(format) {
  const at = (literal) => new RegExp(`^${loose(literal)}`);
  return {
    open: at(format.open),
    head: new RegExp(`^${loose(format.begin)}((?:[^"\\\\]|\\\\.)*)${loose(`", "${format.argumentsKey}": `)}`),
    tail: at(format.end),
    separator: at(format.separator),
    close: at(format.close),
  };
}

export class ToolCallParser {
  // "text", "open" (a list's opening), "head" (a call up to its arguments), "arguments",
  // "tail" (a call's end), "next" (in a list: another call, or its close)
  #state = "text";
  #buffer = ""; // text not yet turned into deltas
  #depth = 0; // of the arguments' braces and brackets
  #inString = false;
  #escaped = false;

  /** @param {import("../text/tool_formats.js").ToolCallFormat} [format] */
  constructor(format = TOOL_CALL_FORMATS.hermes) {
    this.format = format;
    this.patterns = patterns(format);
    /** @type {{id: string, type: "function", function: {name: string, arguments: string}}[]} */
    this.calls = [];
    this.content = "";
  }

  /** The deltas that `text` completes (`{content}` or `{tool_calls: [...]}`), in order. */
  push(text) {
    this.#buffer += text;
    const deltas = [];
    const { trigger, open } = this.format;
    // Consumes what `pattern` matches at the buffer's start, if it does.
    const take = (pattern) => {
      const match = pattern.exec(this.#buffer);
      if (match) this.#buffer = this.#buffer.slice(match[0].length);
      return match;
    };
    for (let progress = true; progress; ) {
      progress = false;
      if (this.#state === "text") {
        const at = this.#buffer.indexOf(trigger);
        // Text that may be the start of a call is held back until it is known not to be, and
        // so is trailing whitespace until what follows it is known (before a call it is
        // dropped).
        const safe = at >= 0 ? at : this.#buffer.length - heldBack(this.#buffer, trigger);
        const text = this.#buffer.slice(0, safe).trimEnd();
        if (text) {
          deltas.push({ content: text });
          this.content += text;
        }
        this.#buffer = this.#buffer.slice(at >= 0 ? at : text.length);
        if (at >= 0) [this.#state, progress] = [open ? "open" : "head", true];
      } else if (this.#state === "open") {
        if (take(this.patterns.open)) [this.#state, progress] = ["head", true];
      } else if (this.#state === "head") {
        const match = take(this.patterns.head);
        if (match) {
          const call = {
            id: callId(this.format),
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
      } else if (this.#state === "tail") {
        if (take(this.patterns.tail)) [this.#state, progress] = [open ? "next" : "text", true];
      } else if (take(this.patterns.close)) {
        [this.#state, progress] = ["text", true];
      } else if (this.#buffer.trim() && take(this.patterns.separator)) {
        [this.#state, progress] = ["head", true];
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

/** How many characters at the end of `text` could begin `trigger`. */
function heldBack(text, trigger) {
  for (let n = Math.min(trigger.length - 1, text.length); n > 0; n--) {
    if (trigger.startsWith(text.slice(-n))) return n;
  }
  return 0;
}

/** A whole reply's message in `format`, as the stream of it would build it. */
export function parseReply(text, format = TOOL_CALL_FORMATS.hermes) {
  const parser = new ToolCallParser(format);
  parser.push(text);
  parser.flush();
  return parser.message();
}
