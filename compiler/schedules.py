"""Schedules for the kernels TVM generates from the network.

`software_rules()` targets adapters that run compute shaders on the CPU (SwiftShader, the
fallback adapter): there each workgroup is a CPU task and invocations run a few at a time
in SIMD lanes, so workgroup barriers and shared memory cost more than they save. Every
invocation computes whole outputs: the reduction runs serially into a register
accumulator, element-wise epilogues (residual add) are folded into the same kernel, and
for prefill each invocation computes TOKEN_TILE tokens of one output feature so that each
dequantized weight is used several times. A weight format with scales per group of inputs
gives them as stages of their own (`kernels.SCALE_STAGES`): they are computed once per group,
into registers, for the invocation's outputs, and only the codes are decoded per element.

`gpu_rules()` are dlight's GPU rules (shared memory, cross-thread reductions), for real GPUs.

`ApplyRules` applies a set of rules as dlight's `ApplyDefaultSchedule` does, and records which
rule scheduled each kernel, so that a kernel falling through to a slow rule can be seen.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline
from tvm.target import Target

from .models.kernels import (
    CODES_PER_WORD,
    DEQUANT_WEIGHT,
    LANE_PARTIAL,
    LANE_SUMS,
    SCALE_STAGES,
)

THREADS = 64
# What `ApplyRules` records for a kernel that came scheduled (the hand-written ones) and for
# one that no rule took (the CPU target's plain loops).
WRITTEN = "written"
NO_RULE = "none"


def rule_name(rule: ScheduleRule) -> str:
    """A rule's name as `ApplyRules` records it: its class, and the wrapped rule's."""
    inner = getattr(rule, "rule", None)
    return f"{type(rule).__name__}({rule_name(inner)})" if inner else type(rule).__name__


@tvm.transform.module_pass(opt_level=0, name="ApplyRules")
class ApplyRules:
    """dlight's `ApplyDefaultSchedule` (the first rule that gives a schedule schedules the
    function; one that came scheduled is left alone) that also fills `record` with each
    kernel's rule by name. Written out here, a few lines, because dlight's pass does not say
    which rule it applied."""

    def __init__(self, rules: list[ScheduleRule], record: dict[str, str]) -> None:
        self.rules = rules
        self.record = record

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext):
        scheduled = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            if func.attrs is not None and func.attrs.get("tirx.is_scheduled", False):
                self.record[gv.name_hint] = WRITTEN
                continue
            target = func.attrs.get("target") if func.attrs is not None else None
            target = target or Target.current(allow_none=False)
            self.record[gv.name_hint] = NO_RULE
            for rule in self.rules:
                space = rule.apply(func, target, False)
                if space is None:
                    continue
                if not isinstance(space, s_tir.Schedule):
                    (space,) = space
                scheduled[gv] = space.mod["main"].with_attr("tirx.is_scheduled", True)
                self.record[gv.name_hint] = rule_name(rule)
                break
        for gv, func in scheduled.items():
            mod[gv] = func
        return mod


TOKEN_TILE = 4
FEATURE_TILE = 4  # with a token tile (prefill)
FEATURE_TILE_ALONE = 8  # without one (decode)
K_UNROLL = 8  # one uint32 word of 4-bit codes


def _const(extent: tirx.PrimExpr) -> int | None:
    return int(extent.value) if isinstance(extent, tirx.IntImm) else None


class SerialReduction(ScheduleRule):
    """One invocation per output (tile); reductions serial in a register; no barriers."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or "webgpu" not in target.keys:
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        scales = [i for i in infos if _is_scale_stage(sch, i.block_rv)]
        infos = try_inline(sch, [i for i in infos if i not in scales])
        reductions = [i for i in infos if i.is_reduction()]
        if len(reductions) > 1 or (scales and not reductions):
            return None  # e.g. softmax-like chains: leave them to the generic rules
        if reductions:
            done = self._reduction(
                sch,
                reductions[0].block_rv,
                [i.block_rv for i in infos],
                [i.block_rv for i in scales],
            )
            return sch if done else None
        for info in infos:
            self._spatial(sch, info.block_rv)
        return sch

    @staticmethod
    def _spatial(sch: s_tir.Schedule, block) -> None:
        loops = sch.get_loops(block)
        if not loops:
            loops = [sch.add_unit_loop(block)]
        bx, tx = sch.split(sch.fuse(*loops), factors=[None, THREADS * 4])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")

    def _reduction(self, sch: s_tir.Schedule, block, all_blocks, scales) -> bool:
        loops = sch.get_loops(block)
        kinds = self._kinds(sch, block)
        s_loops = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "S"]
        r_loops = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "R"]
        if not s_loops or not r_loops or len(loops) != len(s_loops) + len(r_loops):
            return False  # not a plain reduction: left to the next rule
        # The symbolic (token) axis, if any, goes to blockIdx.y in tiles whose inner part runs
        # inside the reduction; the other spatial axes spread over blockIdx.x/threadIdx.x.
        tile_outer = tile_inner = None
        symbolic = [loop for loop in s_loops if _const(sch.get(loop).extent) is None]
        fixed = 1
        for loop in s_loops:
            fixed *= _const(sch.get(loop).extent) or 1
        if symbolic and fixed >= THREADS:  # matmul-like: enough outputs per token
            # No predicate on the tile: rows past n are computed from the padded input
            # buffer and never written back, and the register tile keeps a constant size.
            tile_outer, tile_inner = sch.split(
                symbolic[0], factors=[None, TOKEN_TILE], disable_predication=True
            )
            s_loops = [loop for loop in s_loops if loop != symbolic[0]]
        k_loops = list(r_loops)
        group = _scale_group(sch, scales[0], r_loops) if scales else K_UNROLL
        if (
            len(r_loops) == 1
            and group % K_UNROLL == 0
            and (_const(sch.get(r_loops[0]).extent) or 1) % group == 0
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
        extent = _const(sch.get(fused).extent)
        # Matmul-like: each invocation also takes FEATURE_TILE adjacent outputs, so one load
        # of an input value feeds FEATURE_TILE x TOKEN_TILE multiply-adds.
        feature = FEATURE_TILE if tile_inner is not None else FEATURE_TILE_ALONE
        if extent is not None and extent >= THREADS * feature and extent % feature == 0:
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
            try:
                sch.reverse_compute_at(consumer, tx)
            except Exception:  # noqa: BLE001 - needs other invocations' outputs
                self._spatial(sch, consumer)
                continue
            sch.set_scope(write_back, 0, "local")  # the intermediate never leaves the thread
        # Each group's scales are decoded once, into registers, for the outputs of the tile.
        group_loop = sch.get_sref(k_loops[0])
        for stage in scales:
            sch.compute_at(stage, k_loops[0])
            sch.set_scope(stage, 0, "local")
            loops = sch.get_loops(stage)
            depth = next(
                i for i, loop in enumerate(loops) if sch.get_sref(loop).same_as(group_loop)
            )
            for loop in loops[depth + 1 :]:
                sch.unroll(loop)
        sch.decompose_reduction(block, k_loops[0])
        if len(k_loops) >= 2:
            sch.unroll(k_loops[-1])
        for loop in tail:
            sch.unroll(loop)
        return True

    @staticmethod
    def _kinds(sch: s_tir.Schedule, block) -> list[str]:
        from tvm.s_tir.dlight.analysis import get_sblock_info

        return list(get_sblock_info(sch, block).dom_kind())


def _is_scale_stage(sch: s_tir.Schedule, block) -> bool:
    return sch.get(block).name_hint.startswith(SCALE_STAGES)


def _scale_group(sch: s_tir.Schedule, stage, r_loops) -> int:
    """Inputs per group of a scale stage (rows, groups): the reduction's extent over the
    stage's; 1 where that is not known (the caller then leaves the function alone)."""
    k = _const(sch.get(r_loops[0]).extent)
    groups = _const(sch.get(sch.get_loops(stage)[-1]).extent)
    return k // groups if len(r_loops) == 1 and k and groups else 1


def software_rules() -> list[ScheduleRule]:
    return [SerialReduction(), dl.gpu.Fallback()]


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


def gpu_rules() -> list[ScheduleRule]:
    return [
        FallThrough(dl.gpu.Matmul()),
        FallThrough(dl.gpu.GEMV()),
        FallThrough(dl.gpu.Reduction()),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    ]


# CPU (the wasm variant): tiles of outputs whose accumulators stay in registers.
LANES = 4  # float32 lanes of a 128-bit wasm SIMD vector
CPU_FEATURE_TILE = 4  # decode
# Scope of a task's own small buffers (sums, decoded scales): TVM puts "global" ones under
# 1 KiB on the stack, where LLVM keeps them in registers, but allocates "local" ones from the
# heap (TVMBackendAllocWorkspace, a locked malloc here) every time a task enters the loop.
CPU_SCOPE = "global"
CPU_STACK_BYTES = 1024  # TVM's limit for such a buffer to go on the stack
# Prefill: CPU_TOKEN_TILE x CPU_PREFILL_FEATURES accumulators in registers (8 of the 16 vector
# registers x86 has), the reduction unrolled by CPU_K_UNROLL. The token tile is the software
# kernels' (compile pads the activation buffers for it).
CPU_TOKEN_TILE = TOKEN_TILE
CPU_PREFILL_FEATURES = 8
CPU_K_UNROLL = 4


def _scale_batch(steps: int, span: int, group: int, tile: int) -> int:
    """Steps of a decode kernel's reduction loop (`span` inputs each, `steps` in all) whose
    scales a tile of `tile` outputs decodes at once: whole groups, as many as fit a buffer
    on the stack, at least one group."""
    whole = [c for c in range(1, steps + 1) if steps % c == 0 and c * span % group == 0]
    fits = [c for c in whole if tile * (c * span // group) * 4 < CPU_STACK_BYTES]
    return max(fits) if fits else min(whole)


def _loops_below(sch: s_tir.Schedule, block, loop) -> list:
    """The loops of `block` inside `loop`."""
    loops = sch.get_loops(block)
    at = [i for i, each in enumerate(loops) if sch.get(each).same_as(sch.get(loop))][0]
    return loops[at + 1 :]


def _decode_scales(sch: s_tir.Schedule, scales: list, batch) -> None:
    """A decode tile's scale stages, computed at loop `batch` for the batch's groups, each
    group's vectorised over the tile's outputs (a uniform shift for every lane, also where
    two groups share a word)."""
    for stage in scales:
        sch.compute_at(stage, batch)
        sch.set_scope(stage, 0, CPU_SCOPE)
        loops = _loops_below(sch, stage, batch)
        if len(loops) == 2 and _const(sch.get(loops[0]).extent) == LANES:
            sch.reorder(loops[1], loops[0])
            sch.vectorize(loops[0])
            sch.transform_layout(stage, ("write", 0), lambda row, group: (group, row))


class CpuRule(ScheduleRule):
    """A CPU schedule rule: `_schedule` says whether it took the function; a pattern its
    primitives refuse leaves the function to the next rule (or TVM's default loops)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or "cpu" not in target.keys:
            return None
        sch = s_tir.Schedule(func)
        try:
            return sch if self._schedule(sch) else None
        except s_tir.ScheduleError:
            return None

    def _schedule(self, sch: s_tir.Schedule) -> bool:
        raise NotImplementedError


class CpuReduction(CpuRule):
    """CPU kernels for single reductions over outputs of constant count (matmul-like
    products), the outputs split over cores (a parallel loop) in tiles.

    Decode (no token axis): tiles of CPU_FEATURE_TILE outputs, the reduction in LANES-wide
    SIMD accumulators (one lane per input position modulo LANES, rfactor'd, summed at the end
    of the tile), so each vector of inputs is loaded once for the tile's outputs; a weight
    format's scales are decoded for the tile a batch of groups at a time (vectorised), the
    weights where they are used. Grouped formats whose groups hold whole runs of lanes (all
    but Q2_K, Q3_K and Q6_K) come as `kernels._lane_linear` writes them, the scales factored
    out of each group's sums, and `_lanes` gives them the same tiles.

    Prefill (a token axis): a tile's weights are decoded once, for all inputs, into a panel
    (`kernels.DEQUANT_WEIGHT`, stored input-major), then tokens run CPU_TOKEN_TILE at a time
    against it with CPU_TOKEN_TILE x CPU_PREFILL_FEATURES accumulators in registers: each
    input value is broadcast to a vector and multiplied with the panel's vectors of
    adjacent outputs. Like the software GPU kernels, the last token tile runs past n on the
    padded activation buffers (`compile` sizes them for whole tiles) and writes back only
    rows below n.

    Element-wise epilogues (the residual add) run on the tile's sums, in the same task."""

    def _schedule(self, sch: s_tir.Schedule) -> bool:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        named = {sch.get(b).name_hint: b for b in blocks}
        if LANE_SUMS in named:
            return self._lanes(sch, named)
        infos = normalize_prim_func(sch)
        if infos is None:
            return False
        scales = [i.block_rv for i in infos if _is_scale_stage(sch, i.block_rv)]
        decoded = [i.block_rv for i in infos if sch.get(i.block_rv).name_hint == DEQUANT_WEIGHT]
        staged = scales + decoded
        infos = try_inline(sch, [i for i in infos if i.block_rv not in staged])
        reductions = [i for i in infos if i.is_reduction()]
        if len(reductions) != 1:
            return False
        block = reductions[0].block_rv
        others = [i for i in infos if i.block_rv != block]
        if not all(i.is_injective() for i in others):
            return False
        epilogues = [i.block_rv for i in others]
        loops = sch.get_loops(block)
        kinds = SerialReduction._kinds(sch, block)
        s_loops = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "S"]
        r_loops = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "R"]
        if len(r_loops) != 1 or not s_loops or len(loops) != len(s_loops) + len(r_loops):
            return False
        k = _const(sch.get(r_loops[0]).extent)
        if k is None or k % LANES:
            return False
        symbolic = [loop for loop in s_loops if _const(sch.get(loop).extent) is None]
        fixed = [loop for loop in s_loops if loop not in symbolic]
        if not fixed or len(symbolic) > 1:
            return False
        if symbolic and len(decoded) == 1:
            return self._prefill(sch, block, epilogues, symbolic[0], fixed, r_loops[0], staged)
        run = int(sch.get(decoded[0]).annotations.get(CODES_PER_WORD, 0)) if decoded else 0
        for stage in decoded:
            sch.compute_inline(stage)
        return self._decode(sch, block, epilogues, symbolic, fixed, r_loops[0], scales, run)

    @staticmethod
    def _decode(sch, block, epilogues, symbolic, fixed, k_loop, scales, run) -> bool:
        k = _const(sch.get(k_loop).extent) or 0
        group = _scale_group(sch, scales[0], [k_loop]) if scales else LANES
        if group % LANES or k % group:
            return False
        n_spatial = len(symbolic) + len(fixed)
        # Codes packed `run` to a word: k -> (chunk, lane, run), lane j summing the inputs
        # j * run + (0 .. run - 1) of each chunk. The lanes of one step then read the same
        # position of different words (one load, one shift by a constant for all lanes), not
        # different positions of one word (a shift per lane, which SIMD lacks). Otherwise
        # k -> (group of inputs sharing a scale, run of LANES within it, lane).
        chunk = LANES * run
        runs = (
            bool(scales and run) and k % chunk == 0 and (group % chunk == 0 or chunk % group == 0)
        )
        factors = [None, LANES, run] if runs else [None, group // LANES, LANES]
        split = sch.split(k_loop, factors=factors)
        partial = sch.rfactor(split[1 if runs else 2], 0)  # per-lane sums; `block` adds them
        partial_loops = sch.get_loops(partial)
        spatial = partial_loops[:n_spatial]
        k_group, *rest = partial_loops[n_spatial:]
        lane, k_run = rest if runs else rest[::-1]
        symbolic = [loop for loop in spatial if _const(sch.get(loop).extent) is None]
        fixed = [loop for loop in spatial if loop not in symbolic]
        features = sch.fuse(*fixed) if len(fixed) > 1 else fixed[0]
        extent = _const(sch.get(features).extent) or 1
        tile = CPU_FEATURE_TILE if extent % CPU_FEATURE_TILE == 0 else 1
        outer, feature_inner = sch.split(features, factors=[None, tile])
        # The tile's scales are decoded a batch of groups at a time (vectorised over the
        # batch: the bit-level half-float decode costs as much as the products it scales).
        steps = _const(sch.get(k_group).extent) or 1
        batch = _scale_batch(steps, chunk if runs else group, group, tile) if scales else steps
        k_batch, k_group = sch.split(k_group, factors=[None, batch])
        sch.reorder(outer, *symbolic, k_batch, k_group, k_run, feature_inner, lane)
        anchor = symbolic[0] if symbolic else outer
        sch.parallel(outer)
        sch.set_scope(partial, 0, CPU_SCOPE)
        sch.reverse_compute_at(block, anchor)
        for epilogue in epilogues:
            sch.reverse_compute_at(epilogue, anchor)
        sch.vectorize(lane)
        sch.decompose_reduction(partial, k_batch)
        sch.unroll(feature_inner)
        _decode_scales(sch, scales, k_batch)
        return True

    @staticmethod
    def _lanes(sch: s_tir.Schedule, named: dict) -> bool:
        """Decode of a grouped format as `kernels._lane_linear` writes it: per tile of outputs,
        a batch of groups' scales, then per group the lanes' sums of codes times inputs
        (`LANE_PARTIAL`) scaled into the lanes' totals (`LANE_SUMS`), added up at the end."""
        lane_sums, partial = named[LANE_SUMS], named[LANE_PARTIAL]
        scales = [named[n] for n in SCALE_STAGES if n in named]
        (out,) = sch.get_consumers(lane_sums)
        epilogues, frontier = [], [out]
        while frontier:
            frontier = [c for b in frontier for c in sch.get_consumers(b)]
            epilogues += frontier
        *_, features, _ = sch.get_loops(out)
        if (_const(sch.get(features).extent) or 1) % CPU_FEATURE_TILE:
            return False  # no model of ours has such a layer; TVM's default loops
        tile = CPU_FEATURE_TILE
        outer, _ = sch.split(features, factors=[None, tile])
        sch.parallel(outer)
        sch.compute_at(lane_sums, outer)
        rows, lanes, groups = sch.get_loops(lane_sums)[-3:]
        steps = _const(sch.get(groups).extent) or 1
        batch, group = sch.split(groups, factors=[None, _scale_batch(steps, 1, 1, tile)])
        sch.reorder(batch, group, rows, lanes)
        sch.compute_at(partial, group)
        p_rows, p_lanes, *k_loops = _loops_below(sch, partial, group)
        sch.reorder(*k_loops, p_rows, p_lanes)
        for block, row, lane, k in (
            (lane_sums, rows, lanes, batch),
            (partial, p_rows, p_lanes, k_loops[0]),
        ):
            sch.set_scope(block, 0, CPU_SCOPE)
            sch.vectorize(lane)
            sch.unroll(row)
            sch.decompose_reduction(block, k)
        _decode_scales(sch, scales, batch)
        for epilogue in epilogues:
            sch.reverse_compute_at(epilogue, outer)
        return True

    @staticmethod
    def _prefill(sch, block, epilogues, tokens, fixed, k_loop, staged) -> bool:
        features = sch.fuse(*fixed) if len(fixed) > 1 else fixed[0]
        if (_const(sch.get(features).extent) or 1) % CPU_PREFILL_FEATURES:
            return False
        sums = sch.cache_write(block, 0, CPU_SCOPE)
        outer, feature_inner = sch.split(features, factors=[None, CPU_PREFILL_FEATURES])
        tile, token_inner = sch.split(
            tokens, factors=[None, CPU_TOKEN_TILE], disable_predication=True
        )
        k_outer, k_inner = sch.split(k_loop, factors=[None, CPU_K_UNROLL])
        sch.reorder(outer, tile, k_outer, k_inner, token_inner, feature_inner)
        sch.parallel(outer)
        sch.reverse_compute_at(sums, tile)
        for epilogue in epilogues:
            sch.reverse_compute_at(epilogue, tile)
        # The tile's panel (then its scales, which the panel reads), decoded once.
        decoded = [b for b in staged if sch.get(b).name_hint == DEQUANT_WEIGHT][0]
        for stage in [decoded] + [b for b in staged if b != decoded]:
            sch.compute_at(stage, outer)
            sch.set_scope(stage, 0, CPU_SCOPE)
        sch.vectorize(feature_inner)
        sch.unroll(token_inner)
        sch.unroll(k_inner)
        sch.decompose_reduction(block, k_outer)
        # Input-major, so one vector load gives a run of adjacent outputs' weights.
        sch.transform_layout(decoded, ("write", 0), lambda row, col: (col, row))
        if epilogues:  # the sums feed the epilogue directly, not through a buffer
            sch.compute_inline(sums)
        return True


class CpuElementwise(CpuRule):
    """CPU kernels of element-wise and other injective functions (activations, rotary, residual
    adds, copies into the KV cache). TVM's default loops write every stage to a buffer of its
    own, allocated on each call (prefill's SiLU wrote four of n x 1536 floats); here every
    stage is inlined into the outputs, and each output's loops run vectorised over LANES, in
    parallel over cores where they have a symbolic size (prefill's tokens)."""

    def _schedule(self, sch: s_tir.Schedule) -> bool:
        infos = normalize_prim_func(sch)
        if infos is None or not all(i.is_injective() for i in infos):
            return False
        outputs = try_inline(sch, infos)
        for info in outputs:
            *outer, last = sch.get_loops(info.block_rv)
            if (_const(sch.get(last).extent) or 1) % LANES == 0:
                _, lanes = sch.split(last, factors=[None, LANES])
                sch.vectorize(lanes)
            if outer and any(_const(sch.get(loop).extent) is None for loop in outer):
                sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
        return True


def cpu_rules() -> list[ScheduleRule]:
    return [CpuReduction(), CpuElementwise()]
