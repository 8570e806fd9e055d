"""Kernels the network needs beyond `nn.op`: dequantizing matmul and embedding lookup (TE, so
that the dequantization fuses into the consumer), and causal attention over a cache of static
capacity, with the q/k norms, rope and the KV-cache append inside (hand-written TIR; dlight has
no rule for it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script import builder as B

from ..formats import Format
from ..formats.base import as_dtype, code_value, scaled
from ..targets import Target
from ..targets.stages import (
    CODES_PER_WORD,
    NORM_PARTS,
    NORM_STAGES,
    OUTPUT_RUN,
    SCALE_STAGES,
    Stage,
)
from ..targets.wasm import linear as cpu_forms

ATTENTION_THREADS = 64

# The ops take the target they are built for: the hand-written kernels below serve GPUs (a
# thread per query and head) and CPUs (the same loops, the outer one run in parallel over
# cores), and the quantized linear has CPU forms of its own (targets/wasm/linear.py).


def weight_value(fmt: Format, parts: dict[str, te.Tensor], row, col, dtype: str):
    """Element (row, col) of a stored weight as a `dtype` expression (for lookups)."""
    return as_dtype(fmt.weight_te(parts, row, col), dtype)


Rows = Callable[[Any], Any]  # an output's row of the stored weight


def _same_row(j: tirx.PrimExpr) -> tirx.PrimExpr:
    return j


def _scale_stages(
    fmt: Format, parts: dict[str, te.Tensor], rows: int, groups, dtype: str, row: Rows
):
    """A grouped format's scales (and minimums, where it has them) as stages of their own over
    (outputs, groups)."""
    _, minimum = fmt.scale_te(parts, 0, 0)  # whether the format has minimums

    def stage(i: int) -> te.Tensor:
        return te.compute(
            (rows, groups),
            lambda r, g: as_dtype(fmt.scale_te(parts, row(r), g)[i], dtype),
            name=SCALE_STAGES[i],
        )

    return [stage(i) for i in range(1 if minimum is None else 2)]


def _scaled_weight(
    fmt: Format, parts: dict[str, te.Tensor], rows: int, cols, dtype: str, row: Rows
):
    """weight(output, col) = code * scale + minimum, the scales (and minimums) as stages of
    their own over (outputs, groups)."""
    stages = _scale_stages(fmt, parts, rows, cols // fmt.group, dtype, row)

    def weight(j, col):
        scale, *minimum = (stage[j, col // fmt.group] for stage in stages)
        return scaled(fmt.code_te(parts, row(j), col), scale, minimum[0] if minimum else None)

    return weight


def group_sums(
    xt: te.Tensor,
    parts: dict[str, te.Tensor],
    fmt: Format,
    rows: int,
    name: str,
    row: Rows = _same_row,
):
    """x times a grouped format's weight, summed group by group: y = sum over groups of
    scale * sum(x * code) + minimum * sum(x), the two inner sums stages of their own
    (`Stage.GROUP_DOT`, `Stage.GROUP_SUM`). The same products as `_scaled_weight`'s, in
    another order: a multiply-add per weight instead of two."""
    batch, seq, cols = xt.shape
    size = fmt.group
    groups = cols // size
    stages = _scale_stages(fmt, parts, rows, groups, xt.dtype, row)
    k = te.reduce_axis((0, size), name="k")
    dots = te.compute(
        (batch, seq, rows, groups),
        lambda b, i, j, g: te.sum(
            xt[b, i, g * size + k] * code_value(fmt.code_te(parts, row(j), g * size + k), xt.dtype),
            axis=k,
        ),
        name=Stage.GROUP_DOT,
    )
    g = te.reduce_axis((0, groups), name="g")
    if len(stages) == 1:
        return te.compute(
            (batch, seq, rows),
            lambda b, i, j: te.sum(stages[0][j, g] * dots[b, i, j, g], axis=g),
            name=name,
        )
    k = te.reduce_axis((0, size), name="k")
    sums = te.compute(
        (batch, seq, groups),
        lambda b, i, h: te.sum(xt[b, i, h * size + k], axis=k),
        name=Stage.GROUP_SUM,
    )
    return te.compute(
        (batch, seq, rows),
        lambda b, i, j: te.sum(
            stages[0][j, g] * dots[b, i, j, g] + stages[1][j, g] * sums[b, i, g], axis=g
        ),
        name=name,
    )


class Pending:
    """An input not yet computed, of a norm over the hidden axis (`x` before it), that a
    one-token linear on the gpu set (`Target.norm_prologue`) computes as it reads it, in each
    workgroup (`stages`), and any other reader as kernels of their own, once for all of them
    (`applied`)."""

    x: Tensor
    # Rows of the hidden size `stages` keeps in workgroup memory.
    rows = 1

    @property
    def shape(self):
        return self.x.shape

    @property
    def dtype(self) -> str:
        return self.x.dtype

    def applied(self) -> Tensor:
        raise NotImplementedError

    def inputs(self) -> list[Tensor]:
        """The tensors `stages` reads, in its order."""
        raise NotImplementedError

    def stages(self, *tensors: te.Tensor) -> tuple[te.Tensor, list[te.Tensor]]:
        """The input as the linear reads it, and the outputs its kernel writes beside its own."""
        raise NotImplementedError

    def writes(self) -> int:
        """The outputs `stages` gives beside the input."""
        return 0

    def written(self, outputs: list[Tensor]) -> None:
        """Takes the outputs `stages` gave, as the linear's op returned them."""


