"""The "gpu" target's schedule rules, for real GPUs: dlight's (shared memory, cross-thread
reductions), after one of our own for what dlight's GEMV does not take (`Gemv`)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.schedule import SBlockRV
from tvm.target import Target

from ..rules import const, is_scale_stage, loop_kinds, loops_inside, output_run
from ..stages import ADD_STAGES, NORM_PARTS, NORM_STAGES, Stage

# The stages a one-token linear's input may be computed by (`Gemv`): a norm, or an add of a
# normed branch and the norm of the sum, which one of the linears reading it writes.
PROLOGUE = {*NORM_STAGES, *ADD_STAGES, Stage.RESIDUAL}
WITH_ADD: tuple[set[str], ...] = (set(), set(ADD_STAGES), {*ADD_STAGES, Stage.RESIDUAL})

# Gemv: a workgroup's invocations, each summing every THREADS-th input of the workgroup's
# ROWS outputs (a gate and its up side by side), then reduced across them.
THREADS = 64
ROWS = 8
# The most storage buffers a Gemv kernel with a prologue binds: the higher of Dawn's tiers of
# maxStorageBuffersPerShaderStage (WebGPU's default is 8), which SwiftShader's adapter reports
# here. A build records the most its kernels bind (the manifest's `storage_buffers`), and the
# runtime picks the software set on an adapter that allows fewer.
STORAGE_BUFFERS = 10
# WebGPU's default maxComputeWorkgroupStorageSize, which every adapter allows: a prologue keeps
# its input's rows (the normed input; an add's sum beside it) in workgroup memory, float32 at
# most, with the partial sums and the sums across invocations, so a hidden size past about
# 3,900 (1,900 for an add) keeps its norm kernels.
WORKGROUP_BYTES = 16384


def gemv_fits(inputs: int, outputs: int, buffers: int, rows: int) -> bool:
    """Whether `Gemv` takes a one-token linear of these sizes with a prologue that keeps
    `rows` rows of its inputs in workgroup memory (`Target.prologue_fits`)."""
    shared = 4 * (rows * inputs + NORM_PARTS + THREADS + ROWS)
    return (
        inputs % THREADS == 0
        and outputs % ROWS == 0
        and buffers <= STORAGE_BUFFERS
        and shared <= WORKGROUP_BYTES
    )


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
    side) or that norms its input itself (a `Normed` input's `NORM_STAGES`), so that neither
    the gating nor the norm is a kernel of its own.
    Each workgroup computes ROWS outputs (whole runs): its THREADS invocations first norm the
    input into shared memory (`_norm_prologue`; every workgroup does: they share
    nothing), then each sums the products of every THREADS-th
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
        names = {sch.get(i.block_rv).name_hint for i in infos}
        norm = names & PROLOGUE
        if norm and not (set(NORM_STAGES) <= norm and norm - set(NORM_STAGES) in WITH_ADD):
            return None
        reductions = [
            i.block_rv
            for i in infos
            if i.is_reduction() and sch.get(i.block_rv).name_hint not in PROLOGUE
        ]
        if len(reductions) != 1:
            return None
        (block,) = reductions
        consumers = _consumers(sch, block)
        runs = [output_run(sch, c) for c in consumers]
        if not norm and max(runs, default=1) == 1:
            return None  # a plain GEMV: dlight's
        kept = {sch.get(b).name_hint for b in (block, *consumers)} | PROLOGUE
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
        if Stage.SUMMED in norm:
            _add_prologue(sch, group, THREADS, writes=Stage.RESIDUAL in norm)
        elif norm:
            _norm_prologue(sch, group, THREADS)
        return sch


def _norm_prologue(sch: s_tir.Schedule, group, threads: int) -> None:
    """The input norm of a one-token linear (`NORM_STAGES`) computed once in each workgroup,
    inside its loop `group`, by its `threads` invocations side by side: the partial sums of
    squares into shared memory, their sum by each invocation, then the input normed into
    shared memory for all of them (two barriers; on SwiftShader, whose invocations run as CPU
    threads, any barrier costs more: there the q/k/v projection took 1.7 -> 3.0 ms and
    gate/up 5.2 -> 9.4 ms against 0.12 ms for a norm's launch, so the software set keeps its
    norm kernels)."""
    partials, norm_sum, normed = (sch.get_sblock(name) for name in NORM_STAGES)
    for block, scope in ((normed, "shared"), (norm_sum, "local"), (partials, "shared")):
        sch.compute_at(block, group)
        sch.set_scope(block, 0, scope)
    _side_by_side(sch, group, threads, [normed], [partials])


def _add_prologue(sch: s_tir.Schedule, group, threads: int, writes: bool) -> None:
    """An `AddNormed` input's stages (models/add_norm.py) computed once in each workgroup,
    inside its loop `group`, as `_norm_prologue` computes a norm: the branch's norm, the sum
    and the sum's norm, each sum of squares in partial sums side by side, the sum and the
    normed sum in shared memory for all invocations; and the sum written out (`RESIDUAL`,
    where the linear writes it) by the first workgroup alone."""
    order = [*ADD_STAGES, *([Stage.RESIDUAL] if writes else []), *NORM_STAGES]
    # Each placed after the ones it reads and before the product, which reads the last (no
    # stage reads a block under `group` as it is placed: its region is the whole row).
    for index, name in enumerate(order):
        sch.reverse_compute_at(sch.get_sblock(name), group, index=index)
    branch_partials, branch_sum, summed, partials, norm_sum, normed = (
        sch.get_sblock(name) for name in (*ADD_STAGES, *NORM_STAGES)
    )
    for block in (branch_partials, summed, partials, normed):
        sch.set_scope(block, 0, "shared")
    for block in (branch_sum, norm_sum):
        sch.set_scope(block, 0, "local")
    written = [sch.get_sblock(Stage.RESIDUAL)] if writes else []
    _side_by_side(sch, group, threads, [summed, normed, *written], [branch_partials, partials])
    if writes:
        _first_workgroup_only(sch, written[0], group)


def _side_by_side(sch: s_tir.Schedule, group, threads: int, elementwise: list, partials: list):
    """Blocks computed inside `group` with their elements spread over its `threads`
    invocations; each of `partials` (sums of squares) accumulating in a register, then stored
    once: a loop that adds into shared memory would need a barrier inside each invocation's
    (conditional) part of it."""
    for block in (*elementwise, *partials):
        inner = loops_inside(sch, block, group)
        kinds = loop_kinds(sch, block)[-len(inner) :]
        spatial = [loop for loop, kind in zip(inner, kinds, strict=True) if kind == "S"]
        _, thread = sch.split(sch.fuse(*spatial), [None, threads])
        sch.bind(thread, "threadIdx.x")
        if block in partials:
            sch.reverse_compute_at(sch.cache_write(block, 0, "local"), thread)


def _first_workgroup_only(sch: s_tir.Schedule, block: SBlockRV, group) -> None:
    """`block` executed by the first workgroup of `group` alone: its predicate and'ed with
    that (written into the IR: no schedule primitive adds a condition to a block)."""
    loop = sch.get_loops(block)[-1]
    node = sch.get(loop)
    realize = node.body
    workgroup = sch.get(group).loop_var
    first = tirx.EQ(workgroup, tirx.const(0, "int64"))
    predicate = first if const(realize.predicate) == 1 else tirx.And(realize.predicate, first)
    body = s_tir.SBlockRealize(realize.iter_values, predicate, realize.block)
    replaced = tirx.For(
        node.loop_var,
        node.min,
        node.extent,
        node.kind,
        body,
        node.thread_binding,
        node.annotations,
    )
    sch.state.replace(sch.get_sref(loop), replaced, {realize.block: realize.block})


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
