"""Qwen2 and Qwen2.5: the llama network with biases on the q, k and v projections. Their
GGUF files (`qwen2`) keep the Q/K rows in Hugging Face's rotate-half order, unlike llama's."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import BuildError
from ...formats import SourceTensor
from ...gguf_metadata import GGUFMetadata
from ..family import Family
from ..llama import LlamaConfig, LlamaForCausalLM, network_weights
from ..llama.weights import gguf_config, hf_name


def config_from_hf(raw: dict[str, Any], where: str) -> LlamaConfig:
    if raw.get("use_sliding_window", False):
        # Then only the layers from max_window_layers on slide, which the network does not do.
        raise BuildError(f"{where}: config field use_sliding_window=True is not implemented")
    # Qwen2 configs name a window that applies only when use_sliding_window is set.
    raw = {k: v for k, v in raw.items() if k != "sliding_window"}
    return dataclasses.replace(LlamaConfig.from_hf(raw, where), qkv_bias=True, o_bias=False)


def config_from_gguf(meta: GGUFMetadata, tensor_names: set[str]) -> LlamaConfig:
    config = gguf_config(meta, tensor_names, arch="qwen2")
    return dataclasses.replace(config, qkv_bias=True, o_bias=False)


def gguf_tensor(name: str, tensor: SourceTensor, c: LlamaConfig) -> tuple[str, SourceTensor]:
    """Names as llama's, Q/K rows as they are; q/k/v biases and head norms where the config
    has them (Qwen3 shares this)."""
    hf = hf_name(name) or ""
    head_norm = hf.endswith(("q_norm.weight", "k_norm.weight"))
    qkv_bias = hf.endswith((".q_proj.bias", ".k_proj.bias", ".v_proj.bias"))
    used = (
        (hf.endswith(".weight") and not head_norm)
        or (head_norm and c.qk_norm)
        or (qkv_bias and c.qkv_bias)
    )
    if not used:
        raise BuildError(f"GGUF tensor {name} is not part of the Qwen network")
    return hf, tensor


FAMILY = Family(
    name="qwen2",
    hf_architectures=("Qwen2ForCausalLM",),
    gguf_architectures=("qwen2",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=LlamaForCausalLM,
)
