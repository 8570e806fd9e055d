"""GGUF's K-quants: super-blocks of 256 elements with 4-, 6- or 8-bit sub-block scales,
carried losslessly (byte layouts as ggml's block_q*_K structs and dequantize_row_q*_K define
them, checked against the `gguf` package's numpy decoder in tests/test_formats.py):

    Q2_K (84 bytes): 16 bytes of sub-block scale (low nibble) and min (high nibble), 64 bytes
        of 2-bit codes, f16 d, f16 dmin; value = d * scale * q - dmin * min, 16 per sub-block.
    Q3_K (110 bytes): 32 bytes hmask (third bits), 64 bytes of 2-bit codes, 12 bytes of packed
        6-bit scales, f16 d; value = d * (scale - 32) * (q - 4 if the third bit is clear).
    Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of packed 6-bit scales and mins, 128 bytes of
        nibbles. Each 64 elements share 32 bytes: low nibbles are the first 32, high nibbles
        the next 32; sub-block s (of 32) has value = d * scale[s] * q - dmin * min[s].
    Q5_K (176 bytes): as Q4_K, plus 32 bytes qh before the nibbles: bit 2c (low nibble) or
        2c + 1 (high nibble) of qh[l] is the fifth bit of element l of chunk c (of 64).
    Q6_K (210 bytes): 128 bytes of low nibbles (ql), 64 bytes of 2-bit high parts (qh), 16
        int8 scales, f16 d; value = d * scale * (q - 32), one scale per 16 elements.

In Q2_K, Q3_K and Q6_K each 128 elements share 32 bytes of codes: element 32j + l of the 128
is in byte l, bits 2j (Q6_K: its low nibble in 64 bytes, l or l + 32, nibble j // 2).
The fields are split into parts of uint32 words (the same bytes regrouped, so that every field
is word-aligned): the codes repacked in element order (`pack_codes`, the tables below say
where ggml keeps each element's bits), the scales as they are, a byte read with a shift.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from .base import (
    Format,
    Half,
    Parts,
    SourceTensor,
    bits,
    code_at,
    f16_to_f32,
    gather_codes,
    half_at,
    pack_at,
    pack_codes,
    pack_halves,
    pack_words,
    pick,
    register,
    signed_byte,
    stored_blocks,
    u32,
)

SUPER = 256


E = np.arange(SUPER)  # element of a super-block
# Where ggml puts each element's code bits: 4-bit codes of Q4_K/Q5_K (64 elements to 32
# bytes, low nibbles first), 2-bit codes of Q2_K/Q3_K (128 elements to 32 bytes, four
# bit-pairs a byte) and their one-bit fields (32 bytes, element e in bit e // 32 of byte e % 32).
NIBBLES_BY_64 = (E // 64 * 32 + E % 32, E % 64 // 32 * 4, 4)
PAIRS_BY_128 = (E // 128 * 32 + E % 32, E % 128 // 32 * 2, 2)
BITS_BY_32 = (E % 32, E // 32, 1)
# Q6_K's low nibbles: 128 elements to 64 bytes, bytes l and l + 32 taking four runs of 32.
Q6_LOW = (E // 128 * 64 + E % 128 // 32 % 2 * 32 + E % 32, E % 128 // 64 * 4, 4)


def byte_at(words: te.Tensor, row: tirx.PrimExpr, index: tirx.PrimExpr) -> tirx.PrimExpr:
    """The index-th byte of a row of little-endian words."""
    return bits(words[row, index // 4], (index % 4) * 8, 8)


class KQuant(Format):
    block = SUPER
    group = 32
    type_name: str
    block_bytes: int
    # name -> (offset, size) of each field within a block, regrouped into one part each; a
    # field of 2 bytes is an f16 scale, two blocks' to a word
    fields: dict[str, tuple[int, int]]
    # field -> (byte, shift, width) for the fields of codes: element e of a block has `width`
    # bits at byte[e], bit shift[e], of the field; these are repacked in element order
    codes: dict[str, tuple[np.ndarray, np.ndarray, int]]

    def parts(self, rows, cols):
        blocks = cols // SUPER
        return {
            name: ((rows, (blocks + 1) // 2 if size == 2 else blocks * size // 4), "uint32")
            for name, (_, size) in self.fields.items()
        }

    def encode(self, tensor: SourceTensor):
        blocks = stored_blocks(tensor, self.type_name, SUPER, self.block_bytes)
        rows = blocks.shape[0]
        out = {}
        for name, (offset, size) in self.fields.items():
            field = blocks[..., offset : offset + size]
            if name in self.codes:
                byte, shift, width = self.codes[name]
                out[name] = self.pack(name, gather_codes(field, byte, shift, width), width)
            elif size == 2:
                out[name] = pack_halves(field.copy().view(np.uint16)[..., 0])
            else:
                out[name] = pack_words(field.reshape(rows, -1))
        return out

    def pack(self, name: str, codes: np.ndarray, width: int) -> np.ndarray:
        """A field's codes (rows, elements) in words: in element order."""
        return pack_codes(codes, width)


