"""Gemma 3's config: llama's fields plus the local layers' pattern and rope base, the
attention score scale and the soft caps of scores and logits (Gemma 2 uses the caps)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import BuildError
from ...gguf_metadata import GGUFMetadata
from ..llama.config import LlamaConfig
from ..llama.weights import gguf_config, gguf_rope
from ..rope import Rope, rope_from_parameters

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
}

SOFT_CAPS = ("attn_logit_softcapping", "final_logit_softcapping")


@dataclasses.dataclass(frozen=True)
class Gemma3Config(LlamaConfig):
    rope_local: Rope | None = None  # the local (sliding-window) layers' rope; None: `rope`
    sliding_layers: tuple[bool, ...] = ()  # per layer: local (True) or global
    query_pre_attn_scalar: float = 256.0  # scores are scaled by its inverse square root
    # cap * tanh(x / cap) of the attention scores and of the output logits; 0: none
    attn_logit_softcapping: float = 0.0
    final_logit_softcapping: float = 0.0

    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str, partial_rotary: bool = False) -> Gemma3Config:
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
        ours = {*IMPLEMENTED_VALUES, *SOFT_CAPS, "rope_parameters", "rope_scaling"}
        plain = {k: v for k, v in raw.items() if k not in ours}  # read here, not by llama's
        plain.setdefault("tie_word_embeddings", True)
        base = LlamaConfig.from_hf(plain, where, partial_rotary)
        global_rope, local_rope = gemma_ropes(raw, base.head_dim, where, partial_rotary)
        try:
            config = cls(
                **{**base.fields(), "rope": global_rope, "qk_norm": True},
                rope_local=local_rope,
                sliding_layers=tuple(t == "sliding_attention" for t in types),
                query_pre_attn_scalar=float(raw.get("query_pre_attn_scalar", base.head_dim)),
                attn_logit_softcapping=float(raw.get("attn_logit_softcapping") or 0.0),
                final_logit_softcapping=float(raw.get("final_logit_softcapping") or 0.0),
            )
        except (TypeError, ValueError) as err:
            raise BuildError(f"{where}: config.json has a malformed value ({err})") from None
        if len(config.sliding_layers) != config.num_hidden_layers:
            raise BuildError(
                f"{where}: config field layer_types has {len(types)} entries for {layers} layers"
            )
        return config

    def layer_rope(self, index: int) -> str:
        if self.sliding_layers[index] and self.rope_local is not None:
            return "rope_table_local"
        return "rope_table"

    def rope_tables(self) -> dict[str, Rope]:
        tables = super().rope_tables()
        if self.rope_local is not None and any(self.sliding_layers):
            tables["rope_table_local"] = self.rope_local
        return tables

    @classmethod
    def from_gguf(cls, meta: GGUFMetadata, tensor_names: set[str]) -> Gemma3Config:
        return gguf_gemma_config(meta, tensor_names, "gemma3", GGUF_GLOBAL_EVERY, GGUF_LOCAL_THETA)


def gemma_ropes(
    raw: dict[str, Any], head_dim: int, where: str, partial_rotary: bool = False
) -> tuple[Rope, Rope]:
    """The global and local layers' ropes, read as transformers 5 reads a Gemma 3 config:
    `rope_parameters` nested by layer type, an older `rope_scaling` applying to the global
    layers, `rope_theta` and `rope_local_base_freq` as the bases where the dicts lack them."""
    params = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise BuildError(f"{where}: config field rope_parameters={params!r} is malformed")
    bases = {"full_attention": raw.get("rope_theta") or 1000000.0}
    bases["sliding_attention"] = raw.get("rope_local_base_freq") or 10000.0
    ropes = []
    for kind, theta in bases.items():
        layer = params.get(kind) or {"rope_type": "default"}
        if not isinstance(layer, dict):
            raise BuildError(f"{where}: config field rope_parameters.{kind}={layer!r} is malformed")
        layer = {**layer, **scaling} if kind == "full_attention" else dict(layer)
        layer.setdefault("rope_theta", theta)
        if raw.get("partial_rotary_factor") is not None:
            layer.setdefault("partial_rotary_factor", raw["partial_rotary_factor"])
        field = f"rope_parameters.{kind}"
        ropes.append(rope_from_parameters(layer, raw, head_dim, where, field, partial_rotary))
    return ropes[0], ropes[1]


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
    local = None if local_theta is None else gguf_rope(local_theta, base.rope.rotary_dim)
    config = Gemma3Config(
        **base.fields(),
        rope_local=local,
        sliding_layers=tuple((i + 1) % global_every != 0 for i in range(base.num_hidden_layers)),
        query_pre_attn_scalar=float(scalar),
        attn_logit_softcapping=meta.number(f"{arch}.attn_logit_softcapping", float, 0.0),
        final_logit_softcapping=meta.number(f"{arch}.final_logit_softcapping", float, 0.0),
    )
    return dataclasses.replace(config, sliding_window=window or None, qk_norm=arch == "gemma3")
