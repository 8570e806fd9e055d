"""The "gpu" target's schedule rules, for real GPUs: dlight's (shared memory, cross-thread
reductions), after one of our own for what dlight's GEMV does not take (`Gemv`)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.schedule import SBlockRV
from tvm.target import Target

from ..rules import const, is_scale_stage, loop_kinds, output_run
from ..stages import Stage

# Gemv: a workgroup's invocations, each summing every THREADS-th input of the workgroup's
# ROWS outputs (a gate and its up side by side), then reduced across them.
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


class Gemv(ScheduleRule):
    """A one-token linear that dlight's GEMV refuses: one whose consumer reads runs of its
    outputs (a gated MLP's gating, models/kernels.py `gated_linear`: a gate and its up side by
    side) or that norms its input itself (the `Stage.NORM_SUM` and `Stage.NORMED` stages of a
    `Normed` input), so that neither the gating nor the norm is a kernel of its own.
    Each workgroup computes ROWS outputs (whole runs): its THREADS invocations first sum the
    input's squares across the workgroup and write the normed input to shared memory (every
    workgroup does: they share nothing), then each sums the products of every THREADS-th
    input, the weights decoded as read; the partial sums are reduced across the workgroup into
    shared memory, and the consumers' outputs (the gating, a bias, a residual) are computed from
    there by the first invocations."""

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
        named = {sch.get(i.block_rv).name_hint: i.block_rv for i in infos}
        norm_sum, normed = named.get(Stage.NORM_SUM), named.get(Stage.NORMED)
        reductions = [i.block_rv for i in infos if i.is_reduction() and i.block_rv != norm_sum]
        if len(reductions) != 1 or (norm_sum is None) != (normed is None):
            return None
        (block,) = reductions
        consumers = _consumers(sch, block)
        runs = [output_run(sch, c) for c in consumers]
        if norm_sum is None and max(runs, default=1) == 1:
            return None  # a plain GEMV: dlight's
        kept = {sch.get(b).name_hint for b in (block, norm_sum, normed, *consumers) if b}
        for info in infos:  # the weights' decoders, read where the product reads them
            if sch.get(info.block_rv).name_hint not in kept:
                sch.compute_inline(info.block_rv)
        loops = sch.get_loops(block)
        if loop_kinds(sch, block) != ["S", "R"]:
            return None  # a token axis, or several reductions: not one token's linear
        outputs, inputs = (const(sch.get(loop).extent) for loop in loops)
        if not outputs or not inputs or outputs % ROWS or inputs % THREADS:
            return None
        if any(ROWS % run for run in runs):
            return None
        if norm_sum is not None:  # partial sums of squares by invocation
            *_, k = sch.get_loops(norm_sum)
            if (const(sch.get(k).extent) or 1) % THREADS:
                return None
            k_outer, k_thread = sch.split(k, [None, THREADS])
            sch.reorder(k_thread, k_outer)
            squares = sch.rfactor(k_thread, 0)
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
        if consumers:  # else the product is the kernel's output
            sch.set_scope(block, 0, "shared")
        # Each consumer's outputs of the workgroup, an invocation each (the others idle).
        for consumer in consumers:
            sch.reverse_compute_at(consumer, group)
            _, out = sch.split(sch.fuse(*sch.get_loops(consumer)[1:]), [None, THREADS])
            sch.bind(out, "threadIdx.x")
        if normed is not None:
            # The normed input, in shared memory, its THREADS-th elements an invocation each.
            sch.compute_at(normed, group)
            sch.set_scope(normed, 0, "shared")
            _, element = sch.split(sch.fuse(*sch.get_loops(normed)[1:]), [None, THREADS])
            sch.bind(element, "threadIdx.x")
            # Its sum of squares: partial sums by invocation, reduced across the workgroup.
            sch.compute_at(norm_sum, group)
            sch.bind(sch.get_loops(norm_sum)[-1], "threadIdx.x")
            sch.set_scope(norm_sum, 0, "shared")
            sch.compute_at(squares, group)
            sch.bind(sch.get_loops(squares)[1], "threadIdx.x")
            sch.set_scope(squares, 0, "local")
        return sch


def _consumers(sch: s_tir.Schedule, block: SBlockRV) -> list[SBlockRV]:
    """The blocks that follow `block`, each reading the one before (element-wise chains)."""
    chain: list[SBlockRV] = []
    while True:
        following = sch.get_consumers(block)
        if len(following) != 1:
            return chain
        block = following[0]
        chain.append(block)


def rules() -> list[ScheduleRule]:
    return [
        Gemv(),
        FallThrough(dl.gpu.Matmul()),
        FallThrough(dl.gpu.GEMV()),
        FallThrough(dl.gpu.Reduction()),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    ]