@register
class Q2_K(KQuant):
    """16 sub-blocks of 16, each a 4-bit scale (low nibble) and minimum (high nibble)."""

    name, type_name, block_bytes, group = "q2_k", "Q2_K", 84, 16
    fields = {"scales": (0, 16), "qs": (16, 64), "dm": (80, 4)}
    codes = {"qs": PAIRS_BY_128}

    def code_te(self, parts: Parts, row, col):
        return code_at(parts["qs"], row, col, 2)

    def scale_te(self, parts: Parts, row, group, half: Half | None = None):
        half = half or f16_to_f32
        dm = parts["dm"][row, group // 16]
        packed = byte_at(parts["scales"], row, group)  # one byte per sub-block, in order
        d = half(dm & u32(0xFFFF)) * tirx.Cast("float32", packed & u32(15))
        return d, -(half(dm >> u32(16)) * tirx.Cast("float32", packed >> u32(4)))


@register
class Q3_K(KQuant):
    """2 low bits in qs, the third in hmask (set: no offset, clear: minus 4), 16 sub-blocks
    of 16 with 6-bit scales biased by 32: value = d * (scale - 32) * (q - 4 * !high)."""

    name, type_name, block_bytes, group = "q3_k", "Q3_K", 110, 16
    fields = {"hmask": (0, 32), "qs": (32, 64), "scales": (96, 12), "d": (108, 2)}
    codes = {"hmask": BITS_BY_32, "qs": PAIRS_BY_128}

    def code_te(self, parts: Parts, row, col):
        low = tirx.Cast("int32", code_at(parts["qs"], row, col, 2))
        return low - tirx.Cast("int32", (u32(1) - code_at(parts["hmask"], row, col, 1)) << u32(2))

    def scale_te(self, parts: Parts, row, group, half: Half | None = None):
        """Scale s (0..15): low 4 bits in byte s % 8 (nibble s // 8), high 2 bits in byte
        8 + s % 4 (bits 2 * (s // 4))."""
        half = half or f16_to_f32
        block, s = group // 16, group % 16
        low = bits(byte_at(parts["scales"], row, block * 12 + s % 8), (s // 8) * 4, 4)
        high = bits(byte_at(parts["scales"], row, block * 12 + 8 + s % 4), (s // 4) * 2, 2)
        scale = tirx.Cast("int32", low | (high << u32(4))) - 32
        d = half(half_at(parts["d"], row, block))
        return d * tirx.Cast("float32", scale), None


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
        q = code_at(parts["qs"], row, col, 4)
        if self.fifth_bit:
            q = q | (code_at(parts["qh"], row, col, 1) << u32(4))
        return q

    def scale_te(self, parts: Parts, row, group, half: Half | None = None):
        """value = d * scale * q - dmin * min, as ggml computes it: d * scale and dmin * min
        are exact in float32 (11 by 6 significant bits)."""
        half = half or f16_to_f32
        block = group // 8
        dm = parts["dm"][row, block]
        d = half(dm & u32(0xFFFF))
        dmin = half(dm >> u32(16))
        scale, minimum = self.scale_min(parts, row, block, group % 8)
        return d * tirx.Cast("float32", scale), -(dmin * tirx.Cast("float32", minimum))


@register
class Q4_K(Q45K):
    name, type_name, block_bytes = "q4_k", "Q4_K", 144
    integer_codes = ("qs", 4, 0)
    fields = {"dm": (0, 4), "scales": (4, 12), "qs": (16, 128)}
    codes = {"qs": NIBBLES_BY_64}


@register
class Q5_K(Q45K):
    name, type_name, block_bytes = "q5_k", "Q5_K", 176
    fields = {"dm": (0, 4), "scales": (4, 12), "qh": (16, 32), "qs": (48, 128)}
    codes = {"qh": BITS_BY_32, "qs": NIBBLES_BY_64}
    fifth_bit = True


@register
class Q6_K(KQuant):
    name, type_name, block_bytes, group = "q6_k", "Q6_K", 210, 16
    fields = {"ql": (0, 128), "qh": (128, 64), "scales": (192, 16), "d": (208, 2)}
    codes = {"ql": Q6_LOW, "qh": PAIRS_BY_128}
    integer_codes, integer_high_bits = ("ql", 4, -32), ("qh", 2)

    def pack(self, name: str, codes: np.ndarray, width: int) -> np.ndarray:
        if name != "qh":
            return super().pack(name, codes, width)
        word, bit = self.high_bit_place(np.arange(codes.shape[1]), 0)
        return pack_at(codes, word, bit, codes.shape[1] * width // 32)

    def high_bit_place(self, col, blocks: int):
        """Element col's two high bits in a row of `qh`: the bits of two groups of 32 share
        four words, byte b of which holds those of elements 2b and 2b + 1 of group j (0, 1) at
        bits 2 j and 2 j + 4, as the CPU's integer kernel reads them (integer_linear.py's
        `_byte_codes`). The same bits as GGUF's, placed otherwise."""
        group, e = col // 32, col % 32
        j, byte = group % 2, e // 2
        return (group - j) * 2 + byte // 4, byte % 4 * 8 + 2 * j + 4 * (e % 2)

    def code_te(self, parts: Parts, row, col):
        word, at = self.high_bit_place(col, 0)
        q = code_at(parts["ql"], row, col, 4) | (bits(parts["qh"][row, word], at, 2) << u32(4))
        return tirx.Cast("int32", q) - 32

    def scale_te(self, parts: Parts, row, group, half: Half | None = None):
        """One int8 scale per 16 elements, in element order: group g's is byte g."""
        half = half or f16_to_f32
        scale = signed_byte(byte_at(parts["scales"], row, group))
        d = half(half_at(parts["d"], row, group // 16))
        return d * tirx.Cast("float32", scale), None


KQUANT_FORMATS = {cls.type_name: cls.name for cls in (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)}
