"""Kernels the network needs beyond `nn.op`: dequantizing matmul and embedding lookup (TE, so
that the dequantization fuses into the consumer), rotary embedding, and the KV-cache append and
causal attention over a cache of static capacity (hand-written TIR; dlight has no rule for them).
"""

from __future__ import annotations

import math

from tvm import te, tirx
from tvm.relax.frontend.nn import Tensor, op
from tvm.script import tirx as T

from ..formats import Format
from ..formats.base import as_dtype, scaled
from ..targets import Target
from ..targets.stages import CODES_PER_WORD, SCALE_STAGES, Stage
from ..targets.wasm import linear as cpu_forms

ATTENTION_THREADS = 64

# The ops take the target they are built for: the hand-written kernels below serve GPUs (a
# thread per query and head) and CPUs (the same loops, the outer one run in parallel over
# cores), and the quantized linear has CPU forms of its own (targets/wasm/linear.py).


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


def linear(
    x: Tensor,
    parts: dict[str, Tensor],
    fmt: Format,
    out_features: int,
    name: str,
    target: Target,
    residual: Tensor | None = None,
):
    """y[b, i, j] = sum_k x[b, i, k] * W[j, k], W dequantized on the fly; residual + y where a
    `residual` is given (in the product's kernel: an epilogue)."""
    if target.cpu and cpu_forms.integer_applies(fmt, x.shape, out_features, x.dtype):
        return cpu_forms.integer_form(x, parts, fmt, out_features, name, residual)
    y = _linear(x, parts, fmt, out_features, name, target)
    return y if residual is None else residual + y


def _linear(
    x: Tensor, parts: dict[str, Tensor], fmt: Format, out_features: int, name: str, target: Target
):
    names = list(parts)

    def compute(xt: te.Tensor, *tensors: te.Tensor) -> te.Tensor:
        p = dict(zip(names, tensors, strict=True))
        batch, seq, cols = xt.shape
        if target.cpu and cpu_forms.lanes_apply(fmt, xt.shape):
            return cpu_forms.lane_linear(xt, p, fmt, out_features, name)
        k = te.reduce_axis((0, cols), name="k")
        if fmt.group:
            weight = _scaled_weight(fmt, p, out_features, cols, xt.dtype)
        else:
            weight = lambda j, c: weight_value(fmt, p, j, c, xt.dtype)  # noqa: E731
        if target.cpu:  # a stage of its own: CPU prefill decodes a tile once for all tokens
            decoded = te.compute(
                (out_features, cols),
                weight,
                name=Stage.DEQUANT_WEIGHT,
                attrs={CODES_PER_WORD: fmt.codes_per_word},
            )
            weight = lambda j, c: decoded[j, c]  # noqa: E731
        return te.compute(
            (batch, seq, out_features),
            lambda b, i, j: te.sum(xt[b, i, k] * weight(j, k), axis=k),
            name=name,
        )

    return op.tensor_expr_op(compute, name, [x, *parts.values()])


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
    decoder/rope.py): the first rotary_dim dimensions of a head are rotated, the rest kept
    (partial rotary)."""

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


def _invocation_loops(target: Target):
    """The loops of a hand-written kernel with one invocation per item, and the scope of an
    invocation's own buffers: on a GPU, blocks and threads; on a CPU, a parallel loop over
    blocks and a plain one within, with "global" buffers (TVM keeps a CPU task's small
    "global" buffers on the stack and allocates "local" ones from the heap on every use)."""
    if target.cpu:
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


def _head_loops(head_dim: int, target: Target):
    """(loop over head_dim, partial sums of a dot product, loop over them)."""
    if target.cpu and head_dim % DOT_LANES == 0:
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
    target: Target,
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

    blocks, lanes, scope = _invocation_loops(target)
    each, parts, each_part = _head_loops(head_dim, target)

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


def encoder_attention_func(heads: int, head_dim: int, dtype: str, target: Target):
    """Bidirectional attention of a batch of padded inputs, qkv (b, n, 3 heads, head_dim):
    each query of input s sees the keys of positions 0 .. lengths[s] - 1 (the padding past
    them is never read); out (b, n, heads * head_dim). Like `attention_func`, one invocation
    per (query, head) with an online softmax; rows past an input's length get the same
    treatment and are never read afterwards."""
    scale = 1.0 / math.sqrt(head_dim)
    threads = ATTENTION_THREADS
    blocks, lanes, scope = _invocation_loops(target)
    each, parts, each_part = _head_loops(head_dim, target)

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
