"""Gemma 2: Gemma 3's network without the q/k norms, one rope base for every layer, local
(sliding-window) and global layers alternating, and soft caps on the attention scores and
the output logits. Its GGUF files (`gemma2`) are laid out as gemma3's."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...gguf_metadata import GGUFMetadata
from ..family import Family
from ..gemma3 import Gemma3Config, Gemma3ForCausalLM
from ..gemma3.config import gguf_gemma_config
from ..gemma3.weights import gguf_tensor, network_weights
from ..rope import rope_from_hf

# Gemma2Config's defaults for fields a config.json may leave out
DEFAULTS = {
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "rope_theta": 10000.0,
}


def config_from_hf(raw: dict[str, Any], where: str) -> Gemma3Config:
    raw = {**DEFAULTS, **raw}
    layers = int(raw.get("num_hidden_layers", 0))
    raw.setdefault(
        "layer_types",
        ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)],
    )
    # One rope for every layer, read as any family's flat rope settings.
    plain = {k: v for k, v in raw.items() if k not in ("rope_parameters", "rope_scaling")}
    config = Gemma3Config.from_hf(plain, where)
    rope = rope_from_hf(raw, config.head_dim, where)
    return dataclasses.replace(config, rope=rope, rope_local=None, qk_norm=False)


def config_from_gguf(meta: GGUFMetadata, tensor_names: set[str]) -> Gemma3Config:
    return gguf_gemma_config(meta, tensor_names, "gemma2", global_every=2, local_theta=None)


FAMILY = Family(
    name="gemma2",
    hf_architectures=("Gemma2ForCausalLM",),
    gguf_architectures=("gemma2",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=Gemma3ForCausalLM,
)
