"""Every weight format's kernel-side decoder (its TE expression, compiled for the CPU with
TVM) against an independent decoder: the `gguf` package's numpy dequantization of the same
GGUF blocks, bit for bit; and our own group quantizations against their definition."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from gguf import GGMLQuantizationType, quantize
from tiny_gguf import random_k_quant_blocks
from tvm import te, tirx

from compiler.formats import FORMATS, STORED, StoredBlocks
from compiler.formats.base import f16_to_f32, f16_to_f32_unflushed

ROWS, COLS = 6, 256


def decode(fmt, parts: dict[str, np.ndarray], rows: int, cols: int) -> np.ndarray:
    """Runs the format's weight_te over the whole weight on the CPU."""
    inputs = {name: te.placeholder(a.shape, str(a.dtype), name) for name, a in parts.items()}
    out = te.compute(
        (rows, cols), lambda r, c: tirx.Cast("float32", fmt.weight_te(inputs, r, c)), name="w"
    )
    lib = tvm.compile(te.create_prim_func([*inputs.values(), out]), target="llvm")
    args = [tvm.runtime.tensor(np.ascontiguousarray(parts[n])) for n in inputs]
    result = tvm.runtime.tensor(np.zeros((rows, cols), np.float32))
    lib(*args, result)
    return result.numpy()


def stored(type_name: str, weight: np.ndarray) -> StoredBlocks:
    """The weight in a GGUF type: quantized by `gguf`, or random valid blocks for the K-quants
    (which `gguf` cannot quantize to)."""
    kind = GGMLQuantizationType[type_name]
    rows, cols = weight.shape
    if type_name.endswith("_K"):
        data = random_k_quant_blocks(kind, rows, cols, np.random.default_rng(4))
    else:
        data = quantize(weight, kind).reshape(rows, -1).view(np.uint8)
    return StoredBlocks(type_name, weight.shape, data)


