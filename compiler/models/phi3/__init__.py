"""Phi-3 and Phi-3.5 (`Phi3ForCausalLM`, GGUF `phi3`): the llama network, its checkpoints
already fusing q/k/v and gate/up, with LongRoPE where the config has it and a sliding window.
Its GGUF files keep the fused matrices and Q/K rows in Hugging Face's order, and carry
LongRoPE's factors as tensors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ...errors import BuildError
from ...formats import SourceTensor
from ...gguf_metadata import GGUFMetadata
from ..common import required
from ..family import Family, NetworkWeights
from ..llama import LlamaConfig, LlamaForCausalLM
from ..llama.weights import GGUF_NAMES, gguf_config, gguf_rope
from ..rope import longrope_attention

# Each layer's matrices, named as the network names them (q/k/v and gate/up come fused).
MATRICES = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


def config_from_hf(raw: dict[str, Any], where: str) -> LlamaConfig:
    # transformers' Phi-3 rotates the first partial_rotary_factor of each head (Phi-4-mini).
    return LlamaConfig.from_hf(raw, where, partial_rotary=True)


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
        for matrix in MATRICES:
            yield p + matrix, get(f"model.{p}{matrix}.weight")
    yield "norm.weight", get("model.norm.weight")
    if not c.tie_word_embeddings:
        yield "lm_head", get("lm_head.weight")


# GGUF layer tensors -> Hugging Face modules
GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_up": "mlp.gate_up_proj",  # gate and up, fused
    "ffn_down": "mlp.down_proj",
}
# LongRoPE's per-dimension factors (Phi-3 128k, Phi-3.5), which the config carries.
LONGROPE_FACTORS = ("rope_factors_short.weight", "rope_factors_long.weight")


def config_from_gguf(meta: GGUFMetadata, tensor_names: set[str]) -> LlamaConfig:
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


def gguf_tensor(name: str, tensor: SourceTensor, c: LlamaConfig) -> tuple[str, SourceTensor] | None:
    if name in LONGROPE_FACTORS and c.rope.max_context:
        return None  # in the config
    parts = name.split(".")
    hf = GGUF_NAMES.get(name)
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in GGUF_LAYER_NAMES:
        hf = f"model.layers.{parts[1]}.{GGUF_LAYER_NAMES[parts[2]]}.{parts[3]}"
    if hf is None or not hf.endswith(".weight"):
        raise BuildError(f"GGUF tensor {name} is not part of the Phi-3 network")
    return hf, tensor


FAMILY = Family(
    name="phi3",
    hf_architectures=("Phi3ForCausalLM",),
    gguf_architectures=("phi3",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=LlamaForCausalLM,
)
