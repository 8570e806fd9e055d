"""The "wasm" target's schedule rules (the CPU backend): tiles of outputs whose accumulators
stay in registers, split over cores."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline
from tvm.target import Target

from ..base import TOKEN_TILE
from ..rules import const, is_scale_stage, loop_kinds, scale_group
from ..stages import CODES_PER_WORD, SCALE_STAGES, Stage

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
        if len(loops) == 2 and const(sch.get(loops[0]).extent) == LANES:
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
    but Q2_K, Q3_K and Q6_K) come as `linear.lane_linear` writes them, the scales factored
    out of each group's sums, and `_lanes` gives them the same tiles.

    Prefill (a token axis): a tile's weights are decoded once, for all inputs, into a panel
    (`Stage.DEQUANT_WEIGHT`, stored input-major), then tokens run CPU_TOKEN_TILE at a time
    against it with CPU_TOKEN_TILE x CPU_PREFILL_FEATURES accumulators in registers: each
    input value is broadcast to a vector and multiplied with the panel's vectors of
    adjacent outputs. Like the software GPU kernels, the last token tile runs past n on the
    padded activation buffers (`compile` sizes them for whole tiles) and writes back only
    rows below n.

    Element-wise epilogues (the residual add) run on the tile's sums, in the same task."""

    def _schedule(self, sch: s_tir.Schedule) -> bool:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        named = {sch.get(b).name_hint: b for b in blocks}
        if Stage.LANE_SUMS in named:
            return self._lanes(sch, named)
        infos = normalize_prim_func(sch)
        if infos is None:
            return False
        scales = [i.block_rv for i in infos if is_scale_stage(sch, i.block_rv)]
        decoded = [
            i.block_rv for i in infos if sch.get(i.block_rv).name_hint == Stage.DEQUANT_WEIGHT
        ]
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
        kinds = loop_kinds(sch, block)
        s_loops = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "S"]
        r_loops = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "R"]
        if len(r_loops) != 1 or not s_loops or len(loops) != len(s_loops) + len(r_loops):
            return False
        k = const(sch.get(r_loops[0]).extent)
        if k is None or k % LANES:
            return False
        symbolic = [loop for loop in s_loops if const(sch.get(loop).extent) is None]
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
        k = const(sch.get(k_loop).extent) or 0
        group = scale_group(sch, scales[0], [k_loop]) if scales else LANES
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
        symbolic = [loop for loop in spatial if const(sch.get(loop).extent) is None]
        fixed = [loop for loop in spatial if loop not in symbolic]
        features = sch.fuse(*fixed) if len(fixed) > 1 else fixed[0]
        extent = const(sch.get(features).extent) or 1
        tile = CPU_FEATURE_TILE if extent % CPU_FEATURE_TILE == 0 else 1
        outer, feature_inner = sch.split(features, factors=[None, tile])
        # The tile's scales are decoded a batch of groups at a time (vectorised over the
        # batch: the bit-level half-float decode costs as much as the products it scales).
        steps = const(sch.get(k_group).extent) or 1
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
        """Decode of a grouped format as `linear.lane_linear` writes it: per tile of outputs,
        a batch of groups' scales, then per group the lanes' sums of codes times inputs
        (`Stage.LANE_PARTIAL`) scaled into the lanes' totals (`Stage.LANE_SUMS`), added up at
        the end."""
        lane_sums, partial = named[Stage.LANE_SUMS], named[Stage.LANE_PARTIAL]
        scales = [named[n] for n in SCALE_STAGES if n in named]
        (out,) = sch.get_consumers(lane_sums)
        epilogues, frontier = [], [out]
        while frontier:
            frontier = [c for b in frontier for c in sch.get_consumers(b)]
            epilogues += frontier
        *_, features, _ = sch.get_loops(out)
        if (const(sch.get(features).extent) or 1) % CPU_FEATURE_TILE:
            return False  # no model of ours has such a layer; TVM's default loops
        tile = CPU_FEATURE_TILE
        outer, _ = sch.split(features, factors=[None, tile])
        sch.parallel(outer)
        sch.compute_at(lane_sums, outer)
        rows, lanes, groups = sch.get_loops(lane_sums)[-3:]
        steps = const(sch.get(groups).extent) or 1
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
        if (const(sch.get(features).extent) or 1) % CPU_PREFILL_FEATURES:
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
        decoded = [b for b in staged if sch.get(b).name_hint == Stage.DEQUANT_WEIGHT][0]
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
            if (const(sch.get(last).extent) or 1) % LANES == 0:
                _, lanes = sch.split(last, factors=[None, LANES])
                sch.vectorize(lanes)
            if outer and any(const(sch.get(loop).extent) is None for loop in outer):
                sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
        return True


def rules() -> list[ScheduleRule]:
    return [CpuReduction(), CpuElementwise()]
