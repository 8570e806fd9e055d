import { GrammarError, InvalidRequestError } from "../errors.js";
import { warn } from "../log.js";
import { callHead } from "./tool_formats.js";

/**
 * A trap of XGrammar's wasm, or its recursion overflowing the JS stack, rather than an error
 * it reports: either leaves its instance unusable (the wasm stack pointer is not restored).
 */
const isTrap = (err) => err instanceof WebAssembly.RuntimeError || err instanceof RangeError;

/**
 * Structured output: `response_format` turned into a grammar that XGrammar enforces token by
 * token, by masking the logits of every token the grammar cannot accept next.
 * The XGrammar module (wasm) is loaded on first use.
 */
export class GrammarEngine {
  /**
   * @param {import("./vocab.js").Vocabulary} vocabulary
   * @param {number} vocabSize  the model's logits width (may exceed the tokenizer's)
   * @param {number[]} stopTokenIds
   * @param {Map<number, string>} [markers]  special tokens a tool call is written with (tool_formats.js)
   */
  constructor(vocabulary, vocabSize, stopTokenIds, markers = new Map()) {
    this.vocabulary = vocabulary;
    this.vocabSize = vocabSize;
    this.stopTokenIds = stopTokenIds;
    this.markers = markers;
    this.compiled = new Map(); // grammar key -> Promise<CompiledGrammar>
  }

  async #compiler() {
    this.compilerPromise ??= (async () => {
      const module = await import("@mlc-ai/web-xgrammar");
      // The package is a UMD bundle in a "type": "module" package: bundled as ESM it finds
      // neither `exports` nor AMD and publishes itself as globalThis.xgrammar.
      this.xgr = module.TokenizerInfo ? module : (module.default ?? globalThis.xgrammar);
      const { tokens, special, type, prependSpace } = this.vocabulary;
      // Special tokens become "": XGrammar never allows them inside structured text. Those a
      // tool call is written with keep their text, so that the model can write a call its way.
      const encoded = tokens.map((t, id) => (special.has(id) && !this.markers.has(id) ? "" : t));
      const info = await this.xgr.TokenizerInfo.createTokenizerInfo(
        encoded,
        type,
        prependSpace,
        this.vocabSize,
        this.stopTokenIds,
      );
      return this.xgr.GrammarCompiler.createGrammarCompiler(info);
    })();
    return this.compilerPromise;
  }

  /** A fresh matcher for one generation under `responseFormat`, or null for free text. */
  async matcher(responseFormat) {
    const schema = schemaOf(responseFormat);
    if (schema === undefined) return null;
    // Compact JSON on one line: whitespace the grammar leaves open is where small models
    // wander off and never close the object.
    return this.#matcher(
      `schema:${schema ?? ""}`,
      "response_format",
      "the JSON schema",
      (compiler) => compiler.compileJSONSchema(schema ?? '{"type": "object"}', false, -1, [", ", ": "]),
      this.#controlTokens(),
    );
  }

  /**
   * A fresh matcher for a reply with `tools` in `format` (tool_formats.js; see toolCallTag):
   * with `choice` "auto", free text in which a tool call, once begun, follows its tool's
   * parameters; "required" or a function's name ({name}), one call or more (one if not
   * `parallel`) and nothing else.
   */
  async toolMatcher(format, tools, choice, parallel) {
    const chosen = typeof choice === "object" ? tools.filter((t) => t.function.name === choice.name) : tools;
    const key = `tools:${JSON.stringify([format.name, chosen, choice, parallel])}`;
    // Each call's arguments as compact JSON on one line (as for response_format): the grammar
    // of its parameters in XGrammar's EBNF, inside the call's tag.
    const compile = async (compiler) => {
      const grammars = [];
      for (const { function: fn } of chosen) {
        const schema = JSON.stringify(exactNumberBounds(fn.parameters));
        const grammar = await this.xgr.Grammar.fromJSONSchema(schema, false, -1, [", ", ": "]);
        grammars.push(grammar.toString());
        grammar.dispose();
      }
      return compiler.compileStructuralTag(toolCallTag(format, chosen, grammars, choice === "auto", parallel));
    };
    // No token is banned: the call's format has newlines (its strings cannot hold raw ones).
    return this.#matcher(key, "tools", "the tools' parameters", compile, []);
  }

  async #matcher(key, field, what, compile, banned) {
    try {
      const compiler = await this.#compiler();
      if (!this.compiled.has(key)) {
        const compiling = compile(compiler);
        const compiled = this.compiled;
        compiled.set(key, compiling);
        compiling.catch(() => compiled.delete(key));
      }
      const matcher = await this.xgr.GrammarMatcher.createGrammarMatcher(
        await this.compiled.get(key),
        this.stopTokenIds,
      );
      return new TokenMask(matcher, banned, (err) => this.#restart(err));
    } catch (err) {
      if (!isTrap(err)) throw new InvalidRequestError(field, `${what} cannot be compiled: ${err.message ?? err}`);
      this.#restart(err);
      throw new InvalidRequestError(
        field,
        `the grammar engine failed on ${what} (${err.message}); it starts afresh for the next request`,
      );
    }
  }

  /** Drops the wasm instance after a trap, and everything made with it: the next use starts a fresh one. */
  #restart(err) {
    warn("XGrammar's wasm trapped; it starts afresh on the next structured request", err);
    this.xgr?.resetBinding();
    this.compilerPromise = null;
    this.compiled = new Map();
  }

  /**
   * Tokens holding a raw control character. Compact JSON never has one (inside strings they
   * are escaped), but XGrammar 0.1.27 lets them into strings with a length limit.
   */
  #controlTokens() {
    if (!this.control) {
      const { tokens, special } = this.vocabulary;
      this.control = [];
      for (let id = 0; id < tokens.length; id++) {
        if (!special.has(id) && this.vocabulary.bytes(id).some((b) => b < 0x20)) this.control.push(id);
      }
    }
    return this.control;
  }

  dispose() {
    this.compilerPromise
      ?.then((compiler) => compiler.dispose())
      .catch((err) => warn("The grammar compiler could not be disposed", err));
  }
}

