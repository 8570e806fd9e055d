"""The "gpu" target's schedule rules, for real GPUs: dlight's (shared memory, cross-thread
reductions), after one of our own for what dlight's GEMV does not take (`GatedGemv`)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ..rules import const, is_scale_stage, loop_kinds, output_run

# GatedGemv: a workgroup's invocations, each summing every THREADS-th input of the
# workgroup's ROWS outputs (a gate and its up side by side), then reduced across them.
THREADS = 64
ROWS = 8


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


class GatedGemv(ScheduleRule):
    """A one-token linear whose consumer reads runs of its outputs (a gated MLP's gating,
    models/kernels.py `gated_linear`: a gate and its up side by side), which dlight's GEMV
    refuses: the gating as the projection's epilogue, so that it is no kernel of its own.
    Each workgroup computes ROWS outputs (whole runs): its THREADS invocations each sum the
    products of every THREADS-th input, the weights decoded as read; the partial sums are
    reduced across the workgroup into shared memory, and the consumer's outputs are computed
    from there by the first invocations."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or "webgpu" not in target.keys:
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        for info in infos:
            if is_scale_stage(sch, info.block_rv):
                sch.compute_inline(info.block_rv)
        infos = normalize_prim_func(sch)
        reductions = [i.block_rv for i in infos if i.is_reduction()]
        consumers = [i.block_rv for i in infos if output_run(sch, i.block_rv) > 1]
        if len(reductions) != 1 or len(consumers) != 1:
            return None
        (block,), (consumer,) = reductions, consumers
        run = output_run(sch, consumer)
        for info in infos:  # the weights' decoders, read where the product reads them
            if info.block_rv not in (block, consumer):
                sch.compute_inline(info.block_rv)
        loops = sch.get_loops(block)
        if loop_kinds(sch, block) != ["S", "R"]:
            return None  # a token axis, or several reductions: not one token's linear
        outputs, inputs = (const(sch.get(loop).extent) for loop in loops)
        if not outputs or not inputs or outputs % ROWS or ROWS % run or inputs % THREADS:
            return None
        row_outer, row_inner = sch.split(loops[0], [None, ROWS])
        k_outer, k_thread = sch.split(loops[1], [None, THREADS])
        sch.reorder(row_outer, k_thread, row_inner, k_outer)
        partial = sch.rfactor(k_thread, 0)
        group, thread, *_ = sch.get_loops(partial)
        sch.bind(group, "blockIdx.x")
        sch.bind(thread, "threadIdx.x")
        sch.set_scope(partial, 0, "local")
        # The sum across the workgroup's invocations, into shared memory.
        sch.reverse_compute_at(block, group)
        _, across, row = sch.get_loops(block)
        sch.reorder(row, across)
        sch.bind(across, "threadIdx.x")
        sch.set_scope(block, 0, "shared")
        # The consumer's ROWS / run outputs, an invocation each (the others idle).
        sch.reverse_compute_at(consumer, group)
        _, out = sch.split(sch.get_loops(consumer)[-1], [None, THREADS])
        sch.bind(out, "threadIdx.x")
        return sch


def rules() -> list[ScheduleRule]:
    return [
        GatedGemv(),
        FallThrough(dl.gpu.Matmul()),
        FallThrough(dl.gpu.GEMV()),
        FallThrough(dl.gpu.Reduction()),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    ]
