"""Builds a Hugging Face tokenizer.json from a GGUF file's tokenizer metadata.

No library does this correctly for the files we ship (transformers' GGUF loader loses the
`smollm` pre-tokenizer's digit split and mislabels end-of-sequence), so it is written here
against the two formats: llama.cpp's metadata keys and tokenizers' JSON schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import BuildError

_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4

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
# Llama 3's split (digits in runs of up to three), then bytes.
_LLAMA3 = {
    "type": "Sequence",
    "pretokenizers": [
        {
            "type": "Split",
            "pattern": {
                "Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
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
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
    "llama-v3": _LLAMA3,
}
_NORMALIZERS: dict[str, dict[str, Any]] = {"qwen2": {"type": "NFC"}}
# Pre-tokenizers whose words found whole in the vocabulary are taken as they are (Llama 3's).
_IGNORE_MERGES = {"llama-bpe", "llama3", "llama-v3"}


def tokenizer_from_gguf(
    field: Callable[[str, Any], Any],
) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """Returns (tokenizer.json, tokenizer_config.json, the ids that end a reply) from GGUF
    metadata."""
    kind = field("tokenizer.ggml.model", None)
    if kind not in _MODELS:
        raise BuildError(
            f"GGUF tokenizer model {kind!r} is not supported; supported: gpt2 (BPE), "
            "llama (SentencePiece BPE)"
        )
    tokens: list[str] = list(field("tokenizer.ggml.tokens", []))
    types: list[int] = list(field("tokenizer.ggml.token_type", [_NORMAL] * len(tokens)))
    bos = field("tokenizer.ggml.bos_token_id", None)
    eos = field("tokenizer.ggml.eos_token_id", None)
    add_bos = bool(field("tokenizer.ggml.add_bos_token", False))
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": type_ == _CONTROL,  # user-defined tokens are text (decoded)
            }
            for i, (token, type_) in enumerate(zip(tokens, types, strict=True))
            if type_ in (_CONTROL, _USER_DEFINED)
        ],
        **_MODELS[kind](field, tokens, types),
        "post_processor": _bos_processor(tokens[bos], bos) if add_bos and bos is not None else None,
    }
    config = {
        "add_bos_token": add_bos,
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
    return tokenizer, config, _end_tokens(field, tokens, types, eos)


# Control tokens that end a turn, by their text, as llama.cpp recognises them besides
# the file's eos and eot ids (a chat model's end of turn is often not its eos token).
_END_OF_TURN = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "<end_of_utterance>",
}


def _end_tokens(
    field: Callable[[str, Any], Any], tokens: list[str], types: list[int], eos: int | None
) -> list[int]:
    ends = [int(eos)] if eos is not None else []
    eot = field("tokenizer.ggml.eot_token_id", None)
    ends += [int(eot)] if eot is not None else []
    ends += [
        i
        for i, (token, type_) in enumerate(zip(tokens, types, strict=True))
        if type_ == _CONTROL and token in _END_OF_TURN
    ]
    return list(dict.fromkeys(ends))


def _byte_level_bpe(
    field: Callable[[str, Any], Any], tokens: list[str], _types: list[int]
) -> dict[str, Any]:
    """GPT-2's byte-level BPE (`gpt2`): the file carries the merges."""
    pre = field("tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise BuildError(
            f"GGUF pre-tokenizer {pre!r} is not supported; supported: {', '.join(_PRE_TOKENIZERS)}"
        )
    return {
        "normalizer": _NORMALIZERS.get(pre),
        "pre_tokenizer": _PRE_TOKENIZERS[pre],
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
            "ignore_merges": pre in _IGNORE_MERGES,
            "vocab": {token: i for i, token in enumerate(tokens)},
            "merges": list(field("tokenizer.ggml.merges", [])),
        },
    }


def _sentencepiece_bpe(
    field: Callable[[str, Any], Any], tokens: list[str], types: list[int]
) -> dict[str, Any]:
    """SentencePiece's BPE (`llama`) as llama.cpp runs it: spaces become U+2581 (and one is
    put before the text where add_space_prefix says so), then the adjacent pair whose union
    is the best-scoring vocabulary token merges first, and what no token covers falls back to
    its UTF-8 bytes. The file has scores, not merges: each normal token's splits into two
    tokens become merges ranked by its score, which makes tokenizers' BPE take the same
    steps. Control and user-defined tokens are matched in the raw text first, as added
    tokens (so a user-defined run of spaces is matched as the spaces it holds)."""
    scores: list[float] = list(field("tokenizer.ggml.scores", [0.0] * len(tokens)))
    ids = {token: i for i, token in enumerate(tokens)}
    normal = [i for i, type_ in enumerate(types) if type_ == _NORMAL]
    merges = [
        (-scores[i], len(tokens[i][:cut]), tokens[i][:cut], tokens[i][cut:])
        for i in normal
        for cut in range(1, len(tokens[i]))
        if tokens[i][:cut] in ids and tokens[i][cut:] in ids
    ]
    merges.sort(key=lambda m: (m[0], -m[1]))  # best score first; then the longer left part
    unknown = field("tokenizer.ggml.unknown_token_id", None)
    space_prefix = bool(field("tokenizer.ggml.add_space_prefix", True))
    escape = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    unescape = {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}
    decoders = [unescape, {"type": "ByteFallback"}, {"type": "Fuse"}]
    if space_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "normalizer": (
            {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"}, escape]}
            if space_prefix
            else escape
        ),
        "pre_tokenizer": None,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": tokens[unknown] if unknown is not None else None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": ids,
            "merges": [[left, right] for *_, left, right in merges],
        },
    }


def _bos_processor(token: str, token_id: int) -> dict[str, Any]:
    """Puts the beginning-of-sequence token before an encoded text (add_bos_token)."""
    bos = {"SpecialToken": {"id": token, "type_id": 0}}
    return {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            bos,
            {"Sequence": {"id": "A", "type_id": 0}},
            bos,
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {token: {"id": token, "ids": [token_id], "tokens": [token]}},
    }


_MODELS = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe}
