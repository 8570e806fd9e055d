"""Rotary position embeddings as transformers 5 computes them.

A config's rope settings are read from wherever transformers reads them (`rope_parameters`,
the older `rope_scaling`, top-level `rope_theta` and `partial_rotary_factor`), each rope type
it implements is followed step for step in float32 (its inverse frequencies, its scale of cos
and sin), and what the network reads is a table of cos and sin per position, computed here in
float64 from transformers' float32 angles. Kernels never evaluate sin or cos themselves: WGSL
lets them be off by 2^-11, and GPUs' fast versions lose more at the large angles of long
positions.

The rope types are a registry (`ROPE_TYPES`): each names the function that gives its inverse
frequencies and its scale of cos and sin. Partial rotary (a part of each head rotated) applies
to every type; layers with a base of their own (Gemma's local layers) read a second table
(`LocalGlobalConfig.rope_local`, config.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...errors import BuildError

ALIASES = {"su": "longrope"}  # Phi-3's first name for LongRoPE


@dataclasses.dataclass(frozen=True)
class Rope:
    """One rotary embedding: the first `rotary_dim` dimensions of each head are rotated (in
    halves, transformers' rotate-half layout) by position x inverse frequency, cos and sin
    scaled by `attention`. `max_context`: the longest context it holds for (LongRoPE changes
    its frequencies past its original context); None: any."""

    theta: float
    rotary_dim: int
    inverse_frequencies: tuple[float, ...]  # float32 values, rotary_dim / 2 of them
    attention: float = 1.0
    max_context: int | None = None

    def table(self, positions: int, dtype: str) -> np.ndarray:
        """(positions, rotary_dim): cos of each frequency's angle, then its sin, as
        transformers computes them (float32 angles, then cos and sin scaled in float32) and
        rounded to `dtype` (transformers casts them to the activations' dtype)."""
        inverse = np.asarray(self.inverse_frequencies, np.float32)
        angles = np.arange(positions, dtype=np.float32)[:, None] * inverse[None, :]
        exact = angles.astype(np.float64)
        table = np.concatenate([np.cos(exact), np.sin(exact)], axis=1).astype(np.float32)
        if self.attention != 1.0:
            table = table * np.float32(self.attention)
        return table.astype(dtype)


def _f32(value: float) -> np.float32:
    return np.float32(value)


def _powers(theta: float, dim: int) -> np.ndarray:
    """theta ** (2i / dim) in float32, the exponent a float32 division as transformers has
    it and the power correctly rounded (torch's float32 pow agrees but in rare last bits)."""
    exponent = np.arange(0, dim, 2).astype(np.float32) / _f32(dim)
    return (np.float64(theta) ** exponent.astype(np.float64)).astype(np.float32)


def default_frequencies(theta: float, dim: int, factors: Any = None) -> np.ndarray:
    """1 / theta^(2i/dim), each divided by its factor where there are per-pair factors
    (LongRoPE's, llama.cpp's rope_freqs): 1 / (factor * power), as both compute it."""
    powers = _powers(theta, dim)
    if factors is not None:
        powers = np.asarray(factors, np.float32) * powers
    return _f32(1.0) / powers


def llama3_frequencies(theta: float, dim: int, p: Mapping[str, Any]) -> np.ndarray:
    """Llama 3.1's: long wavelengths divided by `factor`, short ones kept, those between
    interpolated (transformers' float32 steps, its Python scalars rounded to float32)."""
    inverse = default_frequencies(theta, dim)
    factor, low, high = (float(p[k]) for k in ("factor", "low_freq_factor", "high_freq_factor"))
    old = float(p["original_max_position_embeddings"])
    wavelength = _f32(2 * math.pi) / inverse
    scaled = np.where(wavelength > _f32(old / low), inverse / _f32(factor), inverse)
    smooth = (_f32(old) / wavelength - _f32(low)) / _f32(high - low)
    smoothed = (_f32(1.0) - smooth) * scaled / _f32(factor) + smooth * scaled
    medium = ~(wavelength < _f32(old / high)) & ~(wavelength > _f32(old / low))
    return np.where(medium, smoothed, scaled).astype(np.float32)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_frequencies(
    theta: float, dim: int, p: Mapping[str, Any], max_positions: int
) -> tuple[np.ndarray, float]:
    """YaRN's: frequencies that turn more than beta_fast times over the original context
    kept, those turning fewer than beta_slow times divided by `factor`, a linear ramp between;
    cos and sin scaled by its attention factor."""
    original = float(p["original_max_position_embeddings"])
    factor = p.get("factor") or max_positions / original
    attention = p.get("attention_factor")
    if attention is None:
        mscale, mscale_all = p.get("mscale"), p.get("mscale_all_dim")
        if mscale and mscale_all:
            attention = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
        else:
            attention = yarn_mscale(factor)
    fast, slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

    def correction(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction(fast), correction(slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as transformers, against a division by zero
    ramp = (np.arange(dim // 2, dtype=np.float32) - _f32(low)) / _f32(high - low)
    kept = _f32(1.0) - np.clip(ramp, 0, 1).astype(np.float32)
    powers = _powers(theta, dim)
    extrapolated = _f32(1.0) / powers
    interpolated = _f32(1.0) / (_f32(factor) * powers)
    inverse = interpolated * (_f32(1.0) - kept) + extrapolated * kept
    return inverse.astype(np.float32), float(attention)


def longrope_attention(factor: float, original: int) -> float:
    """LongRoPE's default scale of cos and sin for a context `factor` times the original."""
    return 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))


# A rope type's inverse frequencies, scale of cos and sin, and the longest context it holds
# for (None: any), from (theta, rotated dimensions, its parameters, max_position_embeddings).
Computed = tuple[np.ndarray, float, int | None]
Frequencies = Callable[[float, int, Mapping[str, Any], int], Computed]


@dataclasses.dataclass(frozen=True)
class RopeType:
    frequencies: Frequencies
    # Whether it reads original_max_position_embeddings (filled in from config.json's top
    # level, then from max_position_embeddings, as transformers does).
    original_context: bool = False


def _default(theta: float, dim: int, p: Mapping[str, Any], max_positions: int) -> Computed:
    return default_frequencies(theta, dim), 1.0, None


def _linear(theta: float, dim: int, p: Mapping[str, Any], max_positions: int) -> Computed:
    return default_frequencies(theta, dim) / _f32(float(p["factor"])), 1.0, None


def _llama3(theta: float, dim: int, p: Mapping[str, Any], max_positions: int) -> Computed:
    return llama3_frequencies(theta, dim, p), 1.0, None


def _yarn(theta: float, dim: int, p: Mapping[str, Any], max_positions: int) -> Computed:
    inverse, attention = yarn_frequencies(theta, dim, p, max_positions)
    return inverse, attention, None


def _longrope(theta: float, dim: int, p: Mapping[str, Any], max_positions: int) -> Computed:
    """Within its original context: its short factors (past it, the long ones, not built)."""
    original = p["original_max_position_embeddings"]
    short = [float(f) for f in p["short_factor"]]
    if len(short) != dim // 2:
        raise ValueError(f"{len(short)} short factors for {dim // 2} frequencies")
    factor = p.get("factor") or max_positions / original
    given = p.get("attention_factor")
    attention = longrope_attention(factor, original) if given is None else float(given)
    return default_frequencies(theta, dim, short), attention, original


# The rope types transformers implements that are built; any other is refused with one line.
# "dynamic" (NTK) equals "default" up to max_position_embeddings, which a build never passes.
ROPE_TYPES: dict[str, RopeType] = {
    "default": RopeType(_default),
    "linear": RopeType(_linear),
    "dynamic": RopeType(_default),
    "llama3": RopeType(_llama3, original_context=True),
    "longrope": RopeType(_longrope, original_context=True),
    "yarn": RopeType(_yarn, original_context=True),
}


def rope_from_parameters(
    params: Mapping[str, Any],
    raw: Mapping[str, Any],
    head_dim: int,
    where: str,
    field: str = "rope_parameters",
    partial_rotary: bool = False,
) -> Rope:
    """The rope of one standardized parameter dict (rope_type, rope_theta,
    partial_rotary_factor and the type's own keys), the rest of config.json in `raw`.
    `partial_rotary`: whether the family's transformers code rotates a part of each head
    (Phi-3); elsewhere transformers ignores the factor or fails, so it is refused."""
    kind = str(params.get("rope_type", params.get("type", "default")))
    kind = ALIASES.get(kind, kind)
    if kind not in ROPE_TYPES:
        raise BuildError(f"{where}: config field {field}={dict(params)!r} is not implemented")
    try:
        theta = float(params["rope_theta"])
        partial = float(params.get("partial_rotary_factor") or 1.0)
        dim = int(head_dim * partial)
        if partial != 1.0 and not partial_rotary:
            raise BuildError(
                f"{where}: config field partial_rotary_factor={partial!r} is not implemented "
                "for this architecture"
            )
        if dim <= 0 or dim % 2 or dim > head_dim:
            raise BuildError(
                f"{where}: config field partial_rotary_factor={partial!r} gives {dim} rotated "
                f"dimensions of {head_dim}: they must be even and positive"
            )
        rope_type = ROPE_TYPES[kind]
        max_positions = int(raw.get("max_position_embeddings", 2048))
        if rope_type.original_context:
            # transformers takes a top-level original context first (Phi-3 keeps it there).
            original = int(
                raw.get("original_max_position_embeddings")
                or params.get("original_max_position_embeddings")
                or max_positions
            )
            params = {**params, "original_max_position_embeddings": original}
        inverse, attention, max_context = rope_type.frequencies(theta, dim, params, max_positions)
    except (KeyError, TypeError, ValueError) as err:
        raise BuildError(f"{where}: config field {field} is malformed ({err})") from None
    return Rope(
        theta=theta,
        rotary_dim=dim,
        inverse_frequencies=tuple(float(f) for f in inverse),
        attention=float(attention),
        max_context=max_context,
    )


def rope_parameters(raw: Mapping[str, Any], where: str, default_theta: float = 10000.0):
    """config.json's rope settings standardized as transformers 5 does: `rope_scaling` (older
    configs) or else `rope_parameters`, with the top-level `rope_theta` and
    `partial_rotary_factor` filling what the dict lacks. Returns (dict, the field it came
    from). A dict nested by layer type (Gemma 3) gets the defaults in each entry."""
    field = "rope_scaling" if raw.get("rope_scaling") else "rope_parameters"
    params = raw.get(field) or {}
    if not isinstance(params, Mapping):
        raise BuildError(f"{where}: config field {field}={params!r} is malformed")
    defaults: dict[str, Any] = {"rope_theta": raw.get("rope_theta") or default_theta}
    if raw.get("partial_rotary_factor") is not None:
        defaults["partial_rotary_factor"] = raw["partial_rotary_factor"]
    layer_types = set(raw.get("layer_types") or ())
    if layer_types and set(params) & layer_types:
        nested = {}
        for key, value in params.items():
            if not isinstance(value, Mapping):
                raise BuildError(f"{where}: config field {field}.{key}={value!r} is malformed")
            nested[key] = {**defaults, **value}
        return nested, field
    return {**defaults, **params}, field


def rope_from_hf(
    raw: Mapping[str, Any], head_dim: int, where: str, partial_rotary: bool = False
) -> Rope:
    """The one rope of a config.json whose layers share it."""
    params, field = rope_parameters(raw, where)
    return rope_from_parameters(params, raw, head_dim, where, field, partial_rotary)
