"""The "gpu" target: WGSL kernels with dlight's schedules, for real GPUs."""

from ..base import Target
from ..webgpu import emit, lowering
from .rules import gemv_fits, rules

# A norm's row shared by 64 invocations, as dlight's schedule of relax's rms_norm does.
TARGET = Target(
    name="gpu",
    cpu=False,
    lower=lowering(rules),
    emit=emit,
    gated_epilogue=True,
    gated_one_token=True,
    norm_prologue=True,
    prologue_fits=gemv_fits,
    row_threads=64,
)
