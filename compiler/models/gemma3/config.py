"""Gemma 3's config: llama's fields plus the local layers' pattern and rope base and the
attention score scale."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import BuildError
from ..llama.config import LlamaConfig

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
