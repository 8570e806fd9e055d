"""The CPU target's forms of one token's quantized linear (decode), which the `linear` op
(models/kernels.py) takes on the wasm target where they apply: integer dot products
(`integer_form`, see integer_linear.py) for formats whose codes are whole fields of a word, and
float products per SIMD lane with the scales factored out of each group (`lane_linear`) for
the other grouped formats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm import te, tirx
from tvm.relax.frontend.nn import Tensor, op

from ...formats import Format
from ...formats.base import as_dtype, f16_to_f32_unflushed
from ..base import VERIFY_TOKENS, VERIFY_VAR
from ..stages import SCALE_STAGES, Stage
from . import integer_linear

CPU_LANES = 4  # float32 lanes of a 128-bit SIMD vector
# An RMSNorm that the integer form applies to its input: its weight and epsilon.
Norm = tuple[Tensor, float]


def one_token_inputs(shape) -> int | None:
    """The input size of a (1, 1, inputs) shape of constant sizes (one token's), else None."""
    dims = [int(d) if isinstance(d, (int, tirx.IntImm)) else None for d in shape]
    return dims[2] if dims[:2] == [1, 1] else None


def verify_inputs(shape) -> int | None:
    """The input size of a (1, v, inputs) shape, v being a verify step's tokens (at most
    VERIFY_TOKENS, see models/decoder/causal_lm.py), else None."""
    dims = [int(d) if isinstance(d, (int, tirx.IntImm)) else d for d in shape]
    tokens = dims[1]
    verify = isinstance(tokens, tirx.Var) and tokens.name == VERIFY_VAR
    return dims[2] if dims[0] == 1 and verify and isinstance(dims[2], int) else None


def integer_applies(fmt: Format, shape, rows: int, dtype: str) -> bool:
    """Whether CPU decode (or a verify step) takes integer_linear.py: one token (or a verify
    step's few) of float32, a format it reads."""
    cols = one_token_inputs(shape) or verify_inputs(shape)
    return cols is not None and integer_linear.applies(fmt, cols, rows, dtype)


def integer_form(
    x: Tensor,
    parts: dict[str, Tensor],
    fmt: Format,
    rows: int,
    name: str,
    residual: Tensor | None = None,
    bias: Tensor | None = None,
    gating: integer_linear.Gating | None = None,
    norm: Norm | None = None,
) -> Tensor:
    """One token's product (or a verify step's tokens') by integer dot products, its input
    rounded inside the kernel (see integer_linear.py), with `bias` and `residual` added to it
    there where they are given. With `gating` (a gated MLP's gate/up projection, the gate's
    rows/2 rows first), gating(gate) * up: rows / 2 outputs. With `norm`, the input is x under
    that RMSNorm, which the kernel applies as it rounds x."""
    cols, has_residual, has_bias = int(x.shape[2]), residual is not None, bias is not None
    eps = None if norm is None else norm[1]
    if one_token_inputs(x.shape) is not None:
        func = integer_linear.integer_linear_func(
            fmt, rows, cols, has_residual, has_bias, gating, eps
        )
    else:
        func = integer_linear.integer_linear_tokens_func(
            fmt, rows, cols, has_residual, has_bias, VERIFY_TOKENS, gating, eps
        )
    added = [t for t in (bias, residual) if t is not None]
    weight = [] if norm is None else [norm[0]]
    outputs = rows if gating is None else rows // 2
    return op.tensor_ir_op(
        func,
        name,
        [x, *weight, *parts.values(), *added],
        Tensor.placeholder([1, x.shape[1], outputs], "float32"),
    )


def lanes_apply(fmt: Format, shape) -> bool:
    """Whether CPU decode takes `lane_linear`: one token, and a grouped format whose groups
    hold whole runs of CPU_LANES x codes_per_word inputs."""
    chunk = CPU_LANES * fmt.codes_per_word
    return one_token_inputs(shape) is not None and fmt.group > 0 and fmt.group % chunk == 0


def _same_row(j):
    return j


def lane_linear(
    xt: te.Tensor,
    p: dict[str, te.Tensor],
    fmt: Format,
    out_features: int,
    name: str,
    row: Callable[[Any], Any] = _same_row,
):
    """y[j] = sum_k x[k] * (code[j, k] * scale[j, g] + minimum[j, g]) for one token on a CPU,
    (output j reading the weight's row `row(j)`),
    with the scales factored out of each group's sum:
        y[j] = sum_g scale[j, g] * sum_(k in g) x[k] code[j, k] + minimum[j, g] * sum_(k in g) x[k]
    and each group's sum kept per SIMD lane: lane l sums the runs of codes_per_word inputs
    that start at l * codes_per_word in every CPU_LANES x codes_per_word inputs, so the lanes
    of one step read the same position of consecutive words (one vector load, one constant
    shift). The inputs are reordered to that lane order once (`Stage.LANE_INPUTS`), so a step's
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
        name=Stage.LANE_INPUTS,
    )
    c = te.reduce_axis((0, per), name="c")
    r = te.reduce_axis((0, run), name="r")
    partial = te.compute(
        (out_features, groups, lanes),
        lambda j, g, lane: te.sum(
            inputs[g, c, r, lane] * as_dtype(fmt.code_te(p, row(j), col(g, c, r, lane)), xt.dtype),
            axis=[c, r],
        ),
        name=Stage.LANE_PARTIAL,
    )
    scale = te.compute(
        (out_features, groups),
        lambda j, g: as_dtype(fmt.scale_te(p, row(j), g, f16_to_f32_unflushed)[0], xt.dtype),
        name=SCALE_STAGES[0],
    )
    g = te.reduce_axis((0, groups), name="g")
    if fmt.scale_te(p, 0, 0)[1] is None:
        term = lambda j, lane: partial[j, g, lane] * scale[j, g]  # noqa: E731
    else:
        minimum = te.compute(
            (out_features, groups),
            lambda j, g: as_dtype(fmt.scale_te(p, row(j), g, f16_to_f32_unflushed)[1], xt.dtype),
            name=SCALE_STAGES[1],
        )
        c2 = te.reduce_axis((0, per), name="c")
        r2 = te.reduce_axis((0, run), name="r")
        sums = te.compute(
            (groups, lanes),
            lambda g, lane: te.sum(inputs[g, c2, r2, lane], axis=[c2, r2]),
            name=Stage.LANE_INPUT_SUMS,
        )
        term = lambda j, lane: (  # noqa: E731
            partial[j, g, lane] * scale[j, g] + minimum[j, g] * sums[g, lane]
        )
    lane_sums = te.compute(
        (out_features, lanes), lambda j, lane: te.sum(term(j, lane), axis=g), name=Stage.LANE_SUMS
    )
    lane = te.reduce_axis((0, lanes), name="lane")
    return te.compute(
        (1, 1, out_features), lambda b, i, j: te.sum(lane_sums[j, lane], axis=lane), name=name
    )
