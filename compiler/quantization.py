"""Quantization schemes: each knows how to store a weight (numpy) and how to read it back in a
kernel (a TE expression), so the network code never branches on the scheme.

- q0f32 / q0f16: weights kept as floats.
- q4f32 / q4f16: 4-bit codes in groups of 32 along the input dimension, each group with a
  float scale and minimum (value = code * scale + minimum). Asymmetric so that GGUF Q4_0 and
  Q4_1 weights are carried over exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tvm import te, tirx

from .errors import BuildError
from .loader import Q4Codes, Tensor

GROUP = 32


@dataclasses.dataclass(frozen=True)
class Scheme:
    name: str
    bits: int  # 0: unquantized
    dtype: str  # activation and scale dtype: float32 or float16

    @property
    def needs_f16(self) -> bool:
        return self.dtype == "float16"

    def param_shapes(self, rows: int, cols: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Shapes and dtypes of the stored parts of a (rows, cols) weight."""
        if self.bits == 0:
            return {"weight": ((rows, cols), self.dtype)}
        if cols % GROUP:
            raise BuildError(f"{self.name} needs input sizes divisible by {GROUP}, got {cols}")
        return {
            "q4": ((rows, cols // 8), "uint32"),
            "scale": ((rows, cols // GROUP), self.dtype),
            "minimum": ((rows, cols // GROUP), self.dtype),
        }

    def quantize(self, tensor: Tensor) -> dict[str, np.ndarray]:
        np_dtype = np.dtype(self.dtype)
        if self.bits == 0:
            values = tensor.dequantize() if isinstance(tensor, Q4Codes) else tensor
            return {"weight": values.astype(np_dtype)}
        codes = tensor if isinstance(tensor, Q4Codes) else quantize_q4(tensor)
        rows, cols = codes.shape
        nibbles = codes.codes.reshape(rows, cols // 8, 8).astype(np.uint32)
        packed = np.zeros((rows, cols // 8), dtype=np.uint32)
        for i in range(8):
            packed |= nibbles[..., i] << np.uint32(4 * i)
        return {
            "q4": packed,
            "scale": codes.scale.astype(np_dtype),
            "minimum": codes.minimum.astype(np_dtype),
        }

    def weight_te(self, parts: dict[str, te.Tensor], row: tirx.PrimExpr, col: tirx.PrimExpr):
        """TE expression of weight[row, col], dequantized inside the consuming kernel."""
        if self.bits == 0:
            return parts["weight"][row, col]
        word = parts["q4"][row, col // 8]
        code = (word >> (tirx.Cast("uint32", col % 8) * tirx.const(4, "uint32"))) & tirx.const(
            15, "uint32"
        )
        group = col // GROUP
        return (
            tirx.Cast(self.dtype, code) * parts["scale"][row, group] + parts["minimum"][row, group]
        )


def quantize_q4(weight: np.ndarray) -> Q4Codes:
    """Round-to-nearest asymmetric 4-bit quantization in groups of 32 along rows."""
    rows, cols = weight.shape
    if cols % GROUP:
        raise BuildError(f"4-bit quantization needs input sizes divisible by {GROUP}, got {cols}")
    groups = weight.astype(np.float32).reshape(rows, cols // GROUP, GROUP)
    low = groups.min(axis=-1)
    high = groups.max(axis=-1)
    scale = (high - low) / 15.0
    safe = np.where(scale == 0, 1.0, scale)
    codes = np.clip(np.rint((groups - low[..., None]) / safe[..., None]), 0, 15)
    return Q4Codes(codes.reshape(rows, cols).astype(np.uint8), scale.astype(np.float32), low)


SCHEMES = {
    s.name: s
    for s in (
        Scheme("q0f32", 0, "float32"),
        Scheme("q4f32", 4, "float32"),
        Scheme("q0f16", 0, "float16"),
        Scheme("q4f16", 4, "float16"),
    )
}


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise BuildError(f"unknown quantization {name!r}; choose one of {', '.join(SCHEMES)}")
    return SCHEMES[name]
