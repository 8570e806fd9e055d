"""GGUF's K-quants: super-blocks of 256 elements with 6- or 8-bit sub-block scales, carried
losslessly (byte layouts as ggml's block_q*_K structs and dequantize_row_q*_K define them,
checked against the `gguf` package's numpy decoder in tests/test_formats.py):

    Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of packed 6-bit scales and mins, 128 bytes of
        nibbles. Each 64 elements share 32 bytes: low nibbles are the first 32, high nibbles
        the next 32; sub-block s (of 32) has value = d * scale[s] * q - dmin * min[s].
    Q5_K (176 bytes): as Q4_K, plus 32 bytes qh before the nibbles: bit 2c (low nibble) or
        2c + 1 (high nibble) of qh[l] is the fifth bit of element l of chunk c (of 64).
    Q6_K (210 bytes): 128 bytes of low nibbles (ql), 64 bytes of 2-bit high parts (qh), 16
        int8 scales, f16 d; value = d * scale * (q - 32), one scale per 16 elements.

The fields are split into parts of uint32 words (the same bytes regrouped, so that every field
is word-aligned); a byte is read out of its word with a shift.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .base import (
    Format,
    Parts,
    SourceTensor,
    bits,
    f16_to_f32,
    half_at,
    pack_halves,
    pack_words,
    pick,
    register,
    signed_byte,
    stored_blocks,
    u32,
)

SUPER = 256


def byte_at(words: te.Tensor, row: tirx.PrimExpr, index: tirx.PrimExpr) -> tirx.PrimExpr:
    """The index-th byte of a row of little-endian words."""
    return bits(words[row, index // 4], (index % 4) * 8, 8)


class KQuant(Format):
    block = SUPER
    group = 32
    type_name: str
    block_bytes: int
    # name -> (offset, size) of each field within a block, regrouped into one part each
    fields: dict[str, tuple[int, int]]

    def parts(self, rows, cols):
        blocks = cols // SUPER
        out = {}
        for name, (_, size) in self.fields.items():
            out[name] = ((rows, blocks * size // 4), "uint32")
        return out

    def encode(self, tensor: SourceTensor):
        blocks = stored_blocks(tensor, self.type_name, SUPER, self.block_bytes)
        rows = blocks.shape[0]
        return {
            name: pack_words(blocks[..., offset : offset + size].reshape(rows, -1))
            for name, (offset, size) in self.fields.items()
        }


class Q45K(KQuant):
    """Q4_K and Q5_K share their scales: 8 sub-blocks of 32, each a 6-bit scale and min."""

    fifth_bit = False

    def scale_min(self, parts: Parts, row, block, sub):
        """(scale, min) of sub-block `sub` (0..7): ggml's get_scale_min_k4."""
        base = block * 12

        def byte(i):
            return byte_at(parts["scales"], row, base + i)

        low = sub < 4
        scale = pick(
            low,
            byte(sub % 4) & u32(63),
            (byte(sub % 4 + 8) & u32(15)) | ((byte(sub % 4) >> u32(6)) << u32(4)),
        )
        minimum = pick(
            low,
            byte(sub % 4 + 4) & u32(63),
            (byte(sub % 4 + 8) >> u32(4)) | ((byte(sub % 4 + 4) >> u32(6)) << u32(4)),
        )
        return scale, minimum

    def code_te(self, parts: Parts, row, col):
        block = col // SUPER
        e = col % SUPER
        chunk = e // 64
        high = (e % 64) // 32  # 0: low nibbles, 1: high nibbles
        lane = e % 32
        q = bits(
            parts["qs"][row, block * 32 + (chunk * 32 + lane) // 4],
            ((chunk * 32 + lane) % 4) * 8 + high * 4,
            4,
        )
        if self.fifth_bit:
            qh = byte_at(parts["qh"], row, block * 32 + lane)
            q = q | (bits(qh, chunk * 2 + high, 1) << u32(4))
        return q

    def scale_te(self, parts: Parts, row, group):
        """value = d * scale * q - dmin * min, as ggml computes it: d * scale and dmin * min
        are exact in float32 (11 by 6 significant bits)."""
        block = group // 8
        dm = parts["dm"][row, block]
        d = f16_to_f32(dm & u32(0xFFFF))
        dmin = f16_to_f32(dm >> u32(16))
        scale, minimum = self.scale_min(parts, row, block, group % 8)
        return d * tirx.Cast("float32", scale), -(dmin * tirx.Cast("float32", minimum))


@register
class Q4_K(Q45K):
    name, type_name, block_bytes = "q4_k", "Q4_K", 144
    fields = {"dm": (0, 4), "scales": (4, 12), "qs": (16, 128)}


@register
class Q5_K(Q45K):
    name, type_name, block_bytes = "q5_k", "Q5_K", 176
    fields = {"dm": (0, 4), "scales": (4, 12), "qh": (16, 32), "qs": (48, 128)}
    fifth_bit = True


@register
class Q6_K(KQuant):
    name, type_name, block_bytes, group = "q6_k", "Q6_K", 210, 16
    fields = {"ql": (0, 128), "qh": (128, 64), "scales": (192, 16)}

    def parts(self, rows, cols):
        out = super().parts(rows, cols)
        out["d"] = ((rows, (cols // SUPER + 1) // 2), "uint32")
        return out

    def encode(self, tensor: SourceTensor):
        out = super().encode(tensor)
        blocks = stored_blocks(tensor, self.type_name, SUPER, self.block_bytes)
        out["d"] = pack_halves(blocks[..., 208:210].copy().view(np.uint16)[..., 0])
        return out

    def code_te(self, parts: Parts, row, col):
        block = col // SUPER
        e = col % SUPER
        half = e // 128
        quarter = (e % 128) // 32
        lane = e % 32
        low = byte_at(parts["ql"], row, block * 128 + half * 64 + (quarter % 2) * 32 + lane)
        low = bits(low, (quarter // 2) * 4, 4)
        high = bits(byte_at(parts["qh"], row, block * 64 + half * 32 + lane), quarter * 2, 2)
        return tirx.Cast("int32", low | (high << u32(4))) - 32

    def scale_te(self, parts: Parts, row, group):
        """One int8 scale per 16 elements, in element order: group g's is byte g."""
        scale = signed_byte(byte_at(parts["scales"], row, group))
        d = f16_to_f32(half_at(parts["d"], row, group // 16))
        return d * tirx.Cast("float32", scale), None


KQUANT_FORMATS = {cls.type_name: cls.name for cls in (Q4_K, Q5_K, Q6_K)}
