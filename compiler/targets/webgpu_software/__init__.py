"""The "software" target: WGSL kernels scheduled for adapters that run shaders on the CPU
(SwiftShader, the fallback adapter); see rules.py."""

from ..base import Target
from ..webgpu import emit, lowering
from .rules import rules

TARGET = Target(
    name="software",
    cpu=False,
    lower=lowering(rules),
    emit=emit,
    group_sums=True,
    gated_epilogue=True,
)
