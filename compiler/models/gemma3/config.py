"""Gemma 3's config: llama's fields plus the local layers' pattern and rope base and the
attention score scale."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import BuildError
from ...gguf_metadata import GGUFMetadata
from ..llama.config import LlamaConfig
from ..llama.weights import gguf_config

# What llama.cpp assumes of every gemma3 GGUF (the file does not say): one global layer after
# five local ones, and the local layers' rope base.
GGUF_GLOBAL_EVERY = 6
GGUF_LOCAL_THETA = 10000.0
GGUF_27B_LAYERS = 62

# config.json fields (Gemma3TextConfig) that change what the model computes, with the values
# the network implements; anything else is refused with one line.
IMPLEMENTED_VALUES: dict[str, tuple[Any, ...]] = {
    "hidden_activation": (None, "gelu_pytorch_tanh"),
    "hidden_act": (None, "gelu_pytorch_tanh"),
    "attn_logit_softcapping": (None,),
    "final_logit_softcapping": (None,),
    "attention_bias": (None, False),
    "use_bidirectional_attention": (None, False),
    "rope_scaling": (None,),
}


@dataclasses.dataclass(frozen=True)
class Gemma3Config(LlamaConfig):
    rope_local_theta: float = 10000.0  # the rope base of the local (sliding-window) layers
    sliding_layers: tuple[bool, ...] = ()  # per layer: local (True) or global
    query_pre_attn_scalar: float = 256.0  # scores are scaled by its inverse square root

    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str) -> Gemma3Config:
        for name, values in IMPLEMENTED_VALUES.items():
            if raw.get(name) not in values:
                raise BuildError(f"{where}: config field {name}={raw[name]!r} is not implemented")
        layers = int(raw.get("num_hidden_layers", 0))
        types = raw.get("layer_types") or [
            "full_attention"
            if (i + 1) % int(raw.get("sliding_window_pattern", 6)) == 0
            else "sliding_attention"
            for i in range(layers)
        ]
        rope = raw.get("rope_parameters") or {}
        global_rope = rope.get("full_attention", {})
        local_rope = rope.get("sliding_attention", {})
        for kind in (global_rope, local_rope):
            if kind.get("rope_type", "default") != "default":
                raise BuildError(
                    f"{where}: config field rope_parameters={rope!r} is not implemented"
                )
        plain = {
            k: v for k, v in raw.items() if k not in IMPLEMENTED_VALUES and k != "rope_parameters"
        }
        plain.setdefault("tie_word_embeddings", True)
        base = LlamaConfig.from_hf(plain, where)
        try:
            config = cls(
                **dataclasses.asdict(base),
                rope_local_theta=float(
                    local_rope.get("rope_theta", raw.get("rope_local_base_freq", 10000.0))
                ),
                sliding_layers=tuple(t == "sliding_attention" for t in types),
                query_pre_attn_scalar=float(raw.get("query_pre_attn_scalar", base.head_dim)),
            )
        except (TypeError, ValueError) as err:
            raise BuildError(f"{where}: config.json has a malformed value ({err})") from None
        config = dataclasses.replace(
            config,
            rope_theta=float(global_rope.get("rope_theta", raw.get("rope_theta", 1000000.0))),
            qk_norm=True,
        )
        if len(config.sliding_layers) != config.num_hidden_layers:
            raise BuildError(
                f"{where}: config field layer_types has {len(types)} entries for {layers} layers"
            )
        return config

    @classmethod
    def from_gguf(cls, meta: GGUFMetadata, tensor_names: set[str]) -> Gemma3Config:
        """The config from gemma3.* metadata. The file does not carry query_pre_attn_scalar:
        like llama.cpp, it is head_dim, except for the 27B model (62 layers), hidden/heads."""
        base = gguf_config(meta, tensor_names, arch="gemma3")
        window = meta.number("gemma3.attention.sliding_window", int, 0)
        scalar = base.head_dim
        if base.num_hidden_layers == GGUF_27B_LAYERS:
            scalar = base.hidden_size // base.num_attention_heads
        config = cls(
            **dataclasses.asdict(base),
            rope_local_theta=GGUF_LOCAL_THETA,
            sliding_layers=tuple(
                (i + 1) % GGUF_GLOBAL_EVERY != 0 for i in range(base.num_hidden_layers)
            ),
            query_pre_attn_scalar=float(scalar),
        )
        return dataclasses.replace(config, sliding_window=window or None, qk_norm=True)
