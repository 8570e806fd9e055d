"""Gemma 3's config: llama's fields plus the local layers' pattern and rope base, the
attention score scale and the soft caps of scores and logits (Gemma 2 uses the caps)."""

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
GGUF_27B_LAYERS = {"gemma2": 46, "gemma3": 62}  # llama.cpp tells the 27B models by depth

# config.json fields (Gemma3TextConfig) that change what the model computes, with the values
# the network implements; anything else is refused with one line.
IMPLEMENTED_VALUES: dict[str, tuple[Any, ...]] = {
    "hidden_activation": (None, "gelu_pytorch_tanh"),
    "hidden_act": (None, "gelu_pytorch_tanh"),
    "attention_bias": (None, False),
    "use_bidirectional_attention": (None, False),
    "rope_scaling": (None,),
}

SOFT_CAPS = ("attn_logit_softcapping", "final_logit_softcapping")


@dataclasses.dataclass(frozen=True)
class Gemma3Config(LlamaConfig):
    rope_local_theta: float = 10000.0  # the rope base of the local (sliding-window) layers
    sliding_layers: tuple[bool, ...] = ()  # per layer: local (True) or global
    query_pre_attn_scalar: float = 256.0  # scores are scaled by its inverse square root
    # cap * tanh(x / cap) of the attention scores and of the output logits; 0: none
    attn_logit_softcapping: float = 0.0
    final_logit_softcapping: float = 0.0

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
        ours = {*IMPLEMENTED_VALUES, *SOFT_CAPS, "rope_parameters"}  # read here, not by llama's
        plain = {k: v for k, v in raw.items() if k not in ours}
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
                attn_logit_softcapping=float(raw.get("attn_logit_softcapping") or 0.0),
                final_logit_softcapping=float(raw.get("final_logit_softcapping") or 0.0),
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
        return gguf_gemma_config(meta, tensor_names, "gemma3", GGUF_GLOBAL_EVERY, GGUF_LOCAL_THETA)


def gguf_gemma_config(
    meta: GGUFMetadata,
    tensor_names: set[str],
    arch: str,
    global_every: int,
    local_theta: float | None,
) -> Gemma3Config:
    """The config from `arch`.* metadata, with what llama.cpp assumes of the family: a global
    layer every `global_every`, the local layers' rope base (None: the global one). The file
    does not carry query_pre_attn_scalar: like llama.cpp, it is head_dim, except for the 27B
    models (hidden/heads)."""
    base = gguf_config(meta, tensor_names, arch=arch)
    window = meta.number(f"{arch}.attention.sliding_window", int, 0)
    scalar = base.head_dim
    if base.num_hidden_layers == GGUF_27B_LAYERS[arch]:
        scalar = base.hidden_size // base.num_attention_heads
    config = Gemma3Config(
        **dataclasses.asdict(base),
        rope_local_theta=base.rope_theta if local_theta is None else local_theta,
        sliding_layers=tuple((i + 1) % global_every != 0 for i in range(base.num_hidden_layers)),
        query_pre_attn_scalar=float(scalar),
        attn_logit_softcapping=meta.number(f"{arch}.attn_logit_softcapping", float, 0.0),
        final_logit_softcapping=meta.number(f"{arch}.final_logit_softcapping", float, 0.0),
    )
    return dataclasses.replace(config, sliding_window=window or None, qk_norm=arch == "gemma3")
