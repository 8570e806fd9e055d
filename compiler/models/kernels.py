"""Kernels the network needs beyond `nn.op`: dequantizing matmul and embedding lookup (TE, so
that the dequantization fuses into the consumer), rotary embedding, and the KV-cache append and
causal attention over a cache of static capacity (hand-written TIR; dlight has no rule for them).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

from tvm import te, tirx
from tvm.relax.frontend.nn import Tensor, op
from tvm.script import tirx as T

from ..formats import Format
from ..formats.base import as_dtype, scaled
from . import cpu_linear

ATTENTION_THREADS = 64

# The hand-written kernels below serve two kinds of targets: GPUs (a thread per query and head)
# and CPUs (the same loops, the outer one run in parallel over cores). `compile` builds the
# network inside `for_cpu()` when it compiles for a CPU.
_CPU = contextvars.ContextVar("cpu_kernels", default=False)


@contextlib.contextmanager
def for_cpu() -> Iterator[None]:
    token = _CPU.set(True)
    try:
        yield
    finally:
        _CPU.reset(token)


# Names of the stages that decode a weight's scales: the software schedule computes them once
# per group of inputs, in registers, instead of inlining them into every element.
SCALE_STAGES = ("dequant_scale", "dequant_minimum")
# The dequantized weights as a stage (CPU kernels only), see `linear`.
DEQUANT_WEIGHT = "dequant_weight"
# Its annotation: the format's codes_per_word, for the CPU decode schedule.
CODES_PER_WORD = "codes_per_word"
# CPU decode of a grouped format (see `_lane_linear`): its stages, and the SIMD width.
LANE_INPUTS, LANE_INPUT_SUMS, LANE_PARTIAL, LANE_SUMS = (
    "lane_inputs",
    "lane_input_sums",
    "lane_partial",
    "lane_sums",
)
CPU_LANES = 4


def weight_value(fmt: Format, parts: dict[str, te.Tensor], row, col, dtype: str):
    """Element (row, col) of a stored weight as a `dtype` expression (for lookups)."""
    return as_dtype(fmt.weight_te(parts, row, col), dtype)


def _scaled_weight(fmt: Format, parts: dict[str, te.Tensor], rows: int, cols, dtype: str):
    """weight(row, col) = code * scale + minimum, the scales (and minimums) as stages of their
    own over (rows, groups)."""
    groups = cols // fmt.group
    _, minimum = fmt.scale_te(parts, 0, 0)  # whether the format has minimums

    def stage(i: int) -> te.Tensor:
        return te.compute(
            (rows, groups),
            lambda r, g: as_dtype(fmt.scale_te(parts, r, g)[i], dtype),
            name=SCALE_STAGES[i],
        )

    stages = [stage(i) for i in range(1 if minimum is None else 2)]

    def weight(row, col):
        scale, *minimum = (stage[row, col // fmt.group] for stage in stages)
        return scaled(fmt.code_te(parts, row, col), scale, minimum[0] if minimum else None)

    return weight


def linear(x: Tensor, parts: dict[str, Tensor], fmt: Format, out_features: int, name: str):
    """y[b, i, j] = sum_k x[b, i, k] * W[j, k], W dequantized on the fly."""
    if _CPU.get() and _integer_applies(fmt, x.shape, out_features, x.dtype):
        return _integer_linear(x, parts, fmt, out_features, name)
    names = list(parts)

    def compute(xt: te.Tensor, *tensors: te.Tensor) -> te.Tensor:
        p = dict(zip(names, tensors, strict=True))
        batch, seq, cols = xt.shape
        if _CPU.get() and _lanes_apply(fmt, xt.shape):
            return _lane_linear(xt, p, fmt, out_features, name)
        k = te.reduce_axis((0, cols), name="k")
        if fmt.group:
            weight = _scaled_weight(fmt, p, out_features, cols, xt.dtype)
        else:
            weight = lambda j, c: weight_value(fmt, p, j, c, xt.dtype)  # noqa: E731
        if _CPU.get():  # a stage of its own: CPU prefill decodes a tile once for all tokens
            decoded = te.compute(
                (out_features, cols),
                weight,
                name=DEQUANT_WEIGHT,
                attrs={CODES_PER_WORD: fmt.codes_per_word},
            )
            weight = lambda j, c: decoded[j, c]  # noqa: E731
        return te.compute(
            (batch, seq, out_features),
            lambda b, i, j: te.sum(xt[b, i, k] * weight(j, k), axis=k),
            name=name,
        )

    return op.tensor_expr_op(compute, name, [x, *parts.values()])


def _one_token_inputs(shape) -> int | None:
    """The input size of a (1, 1, inputs) shape of constant sizes (one token's), else None."""
    dims = [int(d) if isinstance(d, (int, tirx.IntImm)) else None for d in shape]
    return dims[2] if dims[:2] == [1, 1] else None


def _integer_applies(fmt: Format, shape, rows: int, dtype: str) -> bool:
    """Whether CPU decode takes `cpu_linear`: one token of float32, a format it reads."""
    cols = _one_token_inputs(shape)
    return cols is not None and cpu_linear.applies(fmt, cols, rows, dtype)


def _integer_linear(x: Tensor, parts: dict[str, Tensor], fmt: Format, rows: int, name: str):
    """One token's product by integer dot products (see `cpu_linear`): the input quantized
    (fused with what produces it), then the product."""
    assert fmt.integer_codes is not None
    width = fmt.integer_codes[1]
    quantized = op.tensor_expr_op(
        lambda xt: cpu_linear.quantize_input(xt, width), f"{name}_input", [x]
    )
    return op.tensor_ir_op(
        cpu_linear.integer_linear_func(fmt, rows, int(x.shape[2])),
        name,
        [*quantized, *parts.values()],
        Tensor.placeholder([1, 1, rows], "float32"),
    )


def _lanes_apply(fmt: Format, shape) -> bool:
    """Whether CPU decode takes `_lane_linear`: one token, and a grouped format whose groups
    hold whole runs of CPU_LANES x codes_per_word inputs."""
    chunk = CPU_LANES * fmt.codes_per_word
    return _one_token_inputs(shape) is not None and fmt.group > 0 and fmt.group % chunk == 0


def _lane_linear(xt: te.Tensor, p: dict[str, te.Tensor], fmt: Format, out_features: int, name):
    """y[j] = sum_k x[k] * (code[j, k] * scale[j, g] + minimum[j, g]) for one token on a CPU,
    with the scales factored out of each group's sum:
        y[j] = sum_g scale[j, g] * sum_(k in g) x[k] code[j, k] + minimum[j, g] * sum_(k in g) x[k]
    and each group's sum kept per SIMD lane: lane l sums the runs of codes_per_word inputs
    that start at l * codes_per_word in every CPU_LANES x codes_per_word inputs, so the lanes
    of one step read the same position of consecutive words (one vector load, one constant
    shift). The inputs are reordered to that lane order once (`LANE_INPUTS`), so a step's
    inputs are one vector too; the lanes are added at the end of each output."""
    cols = int(xt.shape[2])
    lanes, run, group = CPU_LANES, fmt.codes_per_word, fmt.group
    chunk, groups = lanes * run, cols // group
    per = group // chunk

    def col(g, c, r, lane):
        return g * group + c * chunk + lane * run + r

    inputs = te.compute(
        (groups, per, run, lanes),
        lambda g, c, r, lane: xt[0, 0, col(g, c, r, lane)],
        name=LANE_INPUTS,
    )
    c = te.reduce_axis((0, per), name="c")
    r = te.reduce_axis((0, run), name="r")
    partial = te.compute(
        (out_features, groups, lanes),
        lambda j, g, lane: te.sum(
            inputs[g, c, r, lane] * as_dtype(fmt.code_te(p, j, col(g, c, r, lane)), xt.dtype),
            axis=[c, r],
        ),
        name=LANE_PARTIAL,
    )
    scale = te.compute(
        (out_features, groups),
        lambda j, g: as_dtype(fmt.scale_te(p, j, g)[0], xt.dtype),
        name=SCALE_STAGES[0],
    )
    g = te.reduce_axis((0, groups), name="g")
    if fmt.scale_te(p, 0, 0)[1] is None:
        term = lambda j, lane: partial[j, g, lane] * scale[j, g]  # noqa: E731
    else:
        minimum = te.compute(
            (out_features, groups),
            lambda j, g: as_dtype(fmt.scale_te(p, j, g)[1], xt.dtype),
            name=SCALE_STAGES[1],
        )
        c2 = te.reduce_axis((0, per), name="c")
        r2 = te.reduce_axis((0, run), name="r")
        sums = te.compute(
            (groups, lanes),
            lambda g, lane: te.sum(inputs[g, c2, r2, lane], axis=[c2, r2]),
            name=LANE_INPUT_SUMS,
        )
        term = lambda j, lane: (  # noqa: E731
            partial[j, g, lane] * scale[j, g] + minimum[j, g] * sums[g, lane]
        )
    lane_sums = te.compute(
        (out_features, lanes), lambda j, lane: te.sum(term(j, lane), axis=g), name=LANE_SUMS
    )
    lane = te.reduce_axis((0, lanes), name="lane")
    return te.compute(
        (1, 1, out_features), lambda b, i, j: te.sum(lane_sums[j, lane], axis=lane), name=name
    )


def embedding(ids: Tensor, parts: dict[str, Tensor], fmt: Format, cols: int, dtype: str):
    names = list(parts)

    def compute(idt: te.Tensor, *tensors: te.Tensor) -> te.Tensor:
        p = dict(zip(names, tensors, strict=True))
        batch, seq = idt.shape
        return te.compute(
            (batch, seq, cols),
            lambda b, i, c: weight_value(fmt, p, idt[b, i], c, dtype),
            name="embed",
        )

    return op.tensor_expr_op(compute, "embedding", [ids, *parts.values()])


def rotary(qkv: Tensor, table: Tensor, total_len: tirx.Var, rotated_heads: int) -> Tensor:
    """Rotary position embedding (Hugging Face's rotate-half layout) on the first
    `rotated_heads` heads of qkv (1, n, heads, head_dim); token i sits at total_len - n + i.
    `table` (positions, rotary_dim) holds each position's cos then sin per frequency (see
    rope.py): the first rotary_dim dimensions of a head are rotated, the rest kept (partial
    rotary)."""

    def compute(x: te.Tensor, tab: te.Tensor, total: tirx.Var) -> te.Tensor:
        batch, seq, heads, dim = x.shape
        rotary_dim = int(tab.shape[1])
        half = rotary_dim // 2

        def value(b, i, h, d):
            pos = total - seq + i
            pair = d % half
            cos = tirx.Cast(x.dtype, tab[pos, pair])
            sin = tirx.Cast(x.dtype, tab[pos, pair + half])
            other = tirx.Select(d < half, -x[b, i, h, d + half], x[b, i, h, d - half])
            rotated = x[b, i, h, d] * cos + other * sin
            if rotary_dim < int(dim):
                return tirx.Select(
                    tirx.all(h < rotated_heads, d < rotary_dim), rotated, x[b, i, h, d]
                )
            return tirx.Select(h < rotated_heads, rotated, x[b, i, h, d])

        return te.compute((batch, seq, heads, dim), value, name="rotary")

    return op.tensor_expr_op(compute, "rotary", [qkv, table, total_len])


def kv_append_func(heads: int, kv_heads: int, head_dim: int, capacity: int, dtype: str):
    """Writes the k and v heads of qkv (1, n, heads + 2 kv_heads, head_dim) into the caches at
    rows total_len - n .. total_len - 1, in place."""
    all_heads = heads + 2 * kv_heads

    @T.prim_func(private=True, s_tir=True)
    def kv_append(var_k: T.handle, var_v: T.handle, var_qkv: T.handle, total_len: T.int64):
        T.func_attr({"tirx.noalias": True})
        n = T.int64()
        k_cache = T.match_buffer(var_k, (capacity, kv_heads, head_dim), dtype)
        v_cache = T.match_buffer(var_v, (capacity, kv_heads, head_dim), dtype)
        qkv = T.match_buffer(var_qkv, (1, n, all_heads, head_dim), dtype)
        for i, h, d in T.grid(n, kv_heads, head_dim):
            with T.sblock("append"):
                vi, vh, vd = T.axis.remap("SSS", [i, h, d])
                T.reads(qkv[0, vi, heads + vh, vd], qkv[0, vi, heads + kv_heads + vh, vd])
                T.writes(k_cache[total_len - n + vi, vh, vd], v_cache[total_len - n + vi, vh, vd])
                k_cache[total_len - n + vi, vh, vd] = qkv[0, vi, heads + vh, vd]
                v_cache[total_len - n + vi, vh, vd] = qkv[0, vi, heads + kv_heads + vh, vd]

    return kv_append


def _invocation_loops():
    """The loops of a hand-written kernel with one invocation per item, and the scope of an
    invocation's own buffers: on a GPU, blocks and threads; on a CPU, a parallel loop over
    blocks and a plain one within, with "global" buffers (TVM keeps a CPU task's small
    "global" buffers on the stack and allocates "local" ones from the heap on every use)."""
    if _CPU.get():
        return (
            (lambda extent: T.parallel(0, extent)),
            (lambda extent: T.serial(0, extent)),
            "global",
        )
    return (
        lambda extent: T.thread_binding(extent, thread="blockIdx.x"),
        lambda extent: T.thread_binding(extent, thread="threadIdx.x"),
        "local",
    )


# An attention invocation's loops over head_dim: vectorized on a CPU; its dot products of a
# query and a key summed in DOT_LANES interleaved partial sums there (independent SIMD
# accumulators, added up at the end), in one on a GPU (a thread's plain loop).
DOT_LANES = 8


def _head_loops(head_dim: int):
    """(loop over head_dim, partial sums of a dot product, loop over them)."""
    if _CPU.get() and head_dim % DOT_LANES == 0:
        vector = lambda extent: T.vectorized(0, extent)  # noqa: E731
        return vector, DOT_LANES, vector
    serial = lambda extent: T.serial(0, extent)  # noqa: E731
    return serial, 1, serial


def _lane_sum(partial) -> tirx.PrimExpr:
    """The partial sums of a dot product added up."""
    total = partial[0]
    for lane in range(1, int(partial.shape[0])):
        total = total + partial[lane]
    return total


def attention_func(
    heads: int,
    kv_heads: int,
    head_dim: int,
    capacity: int,
    dtype: str,
    window: int = 0,
    scale: float | None = None,
    softcap: float = 0.0,
):
    """Causal attention of the n new queries over cache rows 0 .. total_len - 1; with a sliding
    `window`, the query at position p sees only the `window` positions up to p (the cache
    keeps every position, so the window is a bound on the loop, not a ring). Scores are scaled
    by `scale`, 1 / sqrt(head_dim) unless given, then with a `softcap` become
    softcap * tanh(score / softcap).

    One invocation per (query, head) with an online softmax and no shared memory or
    barriers: the software adapter (SwiftShader) runs invocations as CPU threads, where
    barriers are expensive and this form is the fastest we measured."""
    group = heads // kv_heads
    all_heads = heads + 2 * kv_heads
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    threads = ATTENTION_THREADS

    def capped(score):
        return T.float32(softcap) * T.tanh(score / T.float32(softcap)) if softcap else score

    blocks, lanes, scope = _invocation_loops()
    each, parts, each_part = _head_loops(head_dim)

    def first_key(position):
        return T.max(position - (window - 1), T.int64(0)) if window else T.int64(0)

    @T.prim_func(private=True)
    def attention(
        var_qkv: T.handle, var_k: T.handle, var_v: T.handle, total_len: T.int64, var_out: T.handle
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        n = T.int64()
        qkv = T.match_buffer(var_qkv, (1, n, all_heads, head_dim), dtype)
        k_cache = T.match_buffer(var_k, (capacity, kv_heads, head_dim), dtype)
        v_cache = T.match_buffer(var_v, (capacity, kv_heads, head_dim), dtype)
        out = T.match_buffer(var_out, (1, n, heads * head_dim), dtype)
        for bx in blocks((n * heads + threads - 1) // threads):
            for tx in lanes(threads):
                acc = T.alloc_buffer((head_dim,), "float32", scope=scope)
                partial = T.alloc_buffer((parts,), "float32", scope=scope)
                best = T.alloc_buffer((1,), "float32", scope=scope)
                denom = T.alloc_buffer((1,), "float32", scope=scope)
                score = T.alloc_buffer((1,), "float32", scope=scope)
                prev = T.alloc_buffer((1,), "float32", scope=scope)
                if bx * threads + tx < n * heads:
                    i = T.meta_var((bx * threads + tx) // heads)
                    h = T.meta_var((bx * threads + tx) % heads)
                    kvh = T.meta_var(h // group)
                    best[0] = T.float32(-3.0e38)
                    denom[0] = T.float32(0)
                    for d in each(head_dim):
                        acc[d] = T.float32(0)
                    for j in range(first_key(total_len - n + i), total_len - n + i + 1):
                        for p in each_part(parts):
                            partial[p] = T.float32(0)
                        for d0 in range(head_dim // parts):
                            for p in each_part(parts):
                                partial[p] = partial[p] + T.Cast(
                                    "float32", qkv[0, i, h, d0 * parts + p]
                                ) * T.Cast("float32", k_cache[j, kvh, d0 * parts + p])
                        score[0] = capped(_lane_sum(partial) * T.float32(scale))
                        prev[0] = best[0]
                        best[0] = T.max(prev[0], score[0])
                        # Two exponentials per key, kept in registers for the head_dim loop.
                        prev[0] = T.exp(prev[0] - best[0])
                        score[0] = T.exp(score[0] - best[0])
                        denom[0] = denom[0] * prev[0] + score[0]
                        for d in each(head_dim):
                            acc[d] = acc[d] * prev[0] + score[0] * T.Cast(
                                "float32", v_cache[j, kvh, d]
                            )
                    for d in each(head_dim):
                        out[0, i, h * head_dim + d] = T.Cast(dtype, acc[d] / denom[0])

    return attention


def encoder_attention_func(heads: int, head_dim: int, dtype: str):
    """Bidirectional attention of a batch of padded inputs, qkv (b, n, 3 heads, head_dim):
    each query of input s sees the keys of positions 0 .. lengths[s] - 1 (the padding past
    them is never read); out (b, n, heads * head_dim). Like `attention_func`, one invocation
    per (query, head) with an online softmax; rows past an input's length get the same
    treatment and are never read afterwards."""
    scale = 1.0 / math.sqrt(head_dim)
    threads = ATTENTION_THREADS
    blocks, lanes, scope = _invocation_loops()
    each, parts, each_part = _head_loops(head_dim)

    @T.prim_func(private=True)
    def encoder_attention(var_qkv: T.handle, var_lengths: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        b, n = T.int64(), T.int64()
        qkv = T.match_buffer(var_qkv, (b, n, 3 * heads, head_dim), dtype)
        lengths = T.match_buffer(var_lengths, (b,), "int32")
        out = T.match_buffer(var_out, (b, n, heads * head_dim), dtype)
        for bx in blocks((b * n * heads + threads - 1) // threads):
            for tx in lanes(threads):
                acc = T.alloc_buffer((head_dim,), "float32", scope=scope)
                partial = T.alloc_buffer((parts,), "float32", scope=scope)
                best = T.alloc_buffer((1,), "float32", scope=scope)
                denom = T.alloc_buffer((1,), "float32", scope=scope)
                score = T.alloc_buffer((1,), "float32", scope=scope)
                prev = T.alloc_buffer((1,), "float32", scope=scope)
                if bx * threads + tx < b * n * heads:
                    s = T.meta_var((bx * threads + tx) // (n * heads))
                    i = T.meta_var((bx * threads + tx) // heads % n)
                    h = T.meta_var((bx * threads + tx) % heads)
                    best[0] = T.float32(-3.0e38)
                    denom[0] = T.float32(0)
                    for d in each(head_dim):
                        acc[d] = T.float32(0)
                    for j in range(T.Cast("int64", lengths[s])):
                        for p in each_part(parts):
                            partial[p] = T.float32(0)
                        for d0 in range(head_dim // parts):
                            for p in each_part(parts):
                                partial[p] = partial[p] + T.Cast(
                                    "float32", qkv[s, i, h, d0 * parts + p]
                                ) * T.Cast("float32", qkv[s, j, heads + h, d0 * parts + p])
                        score[0] = _lane_sum(partial) * T.float32(scale)
                        prev[0] = best[0]
                        best[0] = T.max(prev[0], score[0])
                        prev[0] = T.exp(prev[0] - best[0])
                        score[0] = T.exp(score[0] - best[0])
                        denom[0] = denom[0] * prev[0] + score[0]
                        for d in each(head_dim):
                            acc[d] = acc[d] * prev[0] + score[0] * T.Cast(
                                "float32", qkv[s, j, 2 * heads + h, d]
                            )
                    for d in each(head_dim):
                        out[s, i, h * head_dim + d] = T.Cast(dtype, acc[d] / denom[0])

    return encoder_attention
