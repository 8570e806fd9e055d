"""Weight storage formats, registered by name: each one small class that knows how a (rows,
cols) weight is stored (its parts: arrays the browser uploads as they are), how to make those
parts in numpy, and how a kernel reads one element back (a TE expression, so that the
dequantization happens inside the consuming matmul or embedding lookup).

- `floats.py`: f32, f16, bf16 (GGUF F32/F16/BF16 and safetensors kept as they are).
- `group.py`: our own group quantizations (q4 asymmetric and q8 symmetric, groups of 32).
- `ggml.py`: GGUF's 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, carried losslessly.
- `kquants.py`: GGUF's K-quants Q4_K, Q5_K, Q6_K (super-blocks of 256 with sub-block scales).

Adding a format is one class in one of these files (or a new file imported below), decorated
with `@register`, plus its case in tests/test_formats.py.
"""

from __future__ import annotations

from . import floats, ggml, group, kquants  # noqa: F401  (they register their formats)
from .base import FORMATS, Format, SourceTensor, StoredBlocks, get_format, register

# GGUF tensor types -> the format that keeps them as they are.
STORED = {
    "F32": "f32",
    "F16": "f16",
    "BF16": "bf16",
    **ggml.BLOCK_FORMATS,
    **kquants.KQUANT_FORMATS,
}

__all__ = ["FORMATS", "STORED", "Format", "SourceTensor", "StoredBlocks", "get_format", "register"]
