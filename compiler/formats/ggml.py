"""GGUF's 32-element block formats, carried losslessly (byte layouts as ggml defines them,
checked against the `gguf` package's numpy decoder in tests/test_formats.py):

    Q8_0: f16 d, 32 int8 q                      value = q * d
    Q4_0: f16 d, 16 bytes of nibbles            value = (q - 8) * d
    Q4_1: f16 d, f16 m, 16 bytes of nibbles     value = q * d + m
    Q5_0: f16 d, u32 qh, 16 bytes of nibbles    value = ((q | bit << 4) - 16) * d
    Q5_1: f16 d, f16 m, u32 qh, 16 bytes        value = (q | bit << 4) * d + m

In a block of nibbles, byte i holds element i (low nibble) and element i + 16 (high nibble);
bit j of qh is the fifth bit of element j. A block's fields are split into parts of uint32
words (the same bytes, regrouped so that every field is word-aligned): `qs` the quantized
values (nibbles repacked in element order, eight a word), `d` (two blocks' scales a word) or
`dm` (scale and minimum of a block), `qh` the fifth bits, a word a block (where a row's
blocks come in sets of four, a set's bits regrouped over its four words: `fifth_bit_place`).
"""

from __future__ import annotations

import numpy as np
from tvm import tirx

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
    register,
    signed_byte_at,
    stored_blocks,
    u32,
)

BLOCK = 32
# Blocks whose fifth bits share four words of `qh` (a 128-bit vector: see fifth_bit_place).
FIFTH_BIT_BLOCKS = 4


def fifth_bit_place(col, blocks: int):
    """Where element col's fifth bit is in a row of `qh` of that many blocks: (word, bit).
    Where the blocks come in whole sets of four (every row of 128 elements or a multiple), the
    bits of a set share four words: byte b (0-15) of them holds, at bit j + 4 p, the bit of
    element 2 b + p of its block j. Element 2b + p's nibble is in byte b of its block's
    repacked nibbles (low for p = 0), so that the CPU's integer kernel reads a block's bits for
    all 32 nibble bytes with one vector shift right by j (integer_linear.py's `_byte_codes`):
    each byte's bit p = 0 lands at bit 0 and p = 1 at bit 4, instead of
    spreading four bytes over sixteen with a shuffle and a comparison per byte. Elsewhere, as
    GGUF has them: bit e of a block's word, element e's. Works for numpy arrays and TIR
    expressions alike."""
    block, e = col // BLOCK, col % BLOCK
    if blocks % FIFTH_BIT_BLOCKS:
        return block, e
    byte = e // 2
    word = block // FIFTH_BIT_BLOCKS * FIFTH_BIT_BLOCKS + byte // 4
    return word, byte % 4 * 8 + block % FIFTH_BIT_BLOCKS + 4 * (e % 2)


class GGMLBlock(Format):
    """A ggml block format; subclasses give the field offsets of their block."""

    block = group = BLOCK
    type_name: str  # ggml's name
    block_bytes: int
    qs_offset: int  # the quantized values: 16 bytes of nibbles, or 32 int8 (Q8_0)
    minimum = False  # an f16 minimum right after the f16 scale
    qh_offset: int | None = None  # Q5: the fifth bits

    def parts(self, rows, cols):
        blocks = cols // BLOCK
        qs_bytes = self.block_bytes - self.qs_offset
        out = {"qs": ((rows, blocks * qs_bytes // 4), "uint32")}
        out["dm" if self.minimum else "d"] = (
            (rows, blocks) if self.minimum else (rows, (blocks + 1) // 2),
            "uint32",
        )
        if self.qh_offset is not None:
            out["qh"] = ((rows, blocks), "uint32")
        return out

    def encode(self, tensor: SourceTensor):
        blocks = stored_blocks(tensor, self.type_name, BLOCK, self.block_bytes)
        rows = blocks.shape[0]
        out = {"qs": self.pack_qs(blocks[..., self.qs_offset :])}
        if self.minimum:
            out["dm"] = pack_words(blocks[..., 0:4].reshape(rows, -1))
        else:
            out["d"] = pack_halves(blocks[..., 0:2].copy().view(np.uint16)[..., 0])
        if self.qh_offset is not None:
            element = np.arange(BLOCK)  # bit e of the block's 4 bytes of qh
            qh = blocks[..., self.qh_offset : self.qh_offset + 4]
            fifth = gather_codes(qh, element // 8, element % 8, 1)
            word, bit = self.high_bit_place(np.arange(fifth.shape[1]), qh.shape[1])
            out["qh"] = pack_at(fifth, word, bit, qh.shape[1])
        return out

    def pack_qs(self, qs):
        """The nibbles of (rows, blocks, 16) bytes, repacked in element order."""
        element = np.arange(BLOCK)
        return pack_codes(gather_codes(qs, element % 16, element // 16 * 4, 4), 4)

    def high_bit_place(self, col, blocks: int):
        return fifth_bit_place(col, blocks)

    def scale_te(self, parts: Parts, row, group, half: Half | None = None):
        half = half or f16_to_f32
        if self.minimum:
            word = parts["dm"][row, group]
            return half(word & u32(0xFFFF)), half(word >> u32(16))
        return half(half_at(parts["d"], row, group)), None

    def code_te(self, parts: Parts, row, col):
        """The nibble of element col, its fifth bit, and the offset that centres it where the
        block has no minimum."""
        q = code_at(parts["qs"], row, col, 4)
        if self.qh_offset is not None:
            word, bit = self.high_bit_place(col, int(parts["qh"].shape[1]))
            q = q | (bits(parts["qh"][row, word], bit, 1) << u32(4))
        if self.minimum:
            return q
        return tirx.Cast("int32", q) - (16 if self.qh_offset is not None else 8)


@register
class Q4_0(GGMLBlock):
    name, type_name, block_bytes, qs_offset = "q4_0", "Q4_0", 18, 2
    integer_codes = ("qs", 4, -8)


@register
class Q4_1(GGMLBlock):
    name, type_name, block_bytes, qs_offset, minimum = "q4_1", "Q4_1", 20, 4, True
    integer_codes = ("qs", 4, 0)


@register
class Q5_0(GGMLBlock):
    name, type_name, block_bytes, qs_offset, qh_offset = "q5_0", "Q5_0", 22, 6, 2
    integer_codes, integer_high_bits = ("qs", 4, -16), ("qh", 1)


@register
class Q5_1(GGMLBlock):
    name, type_name, block_bytes, qs_offset, minimum, qh_offset = "q5_1", "Q5_1", 24, 8, True, 4
    integer_codes, integer_high_bits = ("qs", 4, 0), ("qh", 1)


@register
class Q8_0(GGMLBlock):
    name, type_name, block_bytes, qs_offset = "q8_0", "Q8_0", 34, 2
    codes_per_word = 4
    integer_codes = ("qs", 8, 0)

    def pack_qs(self, qs):
        return pack_words(qs.reshape(qs.shape[0], -1))  # int8 codes, already in order

    def code_te(self, parts: Parts, row, col):
        return signed_byte_at(parts["qs"], row, col)


BLOCK_FORMATS = {cls.type_name: cls.name for cls in (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)}
