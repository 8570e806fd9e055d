"""The "software" target's schedule rule, for adapters that run compute shaders on the CPU
(SwiftShader, the fallback adapter): there each workgroup is a CPU task and invocations run a
few at a time in SIMD lanes, so workgroup barriers and shared memory cost more than they save.
Every invocation computes whole outputs: the reduction runs serially into a register
accumulator, element-wise epilogues (residual add) are folded into the same kernel, and for
prefill each invocation computes TOKEN_TILE tokens of one output feature so that each
dequantized weight is used several times. A weight format with scales per group of inputs
gives them as stages of their own (`Stage.DEQUANT_SCALE`, `Stage.DEQUANT_MINIMUM`): they are
computed once per group, into registers, for the invocation's outputs, and only the codes are
decoded per element. Its linear sums each group of products before scaling it
(`Stage.GROUP_DOT`, `Stage.GROUP_SUM`, see models/kernels.py's `group_sums`): those sums are
computed per group, in registers, for the invocation's outputs, and the reduction runs over
the groups.
Arrays in registers are indexed by unrolled loops only: SwiftShader keeps an array that a loop
indexes in memory."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline
from tvm.target import Target

from ..base import TOKEN_TILE
from ..rules import (
    const,
    is_group_stage,
    is_scale_stage,
    loop_kinds,
    loops_inside,
    output_run,
    scale_group,
)

THREADS = 64
FEATURE_TILE = 4  # with a token tile (prefill)
FEATURE_TILE_ALONE = 8  # without one (decode)
K_UNROLL = 8  # one uint32 word of 4-bit codes
MAX_TILE = FEATURE_TILE_ALONE * TOKEN_TILE  # the most outputs an invocation computes


class SerialReduction(ScheduleRule):
    """One invocation per output (tile); reductions serial in a register; no barriers."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or "webgpu" not in target.keys:
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        scales = [i for i in infos if is_scale_stage(sch, i.block_rv)]
        groups = [i for i in infos if is_group_stage(sch, i.block_rv)]
        infos = try_inline(sch, [i for i in infos if i not in scales and i not in groups])
        reductions = [i for i in infos if i.is_reduction()]
        if len(reductions) > 1 or ((scales or groups) and not reductions):
            return None  # e.g. softmax-like chains: leave them to the generic rules
        if reductions:
            done = self._reduction(
                sch,
                reductions[0].block_rv,
                [i.block_rv for i in infos],
                [i.block_rv for i in scales],
                [i.block_rv for i in groups],
            )
            return sch if done else None
        for info in infos:
            self._spatial(sch, info.block_rv)
        return sch

    @staticmethod
    def _group_stage(sch: s_tir.Schedule, stage, group_loop) -> None:
        """A group stage computed, in registers, at the start of each group for the outputs of
        the invocation: its sum over the group outermost, in runs of K_UNROLL unrolled, and
        inside each step the tile's outputs (one load of an input feeds them all)."""
        sch.compute_at(stage, group_loop)
        sch.set_scope(stage, 0, "local")
        *spatial, k = loops_inside(sch, stage, group_loop)
        size = const(sch.get(k).extent) or 0
        runs = [k]
        if size % K_UNROLL == 0 and size > K_UNROLL:
            runs = list(sch.split(k, factors=[None, K_UNROLL]))
        sch.reorder(*runs, *spatial)
        _unroll_tile(sch, sch.decompose_reduction(stage, runs[0]), group_loop)
        for loop in [*runs[1:], *spatial]:
            sch.unroll(loop)

    @staticmethod
    def _spatial(sch: s_tir.Schedule, block) -> None:
        loops = sch.get_loops(block)
        if not loops:
            loops = [sch.add_unit_loop(block)]
        bx, tx = sch.split(sch.fuse(*loops), factors=[None, THREADS * 4])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")

    def _reduction(self, sch: s_tir.Schedule, block, all_blocks, scales, groups) -> bool:
        loops = sch.get_loops(block)
        kinds = loop_kinds(sch, block)
        s_loops = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "S"]
        r_loops = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "R"]
        if not s_loops or not r_loops or len(loops) != len(s_loops) + len(r_loops):
            return False  # not a plain reduction: left to the next rule
        # The symbolic (token) axis, if any, goes to blockIdx.y in tiles whose inner part runs
        # inside the reduction; the other spatial axes spread over blockIdx.x/threadIdx.x.
        tile_outer = tile_inner = None
        symbolic = [loop for loop in s_loops if const(sch.get(loop).extent) is None]
        fixed = 1
        for loop in s_loops:
            fixed *= const(sch.get(loop).extent) or 1
        if symbolic and fixed >= THREADS:  # matmul-like: enough outputs per token
            # No predicate on the tile: rows past n are computed from the padded input
            # buffer and never written back, and the register tile keeps a constant size.
            tile_outer, tile_inner = sch.split(
                symbolic[0], factors=[None, TOKEN_TILE], disable_predication=True
            )
            s_loops = [loop for loop in s_loops if loop != symbolic[0]]
        k_loops = list(r_loops)
        group = scale_group(sch, scales[0], r_loops) if scales else K_UNROLL
        if groups:  # the reduction runs over groups, each summed by the group stages
            if len(r_loops) != 1:
                return False
        elif (
            len(r_loops) == 1
            and group % K_UNROLL == 0
            and (const(sch.get(r_loops[0]).extent) or 1) % group == 0
        ):
            # k -> (group, element of the group in runs of K_UNROLL, unrolled element)
            factors = [None, group // K_UNROLL, K_UNROLL] if scales else [None, K_UNROLL]
            k_loops = list(sch.split(r_loops[0], factors=factors))
        elif scales:
            return False
        head = [tile_outer] if tile_outer is not None else []
        tail = [tile_inner] if tile_inner is not None else []
        sch.reorder(*head, *s_loops, *k_loops, *tail)
        fused = sch.fuse(*s_loops) if len(s_loops) > 1 else s_loops[0]
        extent = const(sch.get(fused).extent)
        # Matmul-like: each invocation also takes FEATURE_TILE adjacent outputs, so one load
        # of an input value feeds FEATURE_TILE x TOKEN_TILE multiply-adds.
        feature = FEATURE_TILE if tile_inner is not None else FEATURE_TILE_ALONE
        # A consumer that reads runs of outputs (the gating of a gated MLP: a gate and its
        # up) runs in the invocation only if the tile holds whole runs.
        run = max((output_run(sch, b) for b in all_blocks if b != block), default=1)
        if extent is None:
            feature = 1
        elif not (extent >= THREADS * feature and extent % feature == 0):
            feature = run if run > 1 and extent % run == 0 else 1
        if extent is not None and feature > 1:
            fused, feature_inner = sch.split(fused, factors=[None, feature])
            sch.reorder(*k_loops, feature_inner, *tail)
            tail = [feature_inner, *tail]
            extent //= feature
        # With a constant extent, the thread count divides it: an idle invocation would
        # still run the register write-back and store garbage.
        threads = (
            THREADS if extent is None else max(t for t in range(1, THREADS + 1) if extent % t == 0)
        )
        bx, tx = sch.split(fused, factors=[None, threads])
        if tile_outer is not None:
            sch.bind(tile_outer, "blockIdx.y")
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        # `block` now accumulates in a register; `write_back` copies to global memory and
        # takes in the element-wise epilogues (residual add) that follow.
        write_back = sch.cache_write(block, 0, "local")
        rest = []
        for consumer in all_blocks:
            if consumer == block:
                continue
            try:
                sch.reverse_compute_inline(consumer)
            except Exception:  # noqa: BLE001 - not element-wise on the output
                rest.append(consumer)
        sch.reverse_compute_at(write_back, tx)
        # A consumer that needs only this invocation's outputs (the normalization after the
        # sum of squares in RMSNorm) runs in the same invocation; others get their own kernel.
        for consumer in rest:
            if feature % output_run(sch, consumer):
                self._spatial(sch, consumer)
                continue
            try:
                sch.reverse_compute_at(consumer, tx)
            except Exception:  # noqa: BLE001 - needs other invocations' outputs
                self._spatial(sch, consumer)
                continue
            sch.set_scope(write_back, 0, "local")  # the intermediate never leaves the thread
        # Each group's scales are decoded once, into registers, for the outputs of the tile.
        for stage in scales:
            sch.compute_at(stage, k_loops[0])
            sch.set_scope(stage, 0, "local")
            for loop in loops_inside(sch, stage, k_loops[0]):
                sch.unroll(loop)
        for stage in groups:
            self._group_stage(sch, stage, k_loops[0])
        init = sch.decompose_reduction(block, k_loops[0])
        # The accumulators' initial and final copies unrolled: an array in registers that
        # a loop indexes is kept in memory instead (SwiftShader then loads and stores the
        # accumulator at every multiply-add: a kernel ran ~25% slower).
        for tile_block in (init, write_back):
            _unroll_tile(sch, tile_block, tx)
        if len(k_loops) >= 2:
            sch.unroll(k_loops[-1])
        for loop in tail:
            sch.unroll(loop)
        return True


def _unroll_tile(sch: s_tir.Schedule, block, outer) -> None:
    """Unrolls the loops of `block` inside `outer` that run over a tile (at most MAX_TILE)."""
    for loop in loops_inside(sch, block, outer):
        if (const(sch.get(loop).extent) or MAX_TILE + 1) <= MAX_TILE:
            sch.unroll(loop)


def rules() -> list[ScheduleRule]:
    return [SerialReduction(), dl.gpu.Fallback()]
