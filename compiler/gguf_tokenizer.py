"""Builds a Hugging Face tokenizer.json from a GGUF file's tokenizer metadata.

No library does this correctly for the files we ship (transformers' GGUF loader loses the
`smollm` pre-tokenizer's digit split and mislabels end-of-sequence), so it is written here
against the two formats: llama.cpp's metadata keys and tokenizers' JSON schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import BuildError

_CONTROL, _USER_DEFINED = 3, 4

_BYTE_LEVEL = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}
# Qwen2's split (its tokenizer.json's, as the upstream tokenizer ships it), then bytes.
_QWEN2 = {
    "type": "Sequence",
    "pretokenizers": [
        {
            "type": "Split",
            "pattern": {
                "Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            },
            "behavior": "Isolated",
            "invert": False,
        },
        {**_BYTE_LEVEL, "trim_offsets": False, "use_regex": False},
    ],
}
# llama.cpp's pre-tokenizer names -> the equivalent tokenizers pre_tokenizer and normalizer.
_PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "default": _BYTE_LEVEL,
    "gpt2": _BYTE_LEVEL,
    "gpt-2": _BYTE_LEVEL,  # what llama.cpp's converter writes for GPT-2's own split
    # llama.cpp splits every digit alone, then applies GPT-2's regex.
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL],
    },
    "qwen2": _QWEN2,
}
_NORMALIZERS: dict[str, dict[str, Any]] = {"qwen2": {"type": "NFC"}}


def tokenizer_from_gguf(
    field: Callable[[str, Any], Any],
) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """Returns (tokenizer.json, tokenizer_config.json, eos ids) from GGUF metadata."""
    kind = field("tokenizer.ggml.model", None)
    if kind != "gpt2":
        raise BuildError(f"GGUF tokenizer model {kind!r} is not supported; supported: gpt2 (BPE)")
    pre = field("tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise BuildError(
            f"GGUF pre-tokenizer {pre!r} is not supported; supported: {', '.join(_PRE_TOKENIZERS)}"
        )
    tokens: list[str] = list(field("tokenizer.ggml.tokens", []))
    types: list[int] = list(field("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges: list[str] = list(field("tokenizer.ggml.merges", []))
    added = [
        {
            "id": i,
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, (tok, kind_) in enumerate(zip(tokens, types, strict=True))
        if kind_ in (_CONTROL, _USER_DEFINED)
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": _NORMALIZERS.get(pre),
        "pre_tokenizer": _PRE_TOKENIZERS[pre],
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": merges,
        },
    }
    bos = field("tokenizer.ggml.bos_token_id", None)
    eos = field("tokenizer.ggml.eos_token_id", None)
    config = {
        "add_bos_token": bool(field("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": False,
        "bos_token": tokens[bos] if bos is not None else None,
        "eos_token": tokens[eos] if eos is not None else None,
        "chat_template": field("tokenizer.chat_template", None),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(
            field(f"{field('general.architecture', 'llama')}.context_length", 2048)
        ),
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    return tokenizer, config, [int(eos)] if eos is not None else []
