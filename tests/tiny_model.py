"""Makes tiny random-weight llama-family models in Hugging Face layout for the tests."""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "WebGPU runs compute shaders in the browser; language models need matrix products.",
    "def main():\n    print('hello world')\n",
    "Numbers 0123456789 and symbols !@#$%^&*() appear too.",
]
# Llama-2's chat template, as its tokenizer_config.json ships it.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)


def make_tokenizer(folder: Path, vocab_size: int) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "chat_template": CHATML,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return tok.get_vocab_size()


def _added_token(content: str) -> dict:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    }


def make_sentencepiece_tokenizer(folder: Path, vocab_size: int, metaspace: bool = False) -> int:
    """A Llama-2-style tokenizer: BPE over "▁"-joined words with byte fallback to <0x00>..<0xFF>,
    <unk> <s> </s> as ids 0, 1, 2. The "▁" comes from the normalizer (Prepend + Replace, as
    Llama-2's tokenizer.json has it) or, with `metaspace`, from a Metaspace pre-tokenizer that
    prepends only at the start of the text (the newer conversions, Gemma-like)."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    # Training splits at "▁" so that merges stay inside words; a small alphabet leaves most
    # characters to the byte fallback.
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials) - len(byte_tokens),
        limit_alphabet=48,
        show_progress=False,
    )
    trainer_tok.train_from_iterator(CORPUS * 4, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(specials + byte_tokens)}
    for token in sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="first", split=False)
    else:
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        # Llama-2's tokenizer_config.json gives its special tokens as AddedToken objects.
        "bos_token": _added_token("<s>"),
        "eos_token": _added_token("</s>"),
        "unk_token": _added_token("<unk>"),
        "pad_token": None,
        "chat_template": LLAMA2_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "legacy": not metaspace,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return tok.get_vocab_size()


# make_llama's architectures -> the transformers config and model classes.
ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
}


def make_llama(
    folder: Path,
    seed: int = 0,
    tie: bool = False,
    tokenizer: str = "byte_level",
    dtype: str = "float32",
    max_shard_size: str | None = None,
    architecture: str = "llama",
    **overrides,
) -> Path:
    """Writes config.json, model.safetensors and the tokenizer files; returns `folder`.
    `tokenizer`: "byte_level" (GPT-2-style BPE, ChatML template) or "sentencepiece" (Llama-2
    style, see `make_sentencepiece_tokenizer`). `dtype`: the weights' (float32, float16 or
    bfloat16); `max_shard_size` (e.g. "100KB") splits them into shards with
    model.safetensors.index.json, as transformers does. `architecture`: the transformers
    family (a key of ARCHITECTURES); `overrides` set any of its config fields."""
    import torch
    import transformers

    config_class, model_class = (getattr(transformers, n) for n in ARCHITECTURES[architecture])

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer == "sentencepiece":
        vocab = make_sentencepiece_tokenizer(folder, 400)
    elif tokenizer == "byte_level":
        vocab = make_tokenizer(folder, 320)
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}: byte_level or sentencepiece")
    settings = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
    )
    settings.update(overrides)
    torch.manual_seed(seed)
    model = model_class(config_class(**settings))
    with torch.no_grad():
        for name, p in model.named_parameters():  # larger than the default init: peaked logits
            norm = p.ndim == 1 and not name.endswith("bias")
            p.normal_(0, 0.3 if p.ndim > 1 else 0.1).add_(1.0 if norm else 0.0)
    model = model.to(getattr(torch, dtype))
    sharding = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, safe_serialization=True, **sharding)
    return folder
