"""4-bit quantization round trip, decoded by the reference's own unpacking (no TVM)."""

import numpy as np
from reference import dequantize

from compiler.loader import Q4Codes
from compiler.quantization import get_scheme


def test_q4_round_trip_error_is_within_half_a_step():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(48, 96)).astype(np.float32)
    parts = get_scheme("q4f32").quantize(weight)
    assert parts["q4"].shape == (48, 12) and parts["q4"].dtype == np.uint32
    decoded = dequantize(parts)
    step = np.repeat(parts["scale"], 32, axis=1)
    assert np.all(np.abs(decoded - weight) <= step / 2 + 1e-6)


def test_existing_4bit_codes_are_carried_over_exactly():
    rng = np.random.default_rng(1)
    codes = Q4Codes(
        rng.integers(0, 16, size=(8, 64), dtype=np.uint8),
        rng.random((8, 2), dtype=np.float32),
        -rng.random((8, 2), dtype=np.float32),
    )
    parts = get_scheme("q4f32").quantize(codes)
    grouped = codes.codes.reshape(8, 2, 32).astype(np.float64)
    exact = grouped * codes.scale[..., None].astype(np.float64) + codes.minimum[..., None]
    np.testing.assert_array_equal(dequantize(parts), exact.reshape(8, 64))
    q0 = get_scheme("q0f32").quantize(codes)["weight"]
    np.testing.assert_array_equal(q0, codes.dequantize())
