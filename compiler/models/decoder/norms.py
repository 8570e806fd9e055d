"""The norms decoders use: RMSNorm (weights as given), Gemma's RMSNorm that scales by 1 + w
(the same norm, its weight stored as 1 + w by the build), and LayerNorm (with a bias)."""

from __future__ import annotations

import numpy as np
from tvm.relax.frontend import nn

from ...formats import SourceTensor


def rms_norm(size: int, eps: float, dtype: str) -> nn.Module:
    return nn.RMSNorm(size, -1, eps, bias=False, dtype=dtype)


def layer_norm(size: int, eps: float, dtype: str) -> nn.Module:
    return nn.LayerNorm(size, eps, dtype=dtype)


def plus_one(weight: SourceTensor) -> np.ndarray:
    """A 1 + w norm's weight as the plain RMSNorm reads it, in float32 (transformers computes
    1 + w in float32 too)."""
    return np.asarray(weight, dtype=np.float32) + np.float32(1.0)


def minus_one(weight: SourceTensor) -> np.ndarray:
    """w back from the 1 + w that llama.cpp's converter stores for such norms."""
    return np.asarray(weight, dtype=np.float32) - np.float32(1.0)
