// The model's tokenizer (@huggingface/tokenizers, brought in line with the Rust library) and
// its chat template (chat_template.js), and the decoder of a streamed reply's text.
import { Tokenizer } from "@huggingface/tokenizers";
import { InvalidRequestError, KilnError } from "../errors.js";
import { ChatTemplate } from "./chat_template.js";

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
    this.template = tokenizerConfig.chat_template ? new ChatTemplate(tokenizerConfig.chat_template) : null;
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
    return this.template.render({
      ...this.specialTokens,
      messages,
      add_generation_prompt: addGenerationPrompt,
      ...(tools && { tools }),
    });
  }
}

/**
 * Turns a growing list of token ids into text deltas, holding back an incomplete UTF-8
 * sequence (decoded as U+FFFD) until the next token completes it. Each step decodes only the
 * tokens since the last emitted text and the one before them (which gives decoders that strip
 * a leading space their context), so the cost per token stays flat however long the reply.
 * `markers` (id -> text) are special tokens whose text is kept, which decoding leaves out: the
 * tokens a tool call is written with (text/tool_formats.js).
 */
export class StreamDecoder {
  /** @param {ChatTokenizer} tokenizer @param {Map<number, string>} [markers] */
  constructor(tokenizer, markers = new Map()) {
    this.tokenizer = tokenizer;
    this.markers = markers;
    this.ids = [];
    this.emitted = "";
    this.prefixStart = 0; // the tokens decoded before the new ones, for context
    this.newStart = 0; // the first token whose text is not emitted yet
    this.base = 0; // the first token after the last marker, and the text emitted by then
    this.emittedBase = 0;
  }

  push(id) {
    const marker = this.markers.get(id);
    if (marker !== undefined) {
      // The text before it is complete: released whole, then the marker's.
      const delta = this.rest() + marker;
      this.ids.push(id);
      [this.prefixStart, this.newStart, this.base] = [this.ids.length, this.ids.length, this.ids.length];
      this.emitted += delta;
      this.emittedBase = this.emitted.length;
      return delta;
    }
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

  /** The text held back so far (an unfinished character), as the end of the reply releases it. */
  rest() {
    return this.tokenizer.decode(this.ids.slice(this.base)).slice(this.emitted.length - this.emittedBase);
  }
}
