"""Phi-3 and Phi-3.5 (`Phi3ForCausalLM`): the llama network, its checkpoints already fusing
q/k/v and gate/up, with LongRoPE where the config has it and a sliding window."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...formats import SourceTensor
from ..common import required
from ..family import Family, NetworkWeights, no_gguf
from ..llama import LlamaConfig, LlamaForCausalLM

# Each layer's matrices, named as the network names them (q/k/v and gate/up come fused).
MATRICES = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


def config_from_hf(raw: dict[str, Any], where: str) -> LlamaConfig:
    return LlamaConfig.from_hf(raw, where)


def network_weights(
    tensors: Mapping[str, SourceTensor],
    c: LlamaConfig,
    format_name: Callable[[SourceTensor, str], str],
    model_id: str,
) -> NetworkWeights:
    get = required(tensors, model_id)
    yield "embed_tokens", get("model.embed_tokens.weight")
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        for norm in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            yield p + norm, get(f"model.{p}{norm}")
        for matrix in (
            "self_attn.qkv_proj",
            "self_attn.o_proj",
            "mlp.gate_up_proj",
            "mlp.down_proj",
        ):
            yield p + matrix, get(f"model.{p}{matrix}.weight")
    yield "norm.weight", get("model.norm.weight")
    if not c.tie_word_embeddings:
        yield "lm_head", get("lm_head.weight")


FAMILY = Family(
    name="phi3",
    hf_architectures=("Phi3ForCausalLM",),
    gguf_architectures=(),
    config_from_hf=config_from_hf,
    config_from_gguf=no_gguf("phi3"),
    gguf_tensor=no_gguf("phi3"),
    network_weights=network_weights,
    network=LlamaForCausalLM,
)