/**
 * The JSON schema text a response_format asks for: null for any JSON, undefined for free text.
 * Takes WebLLM's `{type: "json_object", schema}` and OpenAI's
 * `{type: "json_schema", json_schema: {name, schema, strict}}`.
 */
export function schemaOf(responseFormat) {
  if (responseFormat == null || responseFormat.type === "text") return undefined;
  const schema = responseFormat.type === "json_schema" ? responseFormat.json_schema?.schema : responseFormat.schema;
  if (schema == null) return null;
  return typeof schema === "string" ? schema : JSON.stringify(schema);
}

/**
 * `schema` with each number bounded by whole numbers rewritten for XGrammar 0.1.27, which
 * bounds only a number's integer part (for a maximum of 1 it lets 1.6 through): a whole
 * number within the bounds, or a number whose integer part keeps it within them.
 */
export function exactNumberBounds(schema) {
  if (Array.isArray(schema)) return schema.map(exactNumberBounds);
  if (schema === null || typeof schema !== "object") return schema;
  const out = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, exactNumberBounds(v)]));
  const { type, minimum, maximum } = out;
  const whole = (x) => x === undefined || Number.isInteger(x);
  // Only a maximum, or a negative minimum, can be overstepped by a fraction.
  const loose = maximum !== undefined || (minimum !== undefined && minimum < 0);
  if (type !== "number" || !loose || !whole(minimum) || !whole(maximum)) return out;
  const fraction = { ...out };
  if (maximum !== undefined) fraction.maximum = maximum - 1;
  if (minimum !== undefined && minimum < 0) fraction.minimum = minimum + 1;
  const { type: _, minimum: __, maximum: ___, ...rest } = out;
  const integer = {
    type: "integer",
    ...(minimum !== undefined && { minimum }),
    ...(maximum !== undefined && { maximum }),
  };
  const branches =
    fraction.maximum === undefined || fraction.minimum === undefined || fraction.maximum >= fraction.minimum
      ? [integer, fraction]
      : [integer];
  return Object.keys(rest).length ? { ...rest, anyOf: branches } : { anyOf: branches };
}

