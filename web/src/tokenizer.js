import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { InvalidRequestError, KilnError } from "./errors.js";

// The special tokens transformers hands to every chat template, by their config keys.
const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

// GPT-2's pre-tokenizer regex with Rust's `\s` (Unicode White_Space): JS's `\s` adds U+FEFF and
// lacks U+0085, so the library's copy of the regex splits those characters differently.
const BYTE_LEVEL_SPLIT =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;
// The Digits pre-tokenizer splits at Rust's `char::is_numeric` (any \p{N}: "½", "²", "٣"), not
// only at ASCII digits as the library's `\d` does.
const DIGITS_SPLIT = /[^\p{N}]+|\p{N}/gu;
const DIGIT_RUNS_SPLIT = /[^\p{N}]+|\p{N}+/gu;
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
// Strict, and keeping a leading U+FEFF: it is text here, not a byte order mark.
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * The ByteFallback decoder as tokenizers (Rust) has it: a run of <0x..> tokens becomes its
 * UTF-8 text, or when the run is not valid UTF-8, one U+FFFD per byte.
 * @param {string[]} tokens
 */
function byteFallbackDecodeChain(tokens) {
  const out = [];
  let bytes = [];
  const flush = () => {
    if (bytes.length === 0) return;
    try {
      out.push(UTF8.decode(Uint8Array.from(bytes)));
    } catch {
      for (let i = 0; i < bytes.length; i++) out.push("\uFFFD");
    }
    bytes = [];
  };
  for (const token of tokens) {
    const byte = BYTE_TOKEN.exec(token);
    if (byte) {
      bytes.push(parseInt(byte[1], 16));
    } else {
      flush();
      out.push(token);
    }
  }
  flush();
  return out;
}

/** A pipeline component and those nested in it (`Sequence`s), depth first. */
function* components(node) {
  if (!node) return;
  yield node;
  for (const child of [...(node.decoders ?? []), ...(node.tokenizers ?? [])]) yield* components(child);
}

/**
 * Brings @huggingface/tokenizers' pipeline in line with the Rust library where they differ,
 * so that ids and text match what Python gives. These patches reach into the library's
 * components (its version is pinned): each is checked on a probe string, so that a version
 * that changed those internals fails here, loudly, rather than tokenizing differently.
 */
function alignWithRust(tokenizer) {
  for (const pre of components(tokenizer.pre_tokenizer)) {
    if (pre.config?.type === "ByteLevel" && pre.pattern instanceof RegExp) {
      pre.pattern = BYTE_LEVEL_SPLIT;
      // U+FEFF is not whitespace in Rust: it joins the space before it.
      const pieces = pre.pre_tokenize_text("a \uFEFFb", {}).length;
      probe(pieces === (pre.use_regex === false ? 1 : 3), "ByteLevel split");
    }
    if (pre.config?.type === "Digits") {
      pre.pattern = pre.config.individual_digits ? DIGITS_SPLIT : DIGIT_RUNS_SPLIT;
      // "½" is numeric in Rust, not a \d.
      const pieces = pre.config.individual_digits ? 3 : 2;
      probe(pre.pre_tokenize_text("a½½", {}).length === pieces, "Digits split");
    }
  }
  for (const decoder of components(tokenizer.decoder)) {
    if (decoder.config?.type === "ByteFallback") {
      decoder.decode_chain = byteFallbackDecodeChain;
      // A broken UTF-8 run gives one U+FFFD per byte.
      probe(decoder.decode(["<0xE2>", "<0x82>"]) === "\uFFFD\uFFFD", "ByteFallback decoder");
    }
  }
}

/** Throws when a patch of a library's internals no longer takes effect. */
function probe(ok, patch) {
  if (!ok) throw new KilnError(`the ${patch} patch of a pinned library no longer takes effect`, "library_changed");
}

/** A special token as tokenizer_config.json gives it: a string or an AddedToken object. */
function tokenContent(token) {
  return typeof token === "object" && token !== null ? token.content : token;
}

/** The model's tokenizer and chat template, as Hugging Face defines them. */
export class ChatTokenizer {
  /**
   * @param {object} tokenizerJson  the parsed tokenizer.json
   * @param {object} tokenizerConfig  the parsed tokenizer_config.json (chat_template, special tokens)
   */
  constructor(tokenizerJson, tokenizerConfig) {
    this.config = tokenizerConfig;
    this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    alignWithRust(this.tokenizer);
    this.template = tokenizerConfig.chat_template ? new Template(tokenizerConfig.chat_template) : null;
    if (this.template) checkInterpreter();
    /** @type {Record<string, string>} */
    this.specialTokens = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const content = tokenContent(tokenizerConfig[key]);
      if (typeof content === "string") this.specialTokens[key] = content;
    }
  }

  /** Whether the chat template renders `tools` (Qwen2.5's does; many templates do not). */
  get supportsTools() {
    return typeof this.config.chat_template === "string" && /\btools\b/.test(this.config.chat_template);
  }

  /** @param {string} text @returns {number[]} token ids, no special tokens added */
  encode(text) {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /**
   * A raw prompt's ids: the text with the special tokens the model puts around it (its
   * beginning-of-sequence token, for models that add one).
   * @param {string} text
   * @returns {number[]}
   */
  encodePrompt(text) {
    return this.tokenizer.encode(text, { add_special_tokens: true }).ids;
  }

  /** @param {number[]} ids @returns {string} the text, special tokens left out */
  decode(ids) {
    if (ids.length === 0) return "";
    return this.tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  }

  /**
   * Renders the chat template with what transformers' `apply_chat_template` gives templates:
   * the special tokens, `raise_exception` and `strftime_now`.
   * @param {{role: string, content: string}[]} messages
   * @param {boolean} [addGenerationPrompt]
   * @param {object[] | null} [tools]  functions the model may call, as `tools` in a request
   * @returns {string}
   */
  applyChatTemplate(messages, addGenerationPrompt = true, tools = null) {
    if (!this.template) {
      throw new InvalidRequestError(
        "messages",
        "this model has no chat template (a base model): send a prompt to completions.create",
      );
    }
    // The globals are set here rather than by Template.render, which declares its own
    // raise_exception (losing the message) and strftime_now (in the browser's language), and
    // refuses to redeclare them.
    const env = new Environment();
    const variables = {
      ...JINJA_LITERALS,
      range,
      raise_exception: (message) => {
        throw new InvalidRequestError("messages", `the model's chat template rejects them: ${message}`);
      },
      strftime_now: (format) => strftime(new Date(), format),
      ...this.specialTokens,
      messages,
      add_generation_prompt: addGenerationPrompt,
      ...(tools && { tools }),
    };
    for (const [name, value] of Object.entries(variables)) env.set(name, value);
    return new PythonInterpreter(env).run(this.template.parsed).value;
  }
}

