"""The "gpu" target's schedule rules, for real GPUs: dlight's (shared memory, cross-thread
reductions)."""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target


class FallThrough(ScheduleRule):
    """A dlight rule that says "not mine" (None) instead of raising where its analysis meets a
    pattern it does not handle: on the bit-level decoders of GGUF blocks dlight's Reduction
    raises KeyError and its GEMV an AssertionError; the next rule then schedules the function."""

    def __init__(self, rule: ScheduleRule):
        self.rule = rule

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        try:
            return self.rule.apply(func, target, tunable)
        except (KeyError, IndexError, ValueError, AssertionError):
            return None


def rules() -> list[ScheduleRule]:
    return [
        FallThrough(dl.gpu.Matmul()),
        FallThrough(dl.gpu.GEMV()),
        FallThrough(dl.gpu.Reduction()),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    ]
