"""Qwen3 (dense): the llama network with an RMSNorm over each query and key head before rope,
and no biases. GGUF `qwen3` keeps Q/K rows in rotate-half order, as `qwen2` does."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...gguf_metadata import GGUFMetadata
from .. import qwen2
from ..family import Family
from ..llama import LlamaConfig, LlamaForCausalLM, network_weights
from ..llama.weights import gguf_config


def config_from_hf(raw: dict[str, Any], where: str) -> LlamaConfig:
    bias = bool(raw.get("attention_bias", False))
    config = qwen2.config_from_hf(raw, where)  # Qwen2's sliding-window rules hold here too
    return dataclasses.replace(config, qkv_bias=bias, o_bias=bias, qk_norm=True)


def config_from_gguf(meta: GGUFMetadata, tensor_names: set[str]) -> LlamaConfig:
    config = gguf_config(meta, tensor_names, arch="qwen3")
    return dataclasses.replace(config, qk_norm=True)


FAMILY = Family(
    name="qwen3",
    hf_architectures=("Qwen3ForCausalLM",),
    gguf_architectures=("qwen3",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=qwen2.gguf_tensor,
    network_weights=network_weights,
    network=LlamaForCausalLM,
)