/**
 * XGrammar's structural tag for a reply in `format` (tool_formats.js) that may (`auto`) or
 * must call one of `tools`: each call its `callHead`, then ARGS following the tool's grammar
 * (`grammars`, in order), then its `end`; in a list between `open` and `close` where the
 * format has one. With `auto`, free text until the format's trigger (and, for a format
 * without a list, between calls), else calls only; one call unless `parallel` (and the
 * format takes several).
 */
export function toolCallTag(format, tools, grammars, auto, parallel) {
  const one = !parallel || !format.parallel;
  const tags = tools.map(({ function: fn }, i) => ({
    type: "tag",
    begin: callHead(format, fn.name),
    content: { type: "grammar", grammar: grammars[i] },
    end: format.end,
  }));
  // XGrammar refuses an empty separator: a format without one takes one call (Llama 3's).
  const calls = !format.separator
    ? { type: "or", elements: tags }
    : {
        type: "tags_with_separator",
        tags,
        separator: format.separator,
        at_least_one: true,
        stop_after_first: one,
      };
  if (format.open) {
    const list = { type: "tag", begin: format.open, content: calls, end: format.close };
    const listed = auto
      ? {
          type: "triggered_tags",
          triggers: [format.trigger],
          tags: [list],
          at_least_one: false,
          stop_after_first: true,
        }
      : list;
    return { type: "structural_tag", format: listed };
  }
  return {
    type: "structural_tag",
    format: auto
      ? { type: "triggered_tags", triggers: [format.trigger], tags, at_least_one: false, stop_after_first: one }
      : calls,
  };
}

/** A matcher for one generation: masks logits, follows the accepted tokens. */
class TokenMask {
  /**
   * @param {any} matcher  XGrammar's GrammarMatcher
   * @param {number[]} banned  token ids masked always
   * @param {(err: unknown) => void} onTrap  told when the wasm traps
   */
  constructor(matcher, banned, onTrap) {
    this.matcher = matcher;
    this.banned = banned;
    this.onTrap = onTrap;
  }

  #call(method, ...args) {
    const trapped = (err) => {
      if (isTrap(err)) this.onTrap(err);
      throw err;
    };
    try {
      const result = this.matcher[method](...args);
      return result instanceof Promise ? result.catch(trapped) : result;
    } catch (err) {
      return trapped(err);
    }
  }

  /** Sets the logit of every token the grammar forbids next to -Infinity. */
  async apply(logits) {
    const bitmask = await this.#call("getNextTokenBitmask");
    for (let id = 0; id < logits.length; id++) {
      if (((bitmask[id >> 5] >>> (id & 31)) & 1) === 0) logits[id] = -Infinity;
    }
    for (const id of this.banned) logits[id] = -Infinity;
  }

  /**
   * The tokens the grammar allows next as a bit each (token i: bit i & 31 of word i >> 5), the
   * banned ones cleared: the mask the device applies (compiler/logit_edits.py) as `apply` does.
   */
  async bitmask(vocab) {
    const words = new Int32Array(Math.ceil(vocab / 32));
    const allowed = await this.#call("getNextTokenBitmask");
    words.set(allowed.subarray(0, words.length));
    for (const id of this.banned) words[id >> 5] &= ~(1 << (id & 31));
    return words;
  }

  accept(token) {
    if (!this.#call("acceptToken", token)) throw new GrammarError(`the grammar rejected token ${token}`);
  }

  get terminated() {
    return this.#call("isTerminated");
  }

  dispose() {
    try {
      this.matcher.dispose();
    } catch (err) {
      warn("A grammar matcher could not be disposed", err);
    }
  }
}
