"""Our group quantizations, decoded by the numpy reference's own unpacking (no TVM): the
error stays within half a quantization step."""

import numpy as np
from reference import dequantize

from compiler.formats import FORMATS


def test_q4_round_trip_error_is_within_half_a_step():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(48, 96)).astype(np.float32)
    parts = FORMATS["q4f32"].encode(weight)
    assert parts["q4"].shape == (48, 12) and parts["q4"].dtype == np.uint32
    step = np.repeat(parts["scale"], 32, axis=1)
    assert np.all(np.abs(dequantize(parts) - weight) <= step / 2 + 1e-6)


def test_q8_round_trip_error_is_within_half_a_step():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(48, 96)).astype(np.float32)
    parts = FORMATS["q8f32"].encode(weight)
    assert parts["q8"].shape == (48, 24) and parts["q8"].dtype == np.uint32
    step = np.repeat(parts["scale"], 32, axis=1)
    assert np.all(np.abs(dequantize(parts) - weight) <= step / 2 + 1e-6)
