"""The "wasm" target: the network compiled for wasm32 (SIMD, relaxed SIMD, threads) and linked
into one WebAssembly module, for browsers with no WebGPU or only an emulated adapter. Its
schedule rules are in rules.py, its lowering in lowering.py, the linker in link.py, and the
hand-written CPU forms of the quantized linear in linear.py and integer_linear.py."""

from ..base import Target
from .lowering import emit, lower

TARGET = Target(
    name="wasm", cpu=True, lower=lower, emit=emit, gated_epilogue=True, norm_prologue=True
)
