/**
 * The vocabulary of a Hugging Face tokenizer.json as the grammar engine and `logprobs`
 * need it: each id's raw string, and the bytes each id stands for. @huggingface/tokenizers
 * decodes whole sequences to text, which cannot represent a token that is part of a UTF-8
 * character, so the byte mapping of the two common BPE flavours is done here.
 */

/** GPT-2's byte-level alphabet: which character stands for each byte. */
function byteLevelDecoder() {
  const printable = (b) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const table = new Map();
  let next = 256;
  for (let b = 0; b < 256; b++) table.set(String.fromCodePoint(printable(b) ? b : next++), b);
  return table;
}

const hasPart = (node, type) =>
  node != null &&
  (node.type === type ||
    (node.decoders ?? node.normalizers ?? node.pretokenizers ?? []).some((part) => hasPart(part, type)));

export class Vocabulary {
  constructor(tokenizerJson) {
    const { model, added_tokens: added = [], decoder, normalizer, pre_tokenizer: pre } = tokenizerJson;
    /** @type {string[]} id -> token string as the tokenizer stores it */
    this.tokens = [];
    const entries = Array.isArray(model.vocab)
      ? model.vocab.map(([token], id) => [token, id])
      : Object.entries(model.vocab);
    for (const [token, id] of entries) this.tokens[id] = token;
    this.special = new Set();
    this.added = new Set(); // stored as plain text, not in the model's byte alphabet
    for (const { id, content, special } of added) {
      this.tokens[id] = content;
      this.added.add(id);
      if (special) this.special.add(id);
    }
    for (let id = 0; id < this.tokens.length; id++) this.tokens[id] ??= "";
    this.type = hasPart(decoder, "ByteLevel")
      ? "byte_level"
      : model.byte_fallback || hasPart(decoder, "ByteFallback")
        ? "byte_fallback"
        : "raw";
    const metaspace = hasPart(pre, "Metaspace") || hasPart(decoder, "Metaspace") || hasPart(normalizer, "Prepend");
    this.prependSpace =
      hasPart(normalizer, "Prepend") ||
      [pre, ...(pre?.pretokenizers ?? [])].some(
        (p) => p?.type === "Metaspace" && (p.prepend_scheme ? p.prepend_scheme !== "never" : p.add_prefix_space),
      );
    this.metaspace = metaspace || this.type === "byte_fallback";
    this.byteLevel = this.type === "byte_level" ? byteLevelDecoder() : null;
    this.encoder = new TextEncoder();
  }

  /** The bytes token `id` contributes to the text. */
  bytes(id) {
    const token = this.tokens[id] ?? "";
    if (this.added.has(id)) return Array.from(this.encoder.encode(token));
    if (this.byteLevel) return Array.from(token, (ch) => this.byteLevel.get(ch) ?? 0x3f);
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
    if (byte && this.type === "byte_fallback") return [parseInt(byte[1], 16)];
    return Array.from(this.encoder.encode(this.metaspace ? token.replaceAll("\u2581", " ") : token));
  }
}