class Normed(Pending):
    """x under an RMSNorm (`norm`) not yet applied: a linear whose kernel can apply it as it
    reads x (`Target.norm_prologue`: the CPU's integer form, a GPU's one-token linear) does;
    any other reader applies it as a kernel of its own, once for all of them (`applied`)."""

    def __init__(self, x: Tensor, norm: nn.RMSNorm):
        self.x = x
        self.norm = norm
        self._applied: Tensor | None = None

    def applied(self) -> Tensor:
        if self._applied is None:
            self._applied = self.norm(self.x)
        return self._applied

    def inputs(self) -> list[Tensor]:
        return [self.x, self.norm.weight]

    def stages(self, *tensors: te.Tensor) -> tuple[te.Tensor, list[te.Tensor]]:
        """x normed as relax's rms_norm computes it, in x's dtype (`NORM_STAGES`)."""
        xt, weight = tensors
        factor = rsqrt_mean_square(xt, float(self.norm.epsilon), xt.dtype, NORM_STAGES[:2])
        normed = te.compute(
            xt.shape,
            lambda b, i, c: xt[b, i, c] * factor(b, i) * weight[c],
            name=Stage.NORMED,
        )
        return normed, []


def rsqrt_mean_square(
    xt: te.Tensor, eps: float, dtype: str, stages: tuple[str, str]
) -> Callable[[Any, Any], tirx.PrimExpr]:
    """(b, i) -> 1 / sqrt(mean(xt[b, i]^2) + eps) in `dtype`, the sum of squares in NORM_PARTS
    partial sums (the first of `stages`, each over every NORM_PARTS-th element: a workgroup's
    invocations compute them side by side), then their sum (the second)."""
    batch, seq, cols = xt.shape
    parts = NORM_PARTS if int(cols) % NORM_PARTS == 0 else 1
    j = te.reduce_axis((0, int(cols) // parts), name="j")

    def square(b, i, k):
        value = as_dtype(xt[b, i, k], dtype)
        return value * value

    partials = te.compute(
        (batch, seq, parts),
        lambda b, i, p: te.sum(square(b, i, p + parts * j), axis=j),
        name=stages[0],
    )
    q = te.reduce_axis((0, parts), name="q")
    sums = te.compute((batch, seq), lambda b, i: te.sum(partials[b, i, q], axis=q), name=stages[1])
    return lambda b, i: tirx.rsqrt(
        sums[b, i] / tirx.const(int(cols), dtype) + tirx.const(eps, dtype)
    )


def rms_normed(norm: nn.Module, x: Tensor, target: Target) -> Tensor | Normed:
    """norm(x) for linears to read: a `Normed` on a target with `norm_prologue` where `norm`
    is an RMSNorm over the last axis without a bias (what the integer form applies), else the
    norm applied."""
    over_last = norm.axes in (-1, [-1]) if isinstance(norm, nn.RMSNorm) else False
    if target.norm_prologue and over_last and norm.bias is None:
        return Normed(x, norm)
    return norm(x)


def plain(x: Tensor | Pending) -> Tensor:
    """x as a tensor: a `Pending` input computed."""
    return x.applied() if isinstance(x, Pending) else x


def _one_token(x: Tensor | Pending) -> bool:
    return isinstance(x.shape[1], int) and x.shape[1] == 1


Prologue = Callable[..., tuple[te.Tensor, list[te.Tensor]]]


def _prologue(
    x: Tensor | Pending, target: Target, rows: int, parts: int
) -> tuple[list[Tensor], Prologue]:
    """The tensors a GPU product of `rows` outputs (its weight in `parts` tensors) reads for its
    input, and what makes its input of them (with the outputs its kernel writes beside the
    product's): x, or for a `Pending` x of one token (decode's) its stages, computed in the
    kernel where the target's rule takes it."""
    if target.cpu or not (isinstance(x, Pending) and target.norm_prologue and _one_token(x)):
        return [plain(x)], lambda xt: (xt, [])
    buffers = len(x.inputs()) + parts + 1 + x.writes()
    fits = target.prologue_fits
    if fits is not None and not fits(int(x.shape[-1]), rows, buffers, x.rows):
        return [plain(x)], lambda xt: (xt, [])
    return x.inputs(), x.stages


def _op(
    compute: Callable[..., te.Tensor],
    name: str,
    x: Tensor | Pending,
    target: Target,
    parts: dict[str, Tensor],
    rows: int,
) -> Tensor:
    """The op of `compute(input, weights)` (a product of `rows` outputs), its input made by
    the prologue of x (`_prologue`) in its kernel, with the outputs that writes."""
    names = list(parts)
    inputs, prologue = _prologue(x, target, rows, len(parts))
    extra: list[int] = []

    def body(*tensors: te.Tensor):
        xt, outputs = prologue(*tensors[: len(inputs)])
        extra.append(len(outputs))
        y = compute(xt, dict(zip(names, tensors[len(inputs) :], strict=True)))
        return [y, *outputs] if outputs else y

    result = op.tensor_expr_op(body, name, [*inputs, *parts.values()])
    if not extra[0]:
        return result
    y, *outputs = result
    assert isinstance(x, Pending)
    x.written(outputs)
    return y


def _unnormed(x: Tensor | Pending) -> tuple[Tensor, cpu_forms.Norm | None]:
    """x before its norm, and the norm (weight, eps) for the integer form to apply, if any."""
    if isinstance(x, Normed):
        return x.x, (x.norm.weight, float(x.norm.epsilon))
    return plain(x), None


def linear(
    x: Tensor | Pending,
    parts: dict[str, Tensor],
    fmt: Format,
    out_features: int,
    name: str,
    target: Target,
    residual: Tensor | None = None,
    bias: Tensor | None = None,
):
    """y[b, i, j] = sum_k x[b, i, k] * W[j, k], W dequantized on the fly; y + bias and then
    residual + y where they are given (in the product's kernel: an epilogue). A `Normed` x is
    normed in the kernel where its form can (the CPU's integer form), else by a kernel before."""
    if target.cpu and cpu_forms.integer_applies(fmt, x.shape, out_features, x.dtype):
        x, norm = _unnormed(x)
        return cpu_forms.integer_form(x, parts, fmt, out_features, name, residual, bias, norm=norm)
    y = _linear(x, parts, fmt, out_features, name, target)
    y = y if bias is None else y + bias
    return y if residual is None else residual + y


def _linear(
    x: Tensor | Pending,
    parts: dict[str, Tensor],
    fmt: Format,
    out_features: int,
    name: str,
    target: Target,
):
    def compute(xt: te.Tensor, p: dict[str, te.Tensor]) -> te.Tensor:
        return _product(xt, p, fmt, out_features, name, target)

    return _op(compute, name, x, target, parts, out_features)


def _product(
    xt: te.Tensor,
    p: dict[str, te.Tensor],
    fmt: Format,
    out_features: int,
    name: str,
    target: Target,
    row: Rows = _same_row,
) -> te.Tensor:
    """The stage of x times the weight's `row`s."""
    batch, seq, cols = xt.shape
    if target.cpu and cpu_forms.lanes_apply(fmt, xt.shape):
        return cpu_forms.lane_linear(xt, p, fmt, out_features, name, row)
    # Group sums for a known number of tokens (decode's one) only: under prefill's token tiles
    # over n tokens the group stages are computed with a bounds check on every element (their
    # rows past n do not exist), which made prefill seven times slower on SwiftShader.
    if fmt.group and target.group_sums and isinstance(seq, tirx.IntImm):
        return group_sums(xt, p, fmt, out_features, name, row)
    k = te.reduce_axis((0, cols), name="k")
    if fmt.group:
        weight = _scaled_weight(fmt, p, out_features, cols, xt.dtype, row)
    else:
        weight = lambda j, c: weight_value(fmt, p, row(j), c, xt.dtype)  # noqa: E731
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


# The gated MLPs' activations of a value of a dtype, as TVM's legalization of relax's silu and
# gelu_tanh writes them.
ACTIVATIONS: dict[str, Callable[[Any, str], Any]] = {
    "silu": lambda v, dtype: v * tirx.sigmoid(v),
    "gelu_tanh": lambda v, dtype: (
        tirx.const(0.5, dtype)
        * v
        * (
            tirx.const(1.0, dtype)
            + tirx.tanh(
                tirx.const(math.sqrt(2.0 / math.pi), dtype)
                * v
                * (1 + tirx.const(0.044715, dtype) * v * v)
            )
        )
    ),
}


def gating(gate: Tensor, up: Tensor, activation: str) -> Tensor:
    """act(gate) * up as relax's operators (kernels of their own, fused by TVM)."""
    act = op.silu(gate) if activation == "silu" else op.gelu(gate, approximate="tanh")
    return act * up


def gated_linear(
    x: Tensor | Pending,
    parts: dict[str, Tensor],
    fmt: Format,
    inter: int,
    activation: str,
    target: Target,
) -> Tensor:
    """act(x W_gate^T) * (x W_up^T), W holding the gate's `inter` rows then the up's. Where the
    target has `gated_epilogue`, one kernel: its outputs are computed in the order gate 0,
    up 0, gate 1, up 1, ..., so that the invocation that computes a gate also computes its up
    and multiplies them (an epilogue); the CPU's integer form computes a tile's gates and ups
    side by side; on a target with `gated_one_token`, for one token only (the gpu set's
    Gemv). Elsewhere the product and the gating are kernels of their own (dlight's GEMV
    and Matmul rules take no epilogue that reads two outputs)."""
    if not target.gated_epilogue or (target.gated_one_token and not _one_token(x)):
        gate, up = op.split(
            linear(plain(x), parts, fmt, 2 * inter, "gate_up_proj", target), 2, axis=-1
        )
        return gating(gate, up, activation)
    act = ACTIVATIONS[activation]
    if target.cpu and cpu_forms.integer_applies(fmt, x.shape, inter, x.dtype):
        gated = lambda v: act(v, "float32")  # noqa: E731
        x, norm = _unnormed(x)
        return cpu_forms.integer_form(
            x, parts, fmt, 2 * inter, "gate_up_proj", gating=gated, norm=norm
        )

    def compute(xt: te.Tensor, p: dict[str, te.Tensor]) -> te.Tensor:
        y = _product(
            xt, p, fmt, 2 * inter, "gate_up_proj", target, lambda o: o % 2 * inter + o // 2
        )
        batch, seq, _ = xt.shape
        return te.compute(
            (batch, seq, inter),
            lambda b, i, j: act(y[b, i, 2 * j], xt.dtype) * y[b, i, 2 * j + 1],
            name="gated",
            attrs={OUTPUT_RUN: 2},
        )

    return _op(compute, "gate_up_proj", x, target, parts, 2 * inter)


def embedding(
    ids: Tensor, parts: dict[str, Tensor], fmt: Format, cols: int, dtype: str, scale: float = 1.0
):
    """Rows of the decoded table, each value times `scale` (in `dtype`) where it is not 1."""
    names = list(parts)

    def compute(idt: te.Tensor, *tensors: te.Tensor) -> te.Tensor:
        p = dict(zip(names, tensors, strict=True))
        batch, seq = idt.shape

        def scaled_value(value):
            return value if scale == 1.0 else value * tirx.const(scale, dtype)

        return te.compute(
            (batch, seq, cols),
            lambda b, i, c: scaled_value(weight_value(fmt, p, idt[b, i], c, dtype)),
            name="embed",
        )

    return op.tensor_expr_op(compute, "embedding", [ids, *parts.values()])


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


def builder_loops(target: Target, parallel: bool = True):
    """`_invocation_loops` for kernels written with the IR builder; on a CPU the outer loop a
    parallel one unless `parallel` is false."""
    if target.cpu:
        return (
            (lambda extent: B.parallel(0, extent) if parallel else B.serial(0, extent)),
            (lambda extent: B.serial(0, extent)),
            "global",
        )
    return (
        lambda extent: B.thread_binding(0, extent, thread="blockIdx.x"),
        lambda extent: B.thread_binding(0, extent, thread="threadIdx.x"),
        "local",
    )


def _builder_head_loops(head_dim: int, target: Target):
    """`_head_loops` for kernels written with the IR builder."""
    if target.cpu and head_dim % DOT_LANES == 0:
        vector = lambda extent: B.vectorized(0, extent)  # noqa: E731
        return vector, DOT_LANES, vector
    serial = lambda extent: B.serial(0, extent)  # noqa: E731
    return serial, 1, serial


def attention_func(
    heads: int,
    kv_heads: int,
    head_dim: int,
    capacity: int,
    dtype: str,
    target: Target,
    rotary_dim: int,
    window: int = 0,
    scale: float | None = None,
    softcap: float = 0.0,
    qk_norm_eps: float | None = None,
    fused_qkv: bool = True,
    runs: tuple[int, ...] = (1, 1, 1),
) -> tirx.PrimFunc:
    """Causal attention of the n new tokens of qkv (1, n, heads + 2 kv_heads, head_dim), as
    the projection gives them (or, where `fused_qkv` is False, of q (1, n, heads * head_dim),
    k and v (1, n, kv_heads * head_dim), as three projections give them; `runs`: how many of
    q, k and v each input holds, in order, (2, 1) for a q/k projection and v's), over cache rows
    0 .. total_len - n - 1 and the new tokens themselves (at positions total_len - n ..
    total_len - 1), whose keys and values it writes to the caches (in place).

    Each query and key head is first normalized (RMSNorm over the head, weights q_norm and
    k_norm, where `qk_norm_eps` is given) and rotated (rope: `table` (positions, rotary_dim)
    holds each position's cos then sin per frequency, see decoder/rope.py; the first
    rotary_dim dimensions are rotated in halves, transformers' rotate-half layout, the rest
    kept). On a GPU the new tokens' keys are taken from qkv, normalized and rotated where they
    are used, not read back from the cache, so that no invocation reads what another writes;
    the invocations of a key head's first query head write its keys and values. On a CPU the
    calling thread appends them first, and the tasks read them from the cache.

    With a sliding `window`, the query at position p sees only the `window` positions up to p
    (the cache keeps every position, so the window is a bound on the loop, not a ring). Scores
    are scaled by `scale`, 1 / sqrt(head_dim) unless given, then with a `softcap` become
    softcap * tanh(score / softcap).

    One invocation per (query, head) with an online softmax and no shared memory or
    barriers: the software adapter (SwiftShader) runs invocations as CPU threads, where
    barriers are expensive and this form is the fastest we measured."""
    group = heads // kv_heads
    all_heads = heads + 2 * kv_heads
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    threads = ATTENTION_THREADS
    half = rotary_dim // 2
    f32 = "float32"
    blocks, lanes, scope = builder_loops(target)
    each, parts, each_part = _builder_head_loops(head_dim, target)

    def as_f32(value):
        return tirx.Cast(f32, value)

    def rounded(value):
        """A value as the activations' dtype holds it (float32: as it is)."""
        return as_f32(tirx.Cast(dtype, value))

    with IRBuilder() as builder:
        with B.prim_func(private=True):
            B.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            n = B.int64()
            if fused_qkv:
                qkv = B.arg("qkv", B.Buffer((1, n, all_heads, head_dim), dtype))
                offsets = (0, heads, heads + kv_heads)

                def source(kind: int, token, head, d):
                    """Element d of head `head` of the queries (0), keys (1) or values (2)."""
                    return qkv[0, token, offsets[kind] + head, d]

            else:
                counts = (heads, kv_heads, kv_heads)
                inputs, where, kind = [], [], 0  # where[kind]: (input, its first head there)
                for run in runs:
                    held = range(kind, kind + run)
                    size = sum(counts[k] for k in held)
                    name = "qkv"[kind : kind + run]
                    inputs.append(B.arg(name, B.Buffer((1, n, size * head_dim), dtype)))
                    where += [(len(inputs) - 1, sum(counts[kind:k])) for k in held]
                    kind += run

                def source(kind: int, token, head, d):
                    at, first = where[kind]
                    return inputs[at][0, token, (first + head) * head_dim + d]

            k_cache = B.arg("k_cache", B.Buffer((capacity, kv_heads, head_dim), dtype))
            v_cache = B.arg("v_cache", B.Buffer((capacity, kv_heads, head_dim), dtype))
            table = B.arg("table", B.Buffer((capacity, rotary_dim), dtype))
            norms = None
            if qk_norm_eps is not None:
                norms = (
                    B.arg("q_norm", B.Buffer((head_dim,), dtype)),
                    B.arg("k_norm", B.Buffer((head_dim,), dtype)),
                )
            total_len = B.arg("total_len", B.int64())
            out = B.arg("out", B.Buffer((1, n, heads * head_dim), dtype))

            def head_loader(raw, squares):
                def load_head(into, token, head, position, which: int) -> None:
                    """Query (`which` 0) or key (1) head `head` of token `token`, normalized
                    and rotated for `position`, into `into` (float32), by way of `raw` (a
                    head) and `squares` (one value), buffers of the caller's."""
                    if norms is None:
                        with B.serial(0, head_dim) as d:
                            B.buffer_store(raw, as_f32(source(which, token, head, d)), [d])
                    else:
                        B.buffer_store(squares, tirx.const(0, f32), [0])
                        with B.serial(0, head_dim) as d:
                            value = as_f32(source(which, token, head, d))
                            B.buffer_store(squares, squares[0] + value * value, [0])
                        factor = tirx.rsqrt(
                            squares[0] / tirx.const(head_dim, f32) + tirx.const(qk_norm_eps, f32)
                        )
                        with B.serial(0, head_dim) as d:
                            value = as_f32(source(which, token, head, d)) * factor
                            B.buffer_store(raw, rounded(value * as_f32(norms[which][d])), [d])
                    with B.serial(0, half) as pair:
                        cos = as_f32(table[position, pair])
                        sin = as_f32(table[position, pair + half])
                        first, second = raw[pair], raw[pair + half]
                        B.buffer_store(into, rounded(first * cos - second * sin), [pair])
                        B.buffer_store(into, rounded(second * cos + first * sin), [pair + half])
                    if rotary_dim < head_dim:
                        with B.serial(rotary_dim, head_dim) as d:
                            B.buffer_store(into, raw[d], [d])

                return load_head

            def append(key, token, kvh, position) -> None:
                """Token `token`'s key (normalized and rotated, in `key`) and value into the
                caches at `position`."""
                with B.serial(0, head_dim) as d:
                    B.buffer_store(k_cache, tirx.Cast(dtype, key[d]), [position, kvh, d])
                    B.buffer_store(v_cache, source(2, token, kvh, d), [position, kvh, d])

            start = total_len - n  # the first new token's position
            if target.cpu:
                # On a CPU the new tokens' keys are normalized, rotated and appended first, in
                # the calling thread, then read from the cache like the others: once each,
                # where each query's task would otherwise redo every earlier new key (for
                # Gemma 3's 256-wide heads with their norms, most of a prefill's attention).
                # What the cache holds is what the key rounded to the dtype is: the same
                # values the tasks would compute.
                new_key = B.alloc_buffer((head_dim,), f32, scope=scope)
                new_raw = B.alloc_buffer((head_dim,), f32, scope=scope)
                new_squares = B.alloc_buffer((1,), f32, scope=scope)
                with B.serial(0, n * kv_heads) as item:
                    token, kvh = item // kv_heads, item % kv_heads
                    load = head_loader(new_raw, new_squares)
                    load(new_key, token, kvh, start + token, 1)
                    append(new_key, token, kvh, start + token)
            with blocks((n * heads + threads - 1) // threads) as bx:
                with lanes(threads) as tx:
                    query = B.alloc_buffer((head_dim,), f32, scope=scope)
                    if not target.cpu:  # the new keys as this invocation norms them
                        key = B.alloc_buffer((head_dim,), f32, scope=scope)
                    raw = B.alloc_buffer((head_dim,), f32, scope=scope)
                    acc = B.alloc_buffer((head_dim,), f32, scope=scope)
                    partial = B.alloc_buffer((parts,), f32, scope=scope)
                    best = B.alloc_buffer((1,), f32, scope=scope)
                    denom = B.alloc_buffer((1,), f32, scope=scope)
                    score = B.alloc_buffer((1,), f32, scope=scope)
                    prev = B.alloc_buffer((1,), f32, scope=scope)
                    squares = B.alloc_buffer((1,), f32, scope=scope)
                    load_head = head_loader(raw, squares)

                    def attend(key_at, value_at) -> None:
                        """One key's score, and its value into the running softmax."""
                        with each_part(parts) as p:
                            B.buffer_store(partial, tirx.const(0, f32), [p])
                        with B.serial(0, head_dim // parts) as d0:
                            with each_part(parts) as p:
                                d = d0 * parts + p
                                B.buffer_store(partial, partial[p] + query[d] * key_at(d), [p])
                        total = partial[0]
                        for lane in range(1, parts):
                            total = total + partial[lane]
                        value = total * tirx.const(scale, f32)
                        if softcap:
                            cap = tirx.const(softcap, f32)
                            value = cap * tirx.tanh(value / cap)
                        B.buffer_store(score, value, [0])
                        B.buffer_store(prev, best[0], [0])
                        B.buffer_store(best, tirx.max(prev[0], score[0]), [0])
                        # Two exponentials per key, kept in registers for the head_dim loop.
                        B.buffer_store(prev, tirx.exp(prev[0] - best[0]), [0])
                        B.buffer_store(score, tirx.exp(score[0] - best[0]), [0])
                        B.buffer_store(denom, denom[0] * prev[0] + score[0], [0])
                        with each(head_dim) as d:
                            B.buffer_store(acc, acc[d] * prev[0] + score[0] * value_at(d), [d])

                    with B.If(bx * threads + tx < n * heads):
                        with B.Then():
                            i = (bx * threads + tx) // heads
                            h = (bx * threads + tx) % heads
                            kvh = h // group
                            position = start + i
                            first = tirx.const(0, "int64")
                            if window:
                                first = tirx.max(position - (window - 1), first)
                            load_head(query, i, h, position, 0)
                            B.buffer_store(best, tirx.const(-3.0e38, f32), [0])
                            B.buffer_store(denom, tirx.const(0, f32), [0])
                            with each(head_dim) as d:
                                B.buffer_store(acc, tirx.const(0, f32), [d])
                            # The cache's keys: on a CPU the new tokens' too (appended above).
                            cached = position + 1 if target.cpu else start
                            with B.serial(first, cached) as j:
                                attend(
                                    lambda d, j=j: as_f32(k_cache[j, kvh, d]),
                                    lambda d, j=j: as_f32(v_cache[j, kvh, d]),
                                )
                            if not target.cpu:
                                with B.serial(tirx.max(first, start), position + 1) as j:
                                    load_head(key, j - start, kvh, j, 1)
                                    attend(
                                        lambda d: key[d],
                                        lambda d, j=j: as_f32(source(2, j - start, kvh, d)),
                                    )
                            with each(head_dim) as d:
                                B.buffer_store(
                                    out,
                                    tirx.Cast(dtype, acc[d] / denom[0]),
                                    [0, i, h * head_dim + d],
                                )
                            if not target.cpu:
                                # `key` holds the last new key the query saw: its own token's.
                                with B.If(h % group == 0):
                                    with B.Then():
                                        append(key, i, kvh, position)
    return builder.get()


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