@pytest.mark.parametrize("type_name", sorted(STORED))
def test_gguf_types_decode_exactly(type_name):
    rng = np.random.default_rng(1)
    weight = (rng.standard_normal((ROWS, COLS)) * 0.05).astype(np.float32)
    weight[0, :32] = 0.0  # an all-zero block
    tensor = stored(type_name, weight)
    if type_name not in ("F32", "F16", "BF16"):
        # Scales that are f16 subnormals, positive and negative, must decode exactly too (the
        # f16 scale sits at the start of a block, or near its end for Q2_K, Q3_K, Q6_K).
        block = 256 if type_name.endswith("_K") else 32
        blocks = tensor.data.reshape(ROWS, COLS // block, -1)
        at = {"Q2_K": 80, "Q3_K": 108, "Q6_K": 208}.get(type_name, 0)
        blocks[1, 0, at : at + 2] = np.frombuffer(np.uint16(0x0003).tobytes(), np.uint8)
        blocks[2, 0, at : at + 2] = np.frombuffer(np.uint16(0x8201).tobytes(), np.uint8)
    if type_name == "F32":
        tensor = weight  # F32 tensors are loaded as arrays
        expected = weight
    else:
        expected = tensor.dequantize()
    fmt = FORMATS[STORED.get(type_name, type_name.lower())]
    parts = fmt.encode(tensor)
    assert {k: (v.shape, str(v.dtype)) for k, v in parts.items()} == {
        k: (tuple(shape), dtype) for k, (shape, dtype) in fmt.parts(ROWS, COLS).items()
    }
    np.testing.assert_array_equal(decode(fmt, parts, ROWS, COLS), expected)
    # Lossless: the stored bytes are the GGUF's, regrouped (same total but padding).
    if isinstance(tensor, StoredBlocks):
        stored_bytes = sum(p.nbytes for p in parts.values())
        assert tensor.data.nbytes <= stored_bytes <= tensor.data.nbytes + 4 * ROWS


@pytest.mark.parametrize("convert", [f16_to_f32, f16_to_f32_unflushed])
def test_every_finite_half_widens_exactly(convert):
    """Both readers of a block's 16-bit scales, on every finite half (subnormals and signed
    zeros included), bit for bit against numpy's widening; compiled for this CPU, whose
    floats, like WebAssembly's, keep subnormals."""
    halves = np.arange(1 << 16, dtype=np.uint32)
    halves = halves[np.isfinite(halves.astype(np.uint16).view(np.float16))]
    bits = te.placeholder(halves.shape, "uint32", "bits")
    out = te.compute(halves.shape, lambda i: convert(bits[i]), name="out")
    lib = tvm.compile(te.create_prim_func([bits, out]), target="llvm")
    result = tvm.runtime.tensor(np.zeros(halves.shape, np.float32))
    lib(tvm.runtime.tensor(halves), result)
    expected = halves.astype(np.uint16).view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(result.numpy().view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("name", ["q4f32", "q8f32"])
def test_group_quantization_round_trip(name):
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    fmt = FORMATS[name]
    values = decode(fmt, fmt.encode(weight), ROWS, COLS)
    groups = weight.reshape(ROWS, -1, 32)
    if name == "q4f32":  # half a step of (max - min) / 15 at most
        step = (groups.max(-1) - groups.min(-1)) / 15
    else:  # half a step of max |w| / 127
        step = np.abs(groups).max(-1) / 127
    error = np.abs(values - weight).reshape(ROWS, -1, 32).max(-1)
    assert np.all(error <= step / 2 + 1e-6)


@pytest.mark.parametrize("type_name", ["Q5_0", "Q5_1"])
@pytest.mark.parametrize("cols", [96, 384])
def test_fifth_bits_decode_exactly_in_either_place(type_name, cols):
    """Q5's fifth bits as GGUF places them (rows of blocks not in whole sets of four) and in
    sets of four blocks (formats/ggml.py `fifth_bit_place`), against `gguf`'s decoder."""
    weight = (np.random.default_rng(2).standard_normal((ROWS, cols)) * 0.05).astype(np.float32)
    tensor = stored(type_name, weight)
    fmt = FORMATS[STORED[type_name]]
    np.testing.assert_array_equal(decode(fmt, fmt.encode(tensor), ROWS, cols), tensor.dequantize())


def test_q4_carries_gguf_q4_blocks_exactly():
    rng = np.random.default_rng(3)
    weight = (rng.standard_normal((ROWS, COLS)) * 0.05).astype(np.float32)
    for type_name in ("Q4_0", "Q4_1"):
        tensor = stored(type_name, weight)
        parts = FORMATS["q4f32"].encode(tensor)
        values = decode(FORMATS["q4f32"], parts, ROWS, COLS)
        np.testing.assert_allclose(values, tensor.dequantize(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", sorted(name for name, fmt in FORMATS.items() if fmt.integer_codes))
def test_integer_codes_are_the_codes_the_decoder_reads(name):
    """CPU decode reads a format's codes as integers straight from the words
    (`Format.integer_codes`: which part, 4-bit unsigned or 8-bit signed fields in element
    order, a constant added; `integer_high_bits`: bits above each 4-bit code): the same
    codes as its TE decoder, on random words."""
    fmt = FORMATS[name]
    part, width, offset = fmt.integer_codes
    rng = np.random.default_rng(5)
    parts = {
        n: rng.integers(0, 2**32, shape, dtype=np.uint32)
        if d == "uint32"
        else rng.standard_normal(shape).astype(d)
        for n, (shape, d) in fmt.parts(ROWS, COLS).items()
    }
    inputs = {n: te.placeholder(a.shape, str(a.dtype), n) for n, a in parts.items()}
    out = te.compute(
        (ROWS, COLS), lambda r, c: tirx.Cast("int32", fmt.code_te(inputs, r, c)), name="codes"
    )
    lib = tvm.compile(te.create_prim_func([*inputs.values(), out]), target="llvm")
    result = tvm.runtime.tensor(np.zeros((ROWS, COLS), np.int32))
    lib(*[tvm.runtime.tensor(np.ascontiguousarray(parts[n])) for n in inputs], result)
    words = parts[part]
    if width == 4:
        shifts = np.arange(8, dtype=np.uint32) * 4
        fields = (words[..., None] >> shifts) & np.uint32(15)
    else:
        fields = words.view(np.int8)
    expected = fields.reshape(ROWS, -1)[:, :COLS].astype(np.int32) + offset
    if fmt.integer_high_bits:  # bits above the nibble, where the format places them
        high, bits = fmt.integer_high_bits
        word, at = fmt.high_bit_place(np.arange(COLS), COLS // fmt.block)
        top = (parts[high][:, word] >> at.astype(np.uint32)) & np.uint32((1 << bits) - 1)
        expected += 16 * top.astype(np.int32)
    np.testing.assert_array_equal(result.numpy(), expected)
