"""The decoder's config: the hyper-parameters every decoder family has, with the switches of
the blocks it composes (a sliding window, q/k norms, biases), and the per-layer switches of
decoders whose layers differ (local and global layers, each with its rope, a score scale and
soft caps). A family's reader (its config.py) fills one from config.json or GGUF metadata;
the fields of each are what the manifest's `config` carries."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import BuildError
from .rope import Rope, rope_from_hf

# config.json fields that change what the plain decoder (SwiGLU MLP without biases, no soft
# caps, no q/k norms unless the family sets them) computes, with the values it implements.
PLAIN_FIELDS: dict[str, tuple[Any, ...]] = {
    "mlp_bias": (None, False),
    "hidden_act": (None, "silu"),
    "final_logit_softcapping": (None,),
    "attn_logit_softcapping": (None,),
    "qk_norm": (None, False),
}
# The same for Gemma's sandwich layers (compositions.py's SandwichGeGLU, tanh-GELU MLP, no
# biases), and the config.json fields of their soft caps, which the config reads.
SANDWICH_FIELDS: dict[str, tuple[Any, ...]] = {
    "hidden_activation": (None, "gelu_pytorch_tanh"),
    "hidden_act": (None, "gelu_pytorch_tanh"),
    "attention_bias": (None, False),
    "use_bidirectional_attention": (None, False),
}
SOFT_CAPS = ("attn_logit_softcapping", "final_logit_softcapping")


def refuse_unimplemented(raw: dict[str, Any], where: str, implemented: dict[str, Any]) -> None:
    """Stops the build at the first field whose value is not one of `implemented`'s (field ->
    the values the family's network implements), rather than build a model that computes
    something else."""
    for name, values in implemented.items():
        if raw.get(name) not in values:
            raise BuildError(f"{where}: config field {name}={raw[name]!r} is not implemented")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters of a decoder: pre-norm layers of attention and a gated MLP."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope: Rope
    tie_word_embeddings: bool
    max_position_embeddings: int
    sliding_window: int | None = None  # attention span; None: the whole context
    qk_norm: bool = False  # RMSNorm over each query and key head before rope (Qwen3)
    qkv_bias: bool = False  # biases on the q, k and v projections
    o_bias: bool = False  # and on the output projection (Llama's attention_bias sets both)

    def validate(self, where: str) -> None:
        positive = [f.name for f in dataclasses.fields(self) if f.type in ("int", "float")]
        if self.sliding_window is not None:
            positive.append("sliding_window")
        for name in positive:
            if getattr(self, name) <= 0:
                raise BuildError(f"{where}: config value {name}={getattr(self, name)} must be > 0")
        if self.num_attention_heads % self.num_key_value_heads:
            raise BuildError(
                f"{where}: num_attention_heads ({self.num_attention_heads}) must be a multiple "
                f"of num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise BuildError(f"{where}: head_dim ({self.head_dim}) must be even for RoPE")
        if not self.rope.theta > 0:
            raise BuildError(f"{where}: config value rope_theta={self.rope.theta} must be > 0")

    def layer_rope(self, index: int) -> str:
        """The name of the table of cos and sin that layer `index` reads."""
        return "rope_table"

    def rope_tables(self) -> dict[str, Rope]:
        """Each table of cos and sin the network reads (a parameter, see rope.py) by name."""
        return {"rope_table": self.rope}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fields(self) -> dict[str, Any]:
        """The fields by name, values as they are (a subclass's constructor takes them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class LocalGlobalConfig(DecoderConfig):
    """A decoder whose layers are local (a sliding window, a rope of their own) or global,
    its attention scores scaled by query_pre_attn_scalar^-0.5 and soft-capped, and its
    logits soft-capped (Gemma 2 and 3)."""

    rope_local: Rope | None = None  # the local (sliding-window) layers' rope; None: `rope`
    sliding_layers: tuple[bool, ...] = ()  # per layer: local (True) or global
    query_pre_attn_scalar: float = 256.0  # scores are scaled by its inverse square root
    # cap * tanh(x / cap) of the attention scores and of the output logits; 0: none
    attn_logit_softcapping: float = 0.0
    final_logit_softcapping: float = 0.0

    def layer_rope(self, index: int) -> str:
        if self.sliding_layers[index] and self.rope_local is not None:
            return "rope_table_local"
        return "rope_table"

    def rope_tables(self) -> dict[str, Rope]:
        tables = super().rope_tables()
        if self.rope_local is not None and any(self.sliding_layers):
            tables["rope_table_local"] = self.rope_local
        return tables


def read_hf(
    raw: dict[str, Any],
    where: str,
    partial_rotary: bool = False,
    qkv_bias: bool | None = None,
    o_bias: bool | None = None,
) -> DecoderConfig:
    """The decoder fields of a Hugging Face config.json dict, naming the missing or bad field
    on error. `partial_rotary`: whether the family rotates a part of each head (see rope.py).
    The biases follow `attention_bias` unless given."""
    try:
        heads = int(raw["num_attention_heads"])
        hidden = int(raw["hidden_size"])
        head_dim = int(raw.get("head_dim") or hidden // heads)
        bias = bool(raw.get("attention_bias", False))
        config = DecoderConfig(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get("num_key_value_heads", heads)),
            head_dim=head_dim,
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope=rope_from_hf(raw, head_dim, where, partial_rotary),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            sliding_window=int(raw["sliding_window"]) if raw.get("sliding_window") else None,
            qkv_bias=bias if qkv_bias is None else qkv_bias,
            o_bias=bias if o_bias is None else o_bias,
        )
    except KeyError as err:
        raise BuildError(f"{where}: config.json lacks the field {err.args[0]!r}") from None
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise BuildError(f"{where}: config.json has a malformed value ({err})") from None
    config.validate(where)
    return config
