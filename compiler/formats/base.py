"""The Format interface, the registry, and the few bit-level TE helpers formats share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import numpy as np
from tvm import te, tirx

from ..errors import BuildError

Parts = dict[str, te.Tensor]
# How a 16-bit float's bits (a uint32 holding them) become a float32 expression.
Half = Callable[["tirx.PrimExpr"], "tirx.PrimExpr"]


@dataclasses.dataclass(frozen=True)
class StoredBlocks:
    """A 2-D tensor exactly as a GGUF file (or safetensors, for F16 and BF16) stores it: each
    row a run of ggml blocks."""

    type_name: str  # ggml's name of the type: "Q4_0", "Q8_0", "F16", ...
    shape: tuple[int, int]  # (rows, cols) in elements
    data: np.ndarray  # uint8 (rows, bytes per row), untouched

    def dequantize(self) -> np.ndarray:
        """float32 values, by the `gguf` package's own decoder (16-bit floats directly: gguf's
        path makes several temporaries, and the widening is exact either way)."""
        from gguf import GGMLQuantizationType, dequantize

        if self.type_name == "F16":
            return self.data.view(np.float16).astype(np.float32).reshape(self.shape)
        if self.type_name == "BF16":
            widened = self.data.view(np.uint16).astype(np.uint32) << np.uint32(16)
            return widened.view(np.float32).reshape(self.shape)
        kind = GGMLQuantizationType[self.type_name]
        return dequantize(self.data, kind).reshape(self.shape).astype(np.float32)

    def take_rows(self, order: np.ndarray) -> StoredBlocks:
        return StoredBlocks(self.type_name, self.shape, self.data[order])


SourceTensor = np.ndarray | StoredBlocks


def stored_blocks(tensor: SourceTensor, type_name: str, block: int, block_bytes: int):
    """uint8 (rows, blocks, block_bytes): the blocks of a tensor a GGUF file stores in
    `type_name`. The GGUF formats carry such blocks as they are and convert nothing else."""
    if not (isinstance(tensor, StoredBlocks) and tensor.type_name == type_name):
        raise BuildError(f"the {type_name} format takes only tensors stored as {type_name}")
    rows, cols = tensor.shape
    return tensor.data.reshape(rows, cols // block, block_bytes)


def float_values(tensor: SourceTensor) -> np.ndarray:
    return tensor.dequantize() if isinstance(tensor, StoredBlocks) else tensor


# Elements a quantizer takes at a time (see `by_rows`): 4 MB in float32.
CHUNK_ELEMENTS = 1 << 20


def by_rows(tensor: SourceTensor, encode: Callable[[SourceTensor], dict[str, np.ndarray]]):
    """`encode` applied to runs of whole rows (about CHUNK_ELEMENTS elements each) and its parts
    joined: a quantizer then holds one run in float32 at a time, never a whole weight (a
    0.5B model's embedding is 545 MB in float32, and quantizing makes several temporaries)."""
    rows, cols = tensor.shape
    step = max(1, CHUNK_ELEMENTS // cols)
    if rows <= step:
        return encode(tensor)
    pieces = []
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        if isinstance(tensor, StoredBlocks):
            pieces.append(
                encode(
                    StoredBlocks(tensor.type_name, (stop - start, cols), tensor.data[start:stop])
                )
            )
        else:
            pieces.append(encode(tensor[start:stop]))
    return {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}


class Format:
    """How one weight is stored and read back. Subclasses set `name` (and `block`, the input
    size a row must be a multiple of) and implement `parts` and `encode`, plus either
    `weight_te` or, for formats whose elements share scales, `group`, `code_te` and
    `scale_te`: a matmul then decodes each scale once per group instead of once per element."""

    name: ClassVar[str]
    block: ClassVar[int] = 1
    group: ClassVar[int] = 0  # elements of a row that share a scale; 0 for float formats
    # Consecutive elements of a row whose codes share one 32-bit word (CPU decode gives each
    # SIMD lane such a run, see schedules.CpuReduction).
    codes_per_word: ClassVar[int] = 8
    # How CPU decode reads the codes as integers (targets/wasm/integer_linear.py): the part holding
    # them, their width (4: unsigned nibbles, 8: signed bytes; in element order, as
    # `pack_codes` writes them) and the constant `code_te` adds; None where a code is not one
    # whole field of a word.
    integer_codes: ClassVar[tuple[str, int, int] | None] = None
    # The part holding the bits of each 4-bit code above its nibble, and how many (GGUF's Q5_0
    # and Q5_1: a fifth bit; Q6_K: two), in the places `high_bit_place` gives, which CPU decode
    # joins to the nibble; None if none.
    integer_high_bits: ClassVar[tuple[str, int] | None] = None

    def high_bit_place(self, col, blocks: int):
        """Where element col's high bits start in a row of the `integer_high_bits` part, of a
        weight of that many blocks a row: (word, bit); in element order unless the format says
        otherwise."""
        assert self.integer_high_bits is not None
        at = col * self.integer_high_bits[1]
        return at // 32, at % 32

    def parts(self, rows: int, cols: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Shape and dtype of each stored part of a (rows, cols) weight."""
        raise NotImplementedError

    def encode(self, tensor: SourceTensor) -> dict[str, np.ndarray]:
        """The stored parts of a weight, in numpy."""
        raise NotImplementedError

    def weight_te(self, parts: Parts, row: tirx.PrimExpr, col: tirx.PrimExpr) -> tirx.PrimExpr:
        """weight[row, col] as a float expression, read inside the consuming kernel."""
        scale, minimum = self.scale_te(parts, row, col // self.group)
        return scaled(self.code_te(parts, row, col), scale, minimum)

    def code_te(self, parts: Parts, row: tirx.PrimExpr, col: tirx.PrimExpr) -> tirx.PrimExpr:
        """The quantized value of weight[row, col] (an integer expression)."""
        raise NotImplementedError

    def scale_te(
        self, parts: Parts, row: tirx.PrimExpr, group: tirx.PrimExpr, half: Half | None = None
    ):
        """(scale, minimum or None) of a group: weight = code * scale + minimum. `half` reads
        the 16-bit floats a GGUF block's scales are (`f16_to_f32` where None)."""
        raise NotImplementedError

    def check_shape(self, rows: int, cols: int, where: str) -> None:
        if cols % self.block:
            raise BuildError(
                f"{where}: the {self.name} format needs input sizes divisible by {self.block}, "
                f"got {cols}"
            )


def scaled(code: tirx.PrimExpr, scale, minimum) -> tirx.PrimExpr:
    """code * scale (+ minimum), in the scale's float type."""
    scale = as_expr(scale)
    value = code_value(code, str(scale.ty)) * scale
    return value if minimum is None else value + as_expr(minimum)


def code_value(code: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """A code as a `dtype` float. Codes are a few bits wide: an unsigned one is converted as a
    signed integer, which CPUs convert in one instruction (x86 has no unsigned conversion:
    SwiftShader's and WebAssembly's take several)."""
    if str(code.ty).startswith("uint"):
        code = tirx.Cast("int32", code)
    return tirx.Cast(dtype, code)


def as_expr(value) -> tirx.PrimExpr:
    """A tensor element (te.TensorSlice) as the load expression it stands for."""
    return value.asobject() if isinstance(value, te.TensorSlice) else value


def as_dtype(value, dtype: str) -> tirx.PrimExpr:
    """A tensor element or expression as `dtype` (cast only where it is another)."""
    value = as_expr(value)
    return value if str(value.ty) == dtype else tirx.Cast(dtype, value)


FORMATS: dict[str, Format] = {}


def register(cls: type[Format]) -> type[Format]:
    FORMATS[cls.name] = cls()
    return cls


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise BuildError(f"unknown weight format {name!r}; known: {', '.join(sorted(FORMATS))}")
    return FORMATS[name]


# ---------------------------------------------------------------------------------------------
# Bit-level helpers. Parts are uint32 words because WGSL storage buffers hold 32-bit values
# and f16 needs the shader-f16 feature many adapters lack: 16-bit floats and bytes are read
# out of words with shifts, and f16 bits become f32 by integer arithmetic.


def u32(value: int) -> tirx.PrimExpr:
    return tirx.const(value, "uint32")


def bits(word: tirx.PrimExpr, shift: tirx.PrimExpr, width: int) -> tirx.PrimExpr:
    """`width` bits of a uint32 word starting at bit `shift` (an int expression)."""
    return (word >> tirx.Cast("uint32", shift)) & u32((1 << width) - 1)


def f16_to_f32(half: tirx.PrimExpr) -> tirx.PrimExpr:
    """The float32 value of IEEE half-precision bits (a uint32 holding 16 bits), exactly,
    subnormals included (infinities and NaN are not expected in scales). Branch-free, and no
    float32 subnormal on the way (adapters may flush those): value = significand * 2^(e - 25)
    with the significand as an integer (1024 + mantissa, or the mantissa alone when e is 0)."""
    exponent = (half >> u32(10)) & u32(31)
    significand = (half & u32(1023)) | (tirx.min(exponent, u32(1)) << u32(10))
    power = (tirx.max(exponent, u32(1)) + u32(127 - 25)) << u32(23)
    signed_power = tirx.reinterpret("float32", power | ((half >> u32(15)) << u32(31)))
    return tirx.Cast("float32", significand) * signed_power


def f16_to_f32_unflushed(half: tirx.PrimExpr) -> tirx.PrimExpr:
    """`f16_to_f32`'s value in fewer than half its instructions, where float32 subnormals are kept
    (WebAssembly's floats never flush them): the half's exponent and mantissa moved to a
    float32's places, read with the float32 bias (127 for 15), and the product by 2^112 (the
    difference) putting the value back; a half subnormal is a float32 subnormal on the way,
    and both steps are exact. Infinities and NaN (not expected in scales) come out finite."""
    magnitude = (half & u32(0x7FFF)) << u32(13)
    sign = (half & u32(0x8000)) << u32(16)
    return tirx.reinterpret("float32", magnitude | sign) * tirx.const(2.0**112, "float32")


def pick(condition: tirx.PrimExpr, if_true: tirx.PrimExpr, if_false: tirx.PrimExpr):
    """`condition ? if_true : if_false` for uint32 values, without a branch: TVM writes a
    Select whose operands load memory as an if/else, which repeated in an unrolled loop makes
    shaders huge (and slow where lanes diverge)."""
    mask = tirx.Cast("uint32", condition) * u32(0xFFFFFFFF)
    return if_false ^ ((if_true ^ if_false) & mask)


def signed_byte(byte: tirx.PrimExpr) -> tirx.PrimExpr:
    """A byte (uint32 0..255) as the int8 it holds, by an arithmetic shift."""
    return tirx.reinterpret("int32", byte << u32(24)) >> 24


def half_at(words: te.Tensor, row: tirx.PrimExpr, index: tirx.PrimExpr) -> tirx.PrimExpr:
    """The index-th 16-bit value of a row of words holding two each (low half first)."""
    return bits(words[row, index // 2], (index % 2) * 16, 16)


def pack_codes(codes: np.ndarray, width: int) -> np.ndarray:
    """Codes of `width` bits (1, 2, 4 or 8), uint8 (rows, n) -> uint32 words (rows, n * width
    / 32): element i of a row in bits (i % per) * width of word i // per, per = 32 / width.
    GGUF's blocks interleave their codes (e.g. low and high nibbles of one byte are elements
    16 apart); repacked in element order, a matmul's unrolled run of consecutive elements
    reads them out of one word with constant shifts. The codes are the same."""
    rows, n = codes.shape
    per = 32 // width
    fields = codes.reshape(rows, n // per, per).astype(np.uint32)
    packed = np.zeros((rows, n // per), dtype=np.uint32)
    for i in range(per):
        packed |= fields[..., i] << np.uint32(width * i)
    return packed


def code_at(words: te.Tensor, row: tirx.PrimExpr, col: tirx.PrimExpr, width: int):
    """Element col of a row of codes packed by `pack_codes`."""
    per = 32 // width
    return bits(words[row, col // per], (col % per) * width, width)


def signed_byte_at(words: te.Tensor, row: tirx.PrimExpr, col: tirx.PrimExpr):
    """Element col of a row of int8 codes, four a word: the byte shifted to the top of the
    word, then arithmetically back down (two operations, sign included). The shift is
    24 - 8 * (col % 4), written with a xor: vectorized over col, TVM cannot cast a ramp of
    negative stride to uint32."""
    top = words[row, col // 4] << tirx.Cast("uint32", ((col % 4) ^ 3) * 8)
    return tirx.reinterpret("int32", top) >> 24


def gather_codes(data: np.ndarray, byte: np.ndarray, shift: np.ndarray, width: int):
    """Codes out of GGUF blocks: data uint8 (rows, blocks, bytes per block); element e of each
    block is `width` bits of byte[e] from bit shift[e]. Returns uint8 (rows, blocks * len(byte))."""
    rows = data.shape[0]
    codes = (data[..., byte] >> shift.astype(np.uint8)) & np.uint8((1 << width) - 1)
    return codes.reshape(rows, -1)


def pack_at(codes: np.ndarray, word: np.ndarray, bit: np.ndarray, words: int) -> np.ndarray:
    """Codes uint8 (rows, n) of a few bits, element i's placed at bit[i] of word[i] of its row
    (no two overlapping): uint32 (rows, words)."""
    packed = np.zeros((codes.shape[0], words), dtype=np.uint32)
    for b in np.unique(bit):  # the elements at bit b, each in a word of its own
        at = np.flatnonzero(bit == b)
        packed[:, word[at]] |= codes[:, at].astype(np.uint32) << np.uint32(b)
    return packed


def pack_words(data: np.ndarray) -> np.ndarray:
    """Bytes (rows, n) -> little-endian uint32 words (rows, n / 4): a view of the same memory
    where the bytes are contiguous (a weight kept as stored is then never copied)."""
    return np.ascontiguousarray(data).view("<u4").astype(np.uint32, copy=False)


def pack_halves(halves: np.ndarray) -> np.ndarray:
    """uint16 (rows, n) -> uint32 (rows, ceil(n / 2)), element 2i in the low half of word i."""
    rows, n = halves.shape
    if n % 2:
        padded = np.zeros((rows, n + 1), dtype=np.uint16)
        padded[:, :n] = halves
        halves = padded
    return pack_words(np.ascontiguousarray(halves).view(np.uint8).reshape(rows, -1))
