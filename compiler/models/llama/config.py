"""The llama family's config reader: config.json and `llama` GGUF metadata -> the decoder's
config."""

from __future__ import annotations

from typing import Any

from ...gguf_metadata import GGUFMetadata
from ..decoder import PLAIN_FIELDS, DecoderConfig, read_hf, refuse_unimplemented
from ..decoder.gguf import gguf_config


def config_from_hf(raw: dict[str, Any], where: str) -> DecoderConfig:
    """Mistral's sliding window included; Llama's attention_bias sets the q/k/v and output
    projections' biases."""
    refuse_unimplemented(raw, where, PLAIN_FIELDS)
    return read_hf(raw, where)


def config_from_gguf(meta: GGUFMetadata, tensor_names: set[str]) -> DecoderConfig:
    """rope_freqs (Llama 3.1's scaling, one divisor per rotated pair) goes into the rope. The
    files permute Q/K rows for all of each head, so none is partially rotated."""
    return gguf_config(meta, tensor_names, arch="llama")
