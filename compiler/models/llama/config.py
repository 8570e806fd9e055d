"""Model configuration: the architecture hyper-parameters every stage reads."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ...errors import BuildError

# config.json fields that change what a model computes and that the llama network does not
# implement, with the values it does: any other value is refused, naming the field, rather
# than ignored (which would build a model that computes something else).
IMPLEMENTED_VALUES: dict[str, tuple[Any, ...]] = {
    "mlp_bias": (None, False),
    "hidden_act": (None, "silu"),
    "final_logit_softcapping": (None,),
    "attn_logit_softcapping": (None,),
    "partial_rotary_factor": (None, 1, 1.0),
    "qk_norm": (None, False),
}


def refuse_unimplemented(raw: dict[str, Any], where: str) -> None:
    """Stops the build at the first field whose value the network does not implement."""
    for name, values in IMPLEMENTED_VALUES.items():
        if raw.get(name) not in values:
            raise BuildError(f"{where}: config field {name}={raw[name]!r} is not implemented")
    rope_scaling(raw, where)


LLAMA3_FIELDS = (
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
)


def rope_scaling(raw: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """The rope type ("default", "llama3" or "longrope") and its parameters, from config.json
    `rope_scaling` or `rope_parameters` (as newer transformers write it); any other type is
    refused with one line."""
    for field in ("rope_scaling", "rope_parameters"):
        rope = raw.get(field)
        if not rope:
            continue
        if not isinstance(rope, dict):
            raise BuildError(f"{where}: config field {field}={rope!r} is malformed")
        kind = rope.get("rope_type", rope.get("type", "default"))
        kind = "longrope" if kind == "su" else kind  # Phi-3's first name for it
        if kind not in ("default", "llama3", "longrope"):
            raise BuildError(f"{where}: config field {field}={rope!r} is not implemented")
        if kind != "default":
            return kind, {**rope, "field": field}
    return "default", {}


def rope_llama3(raw: dict[str, Any], where: str) -> tuple[float, ...] | None:
    """Llama 3.1's (factor, low_freq_factor, high_freq_factor, original context), if set."""
    kind, rope = rope_scaling(raw, where)
    if kind != "llama3":
        return None
    try:
        return tuple(float(rope[name]) for name in LLAMA3_FIELDS)
    except (KeyError, TypeError, ValueError):
        raise BuildError(f"{where}: config field {rope['field']} is malformed") from None


def longrope_attention(factor: float, original: int) -> float:
    """LongRoPE's default scale of cos and sin for a context `factor` times the original."""
    return 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))


def rope_longrope(raw: dict[str, Any], where: str) -> tuple[Any, ...] | None:
    """Phi-3's LongRoPE as (short factors, attention factor, original context), if set: each
    inverse frequency divided by its factor, cos and sin scaled (as transformers computes
    them). The long factors apply past the original context, which a build refuses."""
    kind, rope = rope_scaling(raw, where)
    if kind != "longrope":
        return None
    try:
        original = int(
            rope.get("original_max_position_embeddings") or raw["original_max_position_embeddings"]
        )
        short = tuple(float(f) for f in rope["short_factor"])
        factor = rope.get("factor") or float(raw["max_position_embeddings"]) / original
        attention = rope.get("attention_factor")
        if attention is None:
            attention = longrope_attention(factor, original)
    except (KeyError, TypeError, ValueError):
        raise BuildError(f"{where}: config field {rope['field']} is malformed") from None
    return short, float(attention), original


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters of a llama-family decoder (Llama, SmolLM, Mistral)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_position_embeddings: int
    sliding_window: int | None = None  # attention span; None: the whole context
    # Llama 3.1's rope scaling: factor, low and high frequency factors, original context
    rope_llama3: tuple[float, ...] | None = None
    rope_longrope: tuple[Any, ...] | None = None  # Phi-3's, see rope_longrope()
    # per-dimension divisors of the inverse frequencies: llama.cpp's rope_freqs tensor, which
    # is how a GGUF file carries Llama 3.1's scaling
    rope_freq_factors: tuple[float, ...] | None = None
    qk_norm: bool = False  # RMSNorm over each query and key head before rope (Qwen3)
    qkv_bias: bool = False  # biases on the q, k and v projections
    o_bias: bool = False  # and on the output projection (Llama's attention_bias sets both)

    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str) -> LlamaConfig:
        """Reads a Hugging Face config.json dict, naming the missing or bad field on error."""
        refuse_unimplemented(raw, where)
        try:
            heads = int(raw["num_attention_heads"])
            hidden = int(raw["hidden_size"])
            config = cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(raw.get("num_key_value_heads", heads)),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                rope_theta=float(
                    raw.get("rope_theta")
                    or (raw.get("rope_parameters") or {}).get("rope_theta")
                    or 10000.0
                ),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
                sliding_window=int(raw["sliding_window"]) if raw.get("sliding_window") else None,
                rope_llama3=rope_llama3(raw, where),
                rope_longrope=rope_longrope(raw, where),
                qkv_bias=bool(raw.get("attention_bias", False)),
                o_bias=bool(raw.get("attention_bias", False)),
            )
        except KeyError as err:
            raise BuildError(f"{where}: config.json lacks the field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise BuildError(f"{where}: config.json has a malformed value ({err})") from None
        config.validate(where)
        return config

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

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
