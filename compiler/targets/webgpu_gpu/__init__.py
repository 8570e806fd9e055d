"""The "gpu" target: WGSL kernels with dlight's schedules, for real GPUs."""

from ..base import Target
from ..webgpu import emit, lowering
from .rules import rules

TARGET = Target(name="gpu", cpu=False, lower=lowering(rules), emit=emit)