/**
 * @huggingface/jinja's interpreter with Python's `str.strip/lstrip/rstrip(chars)`: the
 * library's ignore their argument and strip whitespace, where templates strip only what they
 * name (Qwen3's strips "\n" from a reply, keeping a leading "\r").
 */
class PythonInterpreter extends Interpreter {
  evaluateCallExpression(expr, environment) {
    const { callee } = expr;
    const name = callee.type === "MemberExpression" && !callee.computed ? callee.property.value : "";
    const sides = STRIP_SIDES[name];
    if (!sides || expr.args.length !== 1) return super.evaluateCallExpression(expr, environment);
    const [[chars]] = this.evaluateArguments(expr.args, environment);
    const object = this.evaluate(callee.object, environment);
    if (object.type !== "StringValue" || chars.type !== "StringValue") {
      return super.evaluateCallExpression(expr, environment); // what the library does with it
    }
    return new object.constructor(stripChars(object.value, chars.value, ...sides));
  }
}

let interpreterChecked = false;

/** The PythonInterpreter patch takes effect (see `probe`). */
function checkInterpreter() {
  if (interpreterChecked) return;
  const rendered = new PythonInterpreter(new Environment()).run(new Template("{{ 'xxa'.lstrip('x') }}").parsed);
  probe(rendered.value === "a", "jinja str.lstrip(chars)");
  interpreterChecked = true;
}

const STRIP_SIDES = { strip: [true, true], lstrip: [true, false], rstrip: [false, true] };

/** `text` without the characters of `chars` at its start and/or end, by code point. */
function stripChars(text, chars, start, end) {
  const points = Array.from(text);
  const strip = new Set(chars);
  let [i, j] = [0, points.length];
  while (start && i < j && strip.has(points[i])) i++;
  while (end && j > i && strip.has(points[j - 1])) j--;
  return points.slice(i, j).join("");
}

const JINJA_LITERALS = { true: true, false: false, none: null, True: true, False: false, None: null };

/** Python's range(). */
function range(start, stop, step = 1) {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error("range() step must not be zero");
  const out = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];

/**
 * Python's `datetime.now().strftime(format)` in the C locale that transformers renders with
 * (English names whatever the browser's language), for the directives templates use;
 * glibc's `%-d` style drops the zero padding.
 * @param {Date} date
 * @param {string} format
 */
export function strftime(date, format) {
  const hour12 = date.getHours() % 12 || 12;
  const year = date.getFullYear();
  const dayOfYear = (Date.UTC(year, date.getMonth(), date.getDate()) - Date.UTC(year, 0, 1)) / 86400000 + 1;
  const fields = {
    a: [DAYS[date.getDay()].slice(0, 3)],
    A: [DAYS[date.getDay()]],
    b: [MONTHS[date.getMonth()].slice(0, 3)],
    B: [MONTHS[date.getMonth()]],
    d: [date.getDate(), 2],
    H: [date.getHours(), 2],
    I: [hour12, 2],
    j: [dayOfYear, 3],
    m: [date.getMonth() + 1, 2],
    M: [date.getMinutes(), 2],
    p: [date.getHours() < 12 ? "AM" : "PM"],
    S: [date.getSeconds(), 2],
    y: [date.getFullYear() % 100, 2],
    Y: [date.getFullYear()],
    "%": ["%"],
  };
  return format.replace(/%(-?)([aAbBdHIjmMpSyY%])/g, (_, unpadded, directive) => {
    const [value, width] = fields[directive];
    return width && !unpadded ? String(value).padStart(width, "0") : String(value);
  });
}

/**
 * Turns a growing list of token ids into text deltas, holding back an incomplete UTF-8
 * sequence (decoded as U+FFFD) until the next token completes it. Each step decodes only the
 * tokens since the last emitted text and the one before them (which gives decoders that strip
 * a leading space their context), so the cost per token stays flat however long the reply.
 */
export class StreamDecoder {
  constructor(tokenizer) {
    this.tokenizer = tokenizer;
    this.ids = [];
    this.emitted = "";
    this.prefixStart = 0; // the tokens decoded before the new ones, for context
    this.newStart = 0; // the first token whose text is not emitted yet
  }

  push(id) {
    this.ids.push(id);
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixStart, this.newStart));
    const text = this.tokenizer.decode(this.ids.slice(this.prefixStart));
    if (text.endsWith("\uFFFD") || text.length <= prefix.length) return "";
    const delta = text.slice(prefix.length);
    this.prefixStart = this.newStart;
    this.newStart = this.ids.length;
    this.emitted += delta;
    return delta;
  }
}
