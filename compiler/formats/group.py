"""Our own group quantizations, groups of 32 along the input dimension:

- q4 (asymmetric): value = code * scale + minimum, codes 0..15, eight to a uint32 word. GGUF
  Q4_0 and Q4_1 blocks convert to it exactly (their f16 scales widen losslessly).
- q8 (symmetric): value = code * scale, codes -127..127, four to a word.

Each with float32 scales (runs everywhere) or float16 ones (needs shader-f16).
"""

from __future__ import annotations

import numpy as np

from .base import (
    Format,
    Half,
    Parts,
    SourceTensor,
    StoredBlocks,
    by_rows,
    code_at,
    float_values,
    pack_codes,
    register,
    signed_byte_at,
)

GROUP = 32


def q4_codes(tensor: SourceTensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes uint8 (rows, cols), scale, minimum (rows, cols / 32)): GGUF Q4_0/Q4_1 blocks
    exactly, anything else by round-to-nearest."""
    if isinstance(tensor, StoredBlocks) and tensor.type_name in ("Q4_0", "Q4_1"):
        rows, cols = tensor.shape
        blocks = tensor.data.reshape(rows, cols // GROUP, -1)
        scale = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        if tensor.type_name == "Q4_1":
            minimum = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
            packed = blocks[..., 4:20]
        else:  # Q4_0: value = (code - 8) * scale
            minimum = -8.0 * scale
            packed = blocks[..., 2:18]
        # ggml's block: the low nibbles are elements 0..15, the high nibbles 16..31.
        codes = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).reshape(rows, cols)
        return codes.astype(np.uint8), scale, minimum
    weight = float_values(tensor).astype(np.float32)
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // GROUP, GROUP)
    low = groups.min(axis=-1)
    scale = (groups.max(axis=-1) - low) / 15.0
    safe = np.where(scale == 0, 1.0, scale)
    codes = np.clip(np.rint((groups - low[..., None]) / safe[..., None]), 0, 15)
    return codes.reshape(rows, cols).astype(np.uint8), scale.astype(np.float32), low


class Q4(Format):
    scale_dtype = "float32"
    block = group = GROUP
    integer_codes = ("q4", 4, 0)

    def parts(self, rows, cols):
        groups = (rows, cols // GROUP)
        return {
            "q4": ((rows, cols // 8), "uint32"),
            "scale": (groups, self.scale_dtype),
            "minimum": (groups, self.scale_dtype),
        }

    def encode(self, tensor: SourceTensor):
        return by_rows(tensor, self._encode)

    def _encode(self, tensor: SourceTensor):
        codes, scale, minimum = q4_codes(tensor)
        return {
            "q4": pack_codes(codes, 4),
            "scale": scale.astype(self.scale_dtype),
            "minimum": minimum.astype(self.scale_dtype),
        }

    def code_te(self, parts: Parts, row, col):
        return code_at(parts["q4"], row, col, 4)

    def scale_te(self, parts: Parts, row, group, half: Half | None = None):
        return parts["scale"][row, group], parts["minimum"][row, group]


@register
class Q4F32(Q4):
    name = "q4f32"


@register
class Q4F16(Q4):
    name = "q4f16"
    scale_dtype = "float16"


class Q8(Format):
    scale_dtype = "float32"
    block = group = GROUP
    codes_per_word = 4
    integer_codes = ("q8", 8, 0)

    def parts(self, rows, cols):
        return {
            "q8": ((rows, cols // 4), "uint32"),
            "scale": ((rows, cols // GROUP), self.scale_dtype),
        }

    def encode(self, tensor: SourceTensor):
        return by_rows(tensor, self._encode)

    def _encode(self, tensor: SourceTensor):
        weight = float_values(tensor).astype(np.float32)
        rows, cols = weight.shape
        groups = weight.reshape(rows, cols // GROUP, GROUP)
        scale = np.abs(groups).max(axis=-1) / 127.0
        safe = np.where(scale == 0, 1.0, scale)
        codes = np.clip(np.rint(groups / safe[..., None]), -127, 127).astype(np.int8)
        return {
            "q8": pack_codes(codes.view(np.uint8).reshape(rows, cols), 8),
            "scale": scale.astype(self.scale_dtype),
        }

    def code_te(self, parts: Parts, row, col):
        return signed_byte_at(parts["q8"], row, col)

    def scale_te(self, parts: Parts, row, group, half: Half | None = None):
        return parts["scale"][row, group], None


@register
class Q8F32(Q8):
    name = "q8f32"


@register
class Q8F16(Q8):
    name = "q8f16"
    scale_dtype = "float16"
