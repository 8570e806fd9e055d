"""The qwen2 family's config reader: config.json and `qwen2` GGUF metadata -> the decoder's
config, with biases on the q, k and v projections (not on the output one)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import BuildError
from ...gguf_metadata import GGUFMetadata
from ..decoder import PLAIN_FIELDS, DecoderConfig, read_hf, refuse_unimplemented
from ..decoder.gguf import gguf_config


def config_from_hf(raw: dict[str, Any], where: str) -> DecoderConfig:
    if raw.get("use_sliding_window", False):
        # Then only the layers from max_window_layers on slide, which the network does not do.
        raise BuildError(f"{where}: config field use_sliding_window=True is not implemented")
    # Qwen2 configs name a window that applies only when use_sliding_window is set.
    raw = {k: v for k, v in raw.items() if k != "sliding_window"}
    refuse_unimplemented(raw, where, PLAIN_FIELDS)
    return read_hf(raw, where, qkv_bias=True, o_bias=False)


def config_from_gguf(meta: GGUFMetadata, tensor_names: set[str]) -> DecoderConfig:
    config = gguf_config(meta, tensor_names, arch="qwen2")
    return dataclasses.replace(config, qkv_bias=True, o_bias=False)
