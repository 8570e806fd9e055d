"""The phi3 family's config reader: config.json and `phi3` GGUF metadata -> the decoder's
config, with LongRoPE where the config has it, a part of each head rotated where
partial_rotary_factor says (Phi-4-mini), and a sliding window."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...gguf_metadata import GGUFMetadata
from ..decoder import PLAIN_FIELDS, DecoderConfig, read_hf, refuse_unimplemented
from ..decoder.gguf import gguf_config, gguf_rope
from ..decoder.rope import longrope_attention

# LongRoPE's per-dimension factors (Phi-3 128k, Phi-3.5), which the config carries.
LONGROPE_FACTORS = ("rope_factors_short.weight", "rope_factors_long.weight")


def config_from_hf(raw: dict[str, Any], where: str) -> DecoderConfig:
    refuse_unimplemented(raw, where, PLAIN_FIELDS)
    # transformers' Phi-3 rotates the first partial_rotary_factor of each head (Phi-4-mini).
    return read_hf(raw, where, partial_rotary=True)


def config_from_gguf(meta: GGUFMetadata, tensor_names: set[str]) -> DecoderConfig:
    # Its files keep Q/K rows in rotate-half order, so a part of each head may be rotated.
    config = gguf_config(meta, tensor_names, arch="phi3", partial_rotary=True)
    window = meta.number("phi3.attention.sliding_window", int, 0)
    if LONGROPE_FACTORS[0] in tensor_names:
        rope = config.rope
        factors = meta.vector(LONGROPE_FACTORS[0], rope.rotary_dim // 2)
        original = meta.number("phi3.rope.scaling.original_context_length")
        default = longrope_attention(config.max_position_embeddings / original, original)
        attention = meta.number("phi3.rope.scaling.attn_factor", float, default)
        config = dataclasses.replace(
            config, rope=gguf_rope(rope.theta, rope.rotary_dim, factors, attention, original)
        )
    return dataclasses.replace(config, sliding_window=window or None)
