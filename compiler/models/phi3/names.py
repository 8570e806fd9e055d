"""The phi3 family's tensor names. Its checkpoints already fuse q/k/v and gate/up, named as
the network names them; its GGUF files keep those fused matrices and Q/K rows in Hugging
Face's order, and carry LongRoPE's factors as tensors (which the config reads)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ...errors import BuildError
from ...formats import SourceTensor
from ..common import required
from ..decoder import DecoderConfig
from ..decoder.gguf import hf_name
from ..family import NetworkWeights
from .config import LONGROPE_FACTORS

# Each layer's matrices, named as the network names them (q/k/v and gate/up come fused).
MATRICES = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")

# GGUF layer tensors -> Hugging Face modules
GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_up": "mlp.gate_up_proj",  # gate and up, fused
    "ffn_down": "mlp.down_proj",
}


def network_weights(
    tensors: Mapping[str, SourceTensor],
    c: DecoderConfig,
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


def gguf_tensor(
    name: str, tensor: SourceTensor, c: DecoderConfig
) -> tuple[str, SourceTensor] | None:
    if name in LONGROPE_FACTORS and c.rope.max_context:
        return None  # in the config
    hf = hf_name(name, GGUF_LAYER_NAMES)
    if hf is None or not hf.endswith(".weight"):
        raise BuildError(f"GGUF tensor {name} is not part of the Phi-3 network")
    return hf, tensor
