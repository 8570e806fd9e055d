"""Unquantized weights: float32, and 16-bit floats kept as they are stored."""

from __future__ import annotations

import numpy as np
from tvm import tirx

from .base import (
    Format,
    Parts,
    SourceTensor,
    bits,
    by_rows,
    f16_to_f32,
    float_values,
    half_at,
    pack_halves,
    register,
    stored_blocks,
    u32,
)


@register
class F32(Format):
    name = "f32"

    def parts(self, rows, cols):
        return {"weight": ((rows, cols), "float32")}

    def encode(self, tensor: SourceTensor):
        return {"weight": float_values(tensor).astype(np.float32)}

    def weight_te(self, parts: Parts, row, col):
        return parts["weight"][row, col]


@register
class F16Native(Format):
    """float16 read as float16: only for adapters with shader-f16 (the q0f16 scheme)."""

    name = "f16-native"

    def parts(self, rows, cols):
        return {"weight": ((rows, cols), "float16")}

    def encode(self, tensor: SourceTensor):
        return by_rows(tensor, lambda rows: {"weight": float_values(rows).astype(np.float16)})

    def weight_te(self, parts: Parts, row, col):
        return parts["weight"][row, col]


def _halves(tensor: SourceTensor, type_name: str) -> np.ndarray:
    """The 16-bit patterns of a weight stored as 16-bit floats (GGUF or safetensors)."""
    return stored_blocks(tensor, type_name, 1, 2).view(np.uint16).reshape(tensor.shape)


@register
class F16(Format):
    """IEEE half floats, two to a uint32 word, widened to float32 in the kernel: the stored
    bytes of a GGUF F16 tensor on every adapter, shader-f16 or not."""

    name = "f16"
    block = 2

    def parts(self, rows, cols):
        return {"f16": ((rows, cols // 2), "uint32")}

    def encode(self, tensor: SourceTensor):
        return {"f16": pack_halves(_halves(tensor, "F16"))}

    def weight_te(self, parts: Parts, row, col):
        return f16_to_f32(half_at(parts["f16"], row, col))


@register
class BF16(Format):
    """bfloat16, two to a word: the high half of a float32, so widening is a shift."""

    name = "bf16"
    block = 2

    def parts(self, rows, cols):
        return {"bf16": ((rows, cols // 2), "uint32")}

    def encode(self, tensor: SourceTensor):
        return {"bf16": pack_halves(_halves(tensor, "BF16"))}

    def weight_te(self, parts: Parts, row, col):
        word = parts["bf16"][row, col // 2]
        return tirx.reinterpret("float32", bits(word, (col % 2) * 16, 16) << u32(16))
