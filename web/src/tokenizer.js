import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";

/** The model's tokenizer and chat template, as Hugging Face defines them. */
export class ChatTokenizer {
  constructor(tokenizerJson, tokenizerConfig) {
    this.config = tokenizerConfig;
    this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    this.template = tokenizerConfig.chat_template ? new Template(tokenizerConfig.chat_template) : null;
  }

  encode(text) {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids) {
    return this.tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  }

  applyChatTemplate(messages, addGenerationPrompt = true) {
    if (!this.template) throw new Error("this model has no chat template; use a raw prompt");
    return this.template.render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: this.config.bos_token ?? "",
      eos_token: this.config.eos_token ?? "",
    });
  }
}

/**
 * Turns a growing list of token ids into text deltas, holding back an incomplete UTF-8
 * sequence (decoded as U+FFFD) until the next token completes it.
 */
export class StreamDecoder {
  constructor(tokenizer) {
    this.tokenizer = tokenizer;
    this.ids = [];
    this.emitted = "";
  }

  push(id) {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids);
    if (text.endsWith("\uFFFD")) return "";
    const delta = text.slice(this.emitted.length);
    this.emitted = text;
    return delta;
  }
}
