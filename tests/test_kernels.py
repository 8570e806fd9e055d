"""The ops of compiler/models/kernels.py, op by op, weight format by weight format, target by
target, compiled by TVM for this machine's CPU (or for wasm32 and run under Node) and held to
numpy, with no browser.

- GPU targets ("software", "gpu"): their kernels bind blocks and threads, which the CPU code
  generator cannot run, so what is tested is what they share: each op as it defines its
  computation (the TE or TIR the two targets' rules schedule), compiled for `llvm` with no
  schedule. The hand-written attention kernels are run with their block and thread loops made
  plain loops (`gpu_threads_as_loops`: the same computation, since their invocations never
  meet). The two targets' definitions are checked to be the same function.
- "wasm": its schedule rules (compiler/targets/wasm/rules.py) applied for the native CPU, the
  rule that took each kernel checked, compiled for `llvm`. The integer dot-product form of a
  one-token linear (integer_linear.py) uses a WebAssembly instruction, so it is built for
  wasm32, linked as the build links it and run under Node; its input rounding is also
  compiled for `llvm` and checked against its bound.

References are float64 numpy on weights decoded by an independent decoder (`gguf`'s numpy
dequantization, numpy casts, the q8 formats' definition), never the formats' TE expressions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import tvm
from cpu_kernels import (
    UNIT_ROUNDOFF,
    build_wasm,
    compile_llvm,
    gpu_threads_as_loops,
    op_functions,
    padded,
    prim_module,
    run_wasm,
    schedule_cpu,
    stored_weight,
    tensor,
)
from tvm import s_tir
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import spec

from compiler.formats import FORMATS
from compiler.models import add_norm, kernels
from compiler.targets import TARGETS, TOKEN_TILE, Target
from compiler.targets.base import VERIFY_VAR
from compiler.targets.stages import Stage
from compiler.targets.wasm import integer_linear
from compiler.targets.wasm.lowering import WASM

WASM_TARGET = TARGETS["wasm"]
GPU_TARGETS = [TARGETS["software"], TARGETS["gpu"]]

# A linear of 24 outputs (3 tiles of the CPU prefill's 8, 6 of decode's 4) over 512 inputs
# (2 K-quant super-blocks, 16 groups of 32).
ROWS, COLS = 24, 512
# Prefill token counts: one, and one that ends in a partial token tile.
PREFILL = (1, 5)
TILED = -(-max(PREFILL) // TOKEN_TILE) * TOKEN_TILE  # rows of the padded activation buffers

# The CPU form of a one-token linear each format takes on the wasm target (kernels.linear):
# integer dot products (4-bit unsigned codes, with high bits in Q5_0, Q5_1 and Q6_K, or
# 8-bit signed codes, whole fields of a word), SIMD
# lanes with the scales factored out of each group (groups of whole runs of 4 words' codes),
# or the plain reduction of decoded weights (the float formats, and K-quants of 16-groups).
INTEGER = {
    "q4_0",
    "q4_1",
    "q5_0",
    "q5_1",
    "q8_0",
    "q4f32",
    "q4f16",
    "q8f32",
    "q8f16",
    "q4_k",
    "q6_k",
}
LANES = {"q5_k"}
PLAIN = set(FORMATS) - INTEGER - LANES
# Formats whose scales are float16: the schemes that use them (q4f16, q8f16) run float16
# activations, and the formats decode in float16 (code * scale, then + minimum).
HALF_SCALES = {"q4f16", "q8f16"}


def linear_reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ weight.astype(np.float64).T


def linear_tolerance(x: np.ndarray, weight: np.ndarray, u: float = UNIT_ROUNDOFF) -> np.ndarray:
    """Per output: a float32 sum of k products errs by about sqrt(k) roundings (unit
    roundoff u, float32's unless given) of the terms' magnitude sum_k |x_k w_jk| (rounding
    errors as a random walk);
    allowed 2 sqrt(k) u times it. The factor 2 covers the decoding's own roundings (code *
    scale + minimum) and the forms that factor the scales out of a group's sum, whose partial
    sums are larger than the terms (a group's minimum and its codes times its scale are each
    up to about twice its largest weight)."""
    k = x.shape[-1]
    magnitude = np.abs(x).astype(np.float64) @ np.abs(weight).astype(np.float64).T
    return 2 * math.sqrt(k) * u * magnitude


def linear_op(fmt_name: str, target: Target, name: str = "linear"):
    fmt = FORMATS[fmt_name]
    return lambda x, parts: kernels.linear(x, parts, fmt, ROWS, name, target)


def block_names(func: tvm.tirx.PrimFunc) -> set[str]:
    sch = s_tir.Schedule(func)
    return {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}


# ---------------------------------------------------------------------------------------------
# linear


@pytest.mark.parametrize("tokens", ["n", 1])
@pytest.mark.parametrize("target", GPU_TARGETS, ids=lambda t: t.name)
@pytest.mark.parametrize("fmt_name", sorted(FORMATS))
def test_linear_as_gpu_targets_define_it(fmt_name, target, tokens):
    """Every format: the dequantizing matmul as each GPU target defines it, for n tokens
    (prefill) and for one (decode, where the software target's sums each group before
    scaling it)."""
    rng = np.random.default_rng(10)
    parts, weight = stored_weight(fmt_name, ROWS, COLS, rng)
    params = FORMATS[fmt_name].parts(ROWS, COLS)
    x_spec = spec.Tensor([1, tokens, COLS], "float32")
    lib = compile_llvm(op_functions(linear_op(fmt_name, target), params, x_spec))
    count = 3 if tokens == "n" else tokens
    x = rng.standard_normal((1, count, COLS)).astype(np.float32)
    out = tensor(np.zeros((1, count, ROWS), np.float32))
    lib["linear"](tensor(x), *(tensor(parts[p]) for p in params), out)
    error = np.abs(out.numpy() - linear_reference(x, weight))
    assert np.all(error <= linear_tolerance(x, weight))


@pytest.mark.parametrize("tokens", ["n", 1])
@pytest.mark.parametrize("target", GPU_TARGETS, ids=lambda t: t.name)
@pytest.mark.parametrize("fmt_name", sorted(HALF_SCALES | {"f16-native"}))
def test_linear_in_float16_as_gpu_targets_define_it(fmt_name, target, tokens):
    """The formats of the float16 schemes (q0f16, q4f16, q8f16, for adapters with
    shader-f16) with float16 activations, as each GPU target defines the matmul: its sums in
    float16, so the tolerance is float16's (u = 2^-11)."""
    rng = np.random.default_rng(17)
    parts, weight = stored_weight(fmt_name, ROWS, COLS, rng)
    params = FORMATS[fmt_name].parts(ROWS, COLS)
    x_spec = spec.Tensor([1, tokens, COLS], "float16")
    count = 3 if tokens == "n" else tokens
    x = (rng.standard_normal((1, count, COLS)) * 0.1).astype(np.float16)
    out = tensor(np.zeros((1, count, ROWS), np.float16))
    lib = compile_llvm(op_functions(linear_op(fmt_name, target), params, x_spec))
    lib["linear"](tensor(x), *(tensor(parts[p]) for p in params), out)
    error = np.abs(out.numpy().astype(np.float64) - linear_reference(x, weight))
    assert np.all(error <= linear_tolerance(x, weight, 2.0**-11))


def gelu_tanh(v: np.ndarray) -> np.ndarray:
    return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))


GATES = {"silu": lambda v: v / (1 + np.exp(-v)), "gelu_tanh": gelu_tanh}


@pytest.mark.parametrize("tokens", ["n", 1])
@pytest.mark.parametrize("activation", sorted(GATES))
@pytest.mark.parametrize("fmt_name", ["f32", "q4_1", "q4_k", "q8_0", "q4f32"])
def test_gated_linear_as_the_software_target_defines_it(fmt_name, activation, tokens):
    """The gate/up projection with the MLP's gating as its epilogue (the software target's
    one kernel), for n tokens: act(x Wg^T) * (x Wu^T), W's first half of rows the gate's.
    Allowed: each product's tolerance carried through the gating (the activations' slopes
    are below 1.2), and a few roundings of the result."""
    target = TARGETS["software"]
    assert target.gated_epilogue
    rng = np.random.default_rng(12)
    fmt = FORMATS[fmt_name]
    parts, weight = stored_weight(fmt_name, 2 * ROWS, COLS, rng)
    params = fmt.parts(2 * ROWS, COLS)
    x_spec = spec.Tensor([1, tokens, COLS], "float32")
    mod = op_functions(
        lambda x, p: kernels.gated_linear(x, p, fmt, ROWS, activation, target), params, x_spec
    )
    lib = compile_llvm(mod)
    count = 3 if tokens == "n" else tokens
    x = rng.standard_normal((1, count, COLS)).astype(np.float32)
    out = tensor(np.zeros((1, count, ROWS), np.float32))
    lib["gate_up_proj"](tensor(x), *(tensor(parts[p]) for p in params), out)
    expected, bound = gated_bound(x, weight, activation, linear_tolerance)
    assert np.all(np.abs(out.numpy() - expected) <= bound)


def gated_bound(x: np.ndarray, weight: np.ndarray, activation: str, tolerance) -> tuple:
    """The gated MLP's act(x Wg^T) * (x Wu^T) (W's first ROWS rows the gate's), and what a
    result may differ from it by: each product's `tolerance` carried through the gating (the
    activations' slopes are below 1.2), and a few roundings of the result."""
    gate_w, up_w = weight[:ROWS], weight[ROWS:]
    gate, up = linear_reference(x, gate_w), linear_reference(x, up_w)
    expected = GATES[activation](gate) * up
    bound = (
        1.2 * tolerance(x, gate_w) * np.abs(up)
        + np.abs(GATES[activation](gate)) * tolerance(x, up_w)
        + 8 * UNIT_ROUNDOFF * np.abs(expected)
    )
    return expected, bound


@pytest.mark.parametrize(
    ("fmt_name", "tokens"),
    [("f32", 1), ("q5_k", 1), ("q3_k", 1)]
    + [(name, "n") for name in ("f32", "q4_1", "q4_k", "q5_0", "q6_k", "q8_0")],
)
@pytest.mark.parametrize("activation", sorted(GATES))
def test_gated_linear_on_cpu(fmt_name, activation, tokens):
    """The gate/up projection with the gating as its epilogue on the wasm target, one kernel
    scheduled by CpuReduction: prefill's token tiles over a panel of decoded weights (5 tokens,
    a partial tile, on padded buffers as in `test_linear_prefill_on_cpu`), and one token's
    lane form (q5_k) or plain reduction (f32, q3_k); the integer formats' one-token
    kernel is `test_integer_gated_linear_under_node`'s."""
    target = WASM_TARGET
    assert target.gated_epilogue
    rng = np.random.default_rng(16)
    fmt = FORMATS[fmt_name]
    parts, weight = stored_weight(fmt_name, 2 * ROWS, COLS, rng)
    params = fmt.parts(2 * ROWS, COLS)
    x_spec = spec.Tensor([1, tokens, COLS], "float32")
    mod = op_functions(
        lambda x, p: kernels.gated_linear(x, p, fmt, ROWS, activation, target), params, x_spec
    )
    scheduled, record = schedule_cpu(mod)
    assert record == {"gate_up_proj": "CpuReduction"}
    lib = compile_llvm(scheduled)
    count = 5 if tokens == "n" else 1
    x = rng.standard_normal((1, count, COLS)).astype(np.float32)
    x_buffer, x_view = padded(x, TILED, np.nan)
    out, out_view = padded(np.zeros((1, count, ROWS), np.float32), TILED, 7.0)
    lib["gate_up_proj"](x_view, *(tensor(parts[p]) for p in params), out_view)
    expected, bound = gated_bound(x, weight, activation, linear_tolerance)
    result = out.numpy()
    assert np.all(np.abs(result[:, :count] - expected) <= bound)
    assert np.all(result[:, count:] == 7.0)


@pytest.mark.parametrize("fmt_name", sorted(FORMATS))
def test_linear_prefill_on_cpu(fmt_name):
    """Every format: the wasm target's prefill kernel (CpuReduction's token tiles over a panel
    of decoded weights), for 1 token and for 5 (a partial tile). The activation buffers are
    padded to whole tiles, as `compile` sizes them: the input's padding holds NaN, which must
    not reach an output, and the output's a marker, which must stay (rows past n are read,
    never written)."""
    rng = np.random.default_rng(11)
    parts, weight = stored_weight(fmt_name, ROWS, COLS, rng)
    params = FORMATS[fmt_name].parts(ROWS, COLS)
    mod = op_functions(
        linear_op(fmt_name, WASM_TARGET), params, spec.Tensor([1, "n", COLS], "float32")
    )
    assert Stage.DEQUANT_WEIGHT in block_names(mod["linear"])
    scheduled, record = schedule_cpu(mod)
    assert record == {"linear": "CpuReduction"}
    lib = compile_llvm(scheduled)
    for n in PREFILL:
        x = rng.standard_normal((1, n, COLS)).astype(np.float32)
        x_buffer, x_view = padded(x, TILED, np.nan)
        out, out_view = padded(np.zeros((1, n, ROWS), np.float32), TILED, 7.0)
        lib["linear"](x_view, *(tensor(parts[p]) for p in params), out_view)
        result = out.numpy()
        error = np.abs(result[:, :n] - linear_reference(x, weight))
        assert np.all(error <= linear_tolerance(x, weight)), n
        assert np.all(result[:, n:] == 7.0), n


@pytest.mark.parametrize("fmt_name", sorted(LANES | PLAIN))
def test_linear_decode_on_cpu(fmt_name):
    """The wasm target's one-token kernel for the formats that take float products: the
    lane form (`lane_linear`, its stages named as the rule expects) or the plain reduction,
    both scheduled by CpuReduction."""
    rng = np.random.default_rng(12)
    parts, weight = stored_weight(fmt_name, ROWS, COLS, rng)
    params = FORMATS[fmt_name].parts(ROWS, COLS)
    mod = op_functions(
        linear_op(fmt_name, WASM_TARGET), params, spec.Tensor([1, 1, COLS], "float32")
    )
    assert (Stage.LANE_SUMS in block_names(mod["linear"])) == (fmt_name in LANES)
    scheduled, record = schedule_cpu(mod)
    assert record == {"linear": "CpuReduction"}
    x = rng.standard_normal((1, 1, COLS)).astype(np.float32)
    out = tensor(np.zeros((1, 1, ROWS), np.float32))
    compile_llvm(scheduled)["linear"](tensor(x), *(tensor(parts[p]) for p in params), out)
    error = np.abs(out.numpy() - linear_reference(x, weight))
    assert np.all(error <= linear_tolerance(x, weight))


@pytest.mark.parametrize("fmt_name", sorted(LANES))
def test_lane_linear_as_defined(fmt_name):
    """The lane form's computation with no schedule: its factored sums (per group, per lane)
    equal the plain product."""
    rng = np.random.default_rng(13)
    parts, weight = stored_weight(fmt_name, ROWS, COLS, rng)
    params = FORMATS[fmt_name].parts(ROWS, COLS)
    mod = op_functions(
        linear_op(fmt_name, WASM_TARGET), params, spec.Tensor([1, 1, COLS], "float32")
    )
    x = rng.standard_normal((1, 1, COLS)).astype(np.float32)
    out = tensor(np.zeros((1, 1, ROWS), np.float32))
    compile_llvm(mod)["linear"](tensor(x), *(tensor(parts[p]) for p in params), out)
    error = np.abs(out.numpy() - linear_reference(x, weight))
    assert np.all(error <= linear_tolerance(x, weight))


def integer_input(rng: np.random.Generator) -> np.ndarray:
    """One token's input with the cases the int16 rounding treats apart: a group of zeros
    (no scale), a group of one large value among small ones, groups of different sizes."""
    x = rng.standard_normal((1, 1, COLS)).astype(np.float32)
    x[0, 0, :32] = 0.0
    x[0, 0, 32:64] *= 1e-3
    x[0, 0, 70] = 40.0
    x[0, 0, 96:128] *= 1e3
    return x


def integer_tolerance(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Rounding an input to int16 in steps of its group's max |x| / 32767 moves it by at most
    half a step, 1 / 65534 of the group's largest value (integer_linear.py), so output j moves
    by at most sum_k |w_jk| max_group(k) / 65534; the integer sums are exact, and the float32
    scaling and sums of groups add the float tolerance."""
    largest = np.repeat(np.abs(x).reshape(-1, integer_linear.GROUP).max(-1), integer_linear.GROUP)
    rounding = np.abs(weight).astype(np.float64) @ largest / 65534
    return rounding + linear_tolerance(x, weight)


def integer_op(fmt_name: str, name: str, added: bool, tokens: int | str = 1) -> tvm.IRModule:
    """The wasm target's one-token linear of `fmt_name` (or a verify step's, `tokens` being
    its symbolic size), with a bias and a residual if asked."""
    fmt = FORMATS[fmt_name]
    params = fmt.parts(ROWS, COLS)
    extra = {"bias": ((ROWS,), "float32"), "residual": ((1, tokens, ROWS), "float32")}
    weights = {**params, **extra} if added else params

    def body(x, p):
        parts = {k: p[k] for k in params}
        bias, residual = (p["bias"], p["residual"]) if added else (None, None)
        return kernels.linear(x, parts, fmt, ROWS, name, WASM_TARGET, residual, bias)

    return op_functions(body, weights, spec.Tensor([1, tokens, COLS], "float32"))


NORM_EPS = 1e-5


def normed_op(fmt_name: str, name: str, tokens: int | str) -> tvm.IRModule:
    """The wasm target's linear of `fmt_name` reading x under an RMSNorm (weight `norm`)."""
    fmt = FORMATS[fmt_name]
    params = fmt.parts(ROWS, COLS)

    def body(x, p):
        norm = nn.RMSNorm(COLS, -1, NORM_EPS, bias=False)
        norm.weight = p["norm"]
        normed = kernels.rms_normed(norm, x, WASM_TARGET)
        assert isinstance(normed, kernels.Normed)
        parts = {k: p[k] for k in params}
        return kernels.linear(normed, parts, fmt, ROWS, name, WASM_TARGET)

    weights = {"norm": ((COLS,), "float32"), **params}
    return op_functions(body, weights, spec.Tensor([1, tokens, COLS], "float32"))


@pytest.fixture(scope="module")
def integer_kernels() -> bytes:
    """The one-token linear of every integer format for the wasm target, scheduled by its rules
    for wasm32 and linked into one module: `linear_<format>` (the hand-written kernel: int16
    input rounding, then integer dot products) and `linear_<format>_residual` (with a bias and
    a residual added in its epilogue)."""
    funcs = {}
    for fmt_name in sorted(INTEGER):
        for name, residual in (
            ("linear_" + fmt_name, False),
            (f"linear_{fmt_name}_residual", True),
        ):
            mod = integer_op(fmt_name, name, residual)
            scheduled, record = schedule_cpu(mod, WASM)
            assert record == {name: "written"}
            funcs.update({gv.name_hint: f for gv, f in scheduled.functions_items()})
            # A verify step's few tokens (symbolic size VERIFY_VAR), in the same kernel form.
            name = name.replace("linear_", "verify_")
            mod = integer_op(fmt_name, name, residual, VERIFY_VAR)
            scheduled, record = schedule_cpu(mod, WASM)
            assert record == {name: "written"}
            funcs.update({gv.name_hint: f for gv, f in scheduled.functions_items()})
        # The product of x under an RMSNorm that the kernel applies as it rounds x (the wasm
        # target's `norm_prologue`), for one token and for a verify step's: `normed_<format>`
        # and `normed_verify_<format>`.
        for prefix, tokens in (("normed_", 1), ("normed_verify_", VERIFY_VAR)):
            name = prefix + fmt_name
            scheduled, record = schedule_cpu(normed_op(fmt_name, name, tokens), WASM)
            assert record == {name: "written"}
            funcs.update({gv.name_hint: f for gv, f in scheduled.functions_items()})
        # A gated MLP's gate/up projection with its gating as the epilogue (the wasm target's
        # `gated_linear`), for one token and for a verify step's: `gated_<activation>_<format>`
        # and `gated_verify_<activation>_<format>`.
        fmt = FORMATS[fmt_name]
        for activation in sorted(GATES):
            for prefix, tokens in (("gated_", 1), ("gated_verify_", VERIFY_VAR)):
                mod = op_functions(
                    lambda x, p, fmt=fmt, activation=activation: kernels.gated_linear(
                        x, p, fmt, ROWS, activation, WASM_TARGET
                    ),
                    fmt.parts(2 * ROWS, COLS),
                    spec.Tensor([1, tokens, COLS], "float32"),
                )
                scheduled, record = schedule_cpu(mod, WASM)
                assert record == {"gate_up_proj": "written"}
                name = f"{prefix}{activation}_{fmt_name}"
                funcs[name] = scheduled["gate_up_proj"].with_attr("global_symbol", name)
    return build_wasm(tvm.IRModule(funcs))


@pytest.mark.parametrize("fmt_name", sorted(INTEGER))
def test_integer_linear_under_node(integer_kernels, fmt_name):
    """Every integer format: one token's product by the wasm build's kernel (int16 input
    rounding, then integer dot products: WebAssembly's i32x4.dot_i16x8_s), run under Node; and
    with a bias and a residual added in its epilogue."""
    rng = np.random.default_rng(14)
    parts, weight = stored_weight(fmt_name, ROWS, COLS, rng)
    x = integer_input(rng)
    residual = rng.standard_normal((1, 1, ROWS)).astype(np.float32)
    bias = rng.standard_normal(ROWS).astype(np.float32)
    tensors = {
        "x": x,
        **parts,
        "bias": bias,
        "residual": residual,
        "out": np.zeros((1, 1, ROWS), np.float32),
        "out_residual": np.zeros((1, 1, ROWS), np.float32),
    }
    name = "linear_" + fmt_name
    calls = [
        (name, ["x", *parts, "out"]),
        (name + "_residual", ["x", *parts, "bias", "residual", "out_residual"]),
    ]
    result = run_wasm(integer_kernels, tensors, calls)
    expected = linear_reference(x, weight)
    error = np.abs(result["out"] - expected)
    assert np.all(error <= integer_tolerance(x, weight))
    # The two sums' roundings, of the size of their terms.
    total = residual + (expected + bias)
    error = np.abs(result["out_residual"] - total)
    sizes = np.abs(residual) + np.abs(expected) + np.abs(bias)
    bound = integer_tolerance(x, weight) + 2 * UNIT_ROUNDOFF * sizes
    assert np.all(error <= bound)


@pytest.mark.parametrize("fmt_name", sorted(INTEGER))
def test_integer_linear_of_a_verify_step_under_node(integer_kernels, fmt_name):
    """Every integer format: the product of a verify step's tokens (speculative decoding) by
    the kernel that reads each group's codes once for all of them: each token as one token's
    product would be, with its own int16 rounding, its bias and its residual."""
    rng = np.random.default_rng(15)
    parts, weight = stored_weight(fmt_name, ROWS, COLS, rng)
    count = 5
    x = np.concatenate([integer_input(rng) * (t + 1) for t in range(count)], axis=1)
    residual = rng.standard_normal((1, count, ROWS)).astype(np.float32)
    bias = rng.standard_normal(ROWS).astype(np.float32)
    tensors = {
        "x": x,
        **parts,
        "bias": bias,
        "residual": residual,
        "out": np.zeros((1, count, ROWS), np.float32),
        "out_residual": np.zeros((1, count, ROWS), np.float32),
    }
    name = "verify_" + fmt_name
    calls = [
        (name, ["x", *parts, "out"]),
        (name + "_residual", ["x", *parts, "bias", "residual", "out_residual"]),
    ]
    result = run_wasm(integer_kernels, tensors, calls)
    for t in range(count):
        row = x[:, t : t + 1]
        expected = linear_reference(row, weight)
        tolerance = integer_tolerance(row, weight)
        assert np.all(np.abs(result["out"][:, t : t + 1] - expected) <= tolerance)
        total = residual[:, t : t + 1] + (expected + bias)
        sizes = np.abs(residual[:, t : t + 1]) + np.abs(expected) + np.abs(bias)
        error = np.abs(result["out_residual"][:, t : t + 1] - total)
        assert np.all(error <= tolerance + 2 * UNIT_ROUNDOFF * sizes)


@pytest.mark.parametrize("fmt_name", sorted(INTEGER))
def test_integer_linear_with_its_input_norm_under_node(integer_kernels, fmt_name):
    """Every integer format: the product of x under an RMSNorm that the kernel applies as it
    rounds x, for one token and for a verify step's five (each normed on its own), against the
    norm and product in float64. Besides the rounding to int16 of the normed inputs, the norm's
    float32 sum of squares errs by at most COLS roundings, which its square root halves, and the
    factor and the two products add a few: each normed input within (COLS / 2 + 4) u of its
    value."""
    rng = np.random.default_rng(19)
    parts, weight = stored_weight(fmt_name, ROWS, COLS, rng)
    count = 5
    tokens = np.concatenate([integer_input(rng) * (t + 1) for t in range(count)], axis=1)
    norm = (1 + 0.5 * rng.standard_normal(COLS)).astype(np.float32)
    tensors = {
        "x": tokens[:, :1],
        "tokens": tokens,
        "norm": norm,
        **parts,
        "out": np.zeros((1, 1, ROWS), np.float32),
        "out_tokens": np.zeros((1, count, ROWS), np.float32),
    }
    calls = [
        ("normed_" + fmt_name, ["x", "norm", *parts, "out"]),
        ("normed_verify_" + fmt_name, ["tokens", "norm", *parts, "out_tokens"]),
    ]
    result = run_wasm(integer_kernels, tensors, calls)
    for t, got in [(0, result["out"])] + [
        (t, result["out_tokens"][:, t : t + 1]) for t in range(count)
    ]:
        x = tokens[:, t : t + 1].astype(np.float64)
        normed = x / np.sqrt(np.mean(x * x) + NORM_EPS) * norm
        expected = linear_reference(normed, weight)
        terms = np.abs(normed) @ np.abs(weight.astype(np.float64)).T
        bound = integer_tolerance(normed, weight) + (COLS / 2 + 4) * UNIT_ROUNDOFF * terms
        assert np.all(np.abs(got - expected) <= bound), t


@pytest.mark.parametrize("activation", sorted(GATES))
@pytest.mark.parametrize("fmt_name", sorted(INTEGER))
def test_integer_gated_linear_under_node(integer_kernels, fmt_name, activation):
    """Every integer format: a gated MLP's gate/up projection with the gating as its epilogue,
    in the integer kernel (each tile computing its outputs' gate and up rows), for one token and
    for a verify step's five, run under Node."""
    rng = np.random.default_rng(18)
    parts, weight = stored_weight(fmt_name, 2 * ROWS, COLS, rng)
    count = 5
    tokens = np.concatenate([integer_input(rng) * 0.1 * (t + 1) for t in range(count)], axis=1)
    tensors = {
        "x": tokens[:, :1],
        "tokens": tokens,
        **parts,
        "out": np.zeros((1, 1, ROWS), np.float32),
        "out_tokens": np.zeros((1, count, ROWS), np.float32),
    }
    calls = [
        (f"gated_{activation}_{fmt_name}", ["x", *parts, "out"]),
        (f"gated_verify_{activation}_{fmt_name}", ["tokens", *parts, "out_tokens"]),
    ]
    result = run_wasm(integer_kernels, tensors, calls)
    for t, got in [(0, result["out"])] + [
        (t, result["out_tokens"][:, t : t + 1]) for t in range(count)
    ]:
        x = tokens[:, t : t + 1]
        expected, bound = gated_bound(x, weight, activation, integer_tolerance)
        assert np.all(np.abs(got - expected) <= bound), t


def read_order(width: int) -> np.ndarray:
    """The element of a group of 32 that `integer_linear` multiplies with each position of the
    rounded inputs, derived from how it reads the codes: four words (element e of the group in
    bits width * (e % per) of word e // per, per = 32 / width) loaded as eight 16-bit lanes
    (lane l: word l // 2, bits 16 (l % 2) up); 4-bit codes: vector s of the four holds, in lane
    l, the nibble at bit 4 s of the lane; 8-bit codes, two loads of four words each: vector
    2 h + b holds, in lane l, the byte b (low, high) of lane l of load h."""
    per = 32 // width
    order = []
    if width == 4:
        for shift in range(4):
            for lane in range(8):
                bit = 16 * (lane % 2) + 4 * shift
                order.append((lane // 2) * per + bit // width)
    else:
        for load in range(2):
            for byte in range(2):
                for lane in range(8):
                    bit = 16 * (lane % 2) + 8 * byte
                    order.append(load * 16 + (lane // 2) * per + bit // width)
    return np.array(order)


@pytest.mark.parametrize("width", [4, 8])
def test_integer_input_rounding(width):
    """The integer kernel's input rounding (`input_rounding_func`) compiled for the CPU: per
    group of 32, the scale is max |x| / 32767,
    the sum exact to float32, and each int16 the nearest step to its input (half a step at
    most), the inputs in the order the kernel reads the codes."""
    rng = np.random.default_rng(15)
    x = integer_input(rng)
    lib = compile_llvm(prim_module(rounding=integer_linear.input_rounding_func(COLS, width)))
    groups = COLS // integer_linear.GROUP
    xq = tensor(np.zeros(COLS, np.int16))
    scales, sums = tensor(np.zeros(groups, np.float32)), tensor(np.zeros(groups, np.float32))
    lib["rounding"](tensor(x), xq, scales, sums)
    grouped = x.reshape(groups, 32).astype(np.float64)
    largest = np.abs(grouped).max(-1)
    # One float32 division.
    np.testing.assert_allclose(scales.numpy(), largest / 32767, rtol=UNIT_ROUNDOFF, atol=0)
    # 32 float32 additions in some order: at most 31 roundings of the running sum's magnitude.
    sum_bound = 31 * UNIT_ROUNDOFF * np.abs(grouped).sum(-1)
    assert np.all(np.abs(sums.numpy() - grouped.sum(-1)) <= sum_bound)
    order = read_order(width)
    assert sorted(order) == list(range(32))
    values = xq.numpy().reshape(groups, 32).astype(np.float64)
    restored = np.empty_like(values)
    restored[:, order] = values * (largest / 32767)[:, None]
    # Half a step, plus the float32 rounding of x * (32767 / max) before rounding to int16.
    step = largest / 32767
    assert np.all(np.abs(restored - grouped) <= step[:, None] * (0.5 + 1e-6))
    assert np.all(values[0] == 0) and np.abs(values).max() == 32767


# ---------------------------------------------------------------------------------------------
# embedding


@pytest.mark.parametrize("scheduled", [False, True], ids=["as-defined", "wasm-rules"])
@pytest.mark.parametrize("fmt_name", sorted(FORMATS))
def test_embedding(fmt_name, scheduled):
    """Every format: rows of the decoded table, as defined (every target) and with the wasm
    target's element-wise rule. In float32 exactly (a lookup decodes, it adds nothing); the
    float16-scale formats in float16, as their schemes run them."""
    rng = np.random.default_rng(16)
    vocab, cols = 40, 512
    dtype = "float16" if fmt_name in HALF_SCALES else "float32"
    parts, weight = stored_weight(fmt_name, vocab, cols, rng)
    params = FORMATS[fmt_name].parts(vocab, cols)
    fmt = FORMATS[fmt_name]
    mod = op_functions(
        lambda ids, p: kernels.embedding(ids, p, fmt, cols, dtype),
        params,
        spec.Tensor([1, "n"], "int32"),
    )
    if scheduled:
        mod, record = schedule_cpu(mod)
        assert record == {"embedding": "CpuElementwise"}
    ids = np.array([[0, vocab - 1, 7, 7, 23]], np.int32)
    out = tensor(np.zeros((1, 5, cols), dtype))
    compile_llvm(mod)["embedding"](tensor(ids), *(tensor(parts[p]) for p in params), out)
    if dtype == "float32":
        np.testing.assert_array_equal(out.numpy(), weight[ids])
    else:
        # Two float16 roundings (half an ulp, 2^-11 relative, each) of code * scale (at most
        # about twice the group's largest |w|: q4's minimum cancels part of it) and of the sum.
        largest = np.abs(weight[ids]).max(-1, keepdims=True)
        bound = 2.0**-11 * 3 * largest
        assert np.all(np.abs(out.numpy().astype(np.float64) - weight[ids]) <= bound)


# ---------------------------------------------------------------------------------------------
# attention


def softmax_attention(q, k, v, scale, softcap):
    """One query's attention in float64 over the keys it sees: q (d,), k and v (keys, d)."""
    scores = k.astype(np.float64) @ q.astype(np.float64) * scale
    if softcap:
        scores = softcap * np.tanh(scores / softcap)
    weights = np.exp(scores - scores.max())
    return weights @ v.astype(np.float64) / weights.sum()


def prepared_heads(x, table, positions, norm=None, eps=1e-6):
    """Heads x (n, heads, head_dim) as attention uses them, in float64: normalized (RMSNorm
    over each head, weights `norm`, where given), then transformers' rotate-half on the first
    rotary_dim dimensions (table (positions, rotary_dim): cos then sin), the rest kept."""
    x = x.astype(np.float64)
    if norm is not None:
        x = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * norm.astype(np.float64)
    half = table.shape[1] // 2
    cos = table[positions, :half].astype(np.float64)[:, None, :]
    sin = table[positions, half:].astype(np.float64)[:, None, :]
    out = x.copy()
    first, second = x[..., :half], x[..., half : 2 * half]
    out[..., :half] = first * cos - second * sin
    out[..., half : 2 * half] = second * cos + first * sin
    return out


def attention_reference(qkv, k_cache, v_cache, total_len, kv_heads, window, scale, softcap):
    """Attention of the prepared queries of qkv over caches that hold the new tokens' keys and
    values too."""
    n, heads, head_dim = qkv.shape[1], qkv.shape[2] - 2 * kv_heads, qkv.shape[3]
    group = heads // kv_heads
    out = np.zeros((1, n, heads * head_dim))
    keys = np.arange(len(k_cache))
    for i in range(n):
        position = total_len - n + i
        visible = keys <= position
        if window:
            visible &= keys > position - window
        for h in range(heads):
            kv = h // group
            out[0, i, h * head_dim : (h + 1) * head_dim] = softmax_attention(
                qkv[0, i, h], k_cache[visible, kv], v_cache[visible, kv], scale, softcap
            )
    return out


def hand_written(form: str, make: Callable[[Target], tvm.tirx.PrimFunc]) -> tvm.tirx.PrimFunc:
    """A hand-written kernel as a target builds it, ready for llvm: "cpu" (the wasm target's
    parallel loops) or "gpu" (both GPU targets', checked to be the same function, its block
    and thread loops made plain loops)."""
    if form == "cpu":
        return make(WASM_TARGET)
    software, gpu = (make(t) for t in GPU_TARGETS)
    tvm.ir.assert_structural_equal(software, gpu)
    return gpu_threads_as_loops(software)


# The outputs are weighted means of values below 5: float32 dot products of 16 terms, two
# exponentials per key and running sums over up to 27 keys each err by a few roundings
# (u = 6e-8) of the values' size, some 1e-7 each; the norms and rotations of the queries and
# the new keys add a few more; 4e-6 allows about sixty of them.
ATTENTION_ATOL = 4e-6

ATTENTION_CASES = {
    # name: (head_dim, rotary_dim, n, total_len, window, scale, softcap, q/k norms, q/k/v
    # fused (True) or how many of q, k and v each projection holds)
    "prefill": (16, 16, 20, 27, 0, None, 0.0, False, True),  # 80 invocations: two blocks of 64
    "decode": (16, 16, 1, 19, 0, None, 0.0, False, True),
    "window": (16, 16, 6, 24, 5, None, 0.0, False, True),
    "softcap-scale": (16, 16, 4, 11, 0, 0.5, 3.0, False, True),
    "head-dim-12": (12, 12, 5, 9, 0, None, 0.0, False, True),  # not a multiple of the CPU's 8 sums
    "partial-rotary": (16, 8, 5, 9, 0, None, 0.0, False, True),  # half of each head rotated
    "qk-norms": (16, 16, 5, 12, 0, None, 0.0, True, True),
    "qk-norms-decode": (16, 16, 1, 12, 0, None, 0.0, True, True),
    "separate-qkv": (16, 16, 5, 12, 0, None, 0.0, True, (1, 1, 1)),  # three projections' outputs
    "qk-and-v": (16, 16, 5, 12, 0, None, 0.0, True, (2, 1)),  # q and k one projection, v another
    "q-and-kv": (16, 16, 1, 12, 0, None, 0.0, False, (1, 2)),
}


@pytest.mark.parametrize("form", ["cpu", "gpu"])
@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_attention(case, form):
    """Causal attention of the new tokens of qkv over the cache and themselves, 4 query heads
    sharing 2 KV heads, for each target's form: the queries and new keys normalized (where the
    case has q/k norms) and rotated, the new keys and values written to the cache rows
    total_len - n .. total_len - 1. Cache rows no query may read hold NaN: the new tokens'
    (written by the kernel), those past total_len, and (with a window) those before the first
    query's window; every row but the new tokens' keeps what it held. The projections come as
    one qkv tensor, or (where their formats differ) as two or three."""
    head_dim, rotary_dim, n, total_len, window, scale, softcap, qk_norm, fused = ATTENTION_CASES[
        case
    ]
    heads, kv_heads, capacity, eps = 4, 2, 32, 1e-6
    rng = np.random.default_rng(19)
    angles = np.arange(capacity)[:, None] * rng.uniform(0.01, 1.0, rotary_dim // 2)[None, :]
    table = np.concatenate([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    func = hand_written(
        form,
        lambda target: kernels.attention_func(
            heads,
            kv_heads,
            head_dim,
            capacity,
            "float32",
            target,
            rotary_dim,
            window,
            scale,
            softcap,
            eps if qk_norm else None,
            fused is True,
            () if fused is True else fused,
        ),
    )
    lib = compile_llvm(prim_module(attention=func))
    qkv = rng.standard_normal((1, n, heads + 2 * kv_heads, head_dim)).astype(np.float32)
    norms = [rng.uniform(0.5, 1.5, head_dim).astype(np.float32) for _ in range(2)]
    k_cache = rng.standard_normal((capacity, kv_heads, head_dim)).astype(np.float32)
    v_cache = rng.standard_normal((capacity, kv_heads, head_dim)).astype(np.float32)
    start = total_len - n
    unseen = np.arange(capacity) >= start
    if window:
        unseen |= np.arange(capacity) <= start - window
    k_cache[unseen] = np.nan
    v_cache[unseen] = np.nan
    k, v = tensor(k_cache), tensor(v_cache)
    out = tensor(np.zeros((1, n, heads * head_dim), np.float32))
    weights = [tensor(w) for w in norms] if qk_norm else []
    if fused is True:
        inputs = [qkv]
    else:  # runs of q, k and v, each (1, n, its heads x head_dim)
        counts = [heads, kv_heads, kv_heads]
        ends = np.cumsum(fused)
        bounds = [0] + [sum(counts[:end]) for end in ends]
        inputs = [
            qkv[:, :, a:b].reshape(1, n, -1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    lib["attention"](*(tensor(x) for x in inputs), k, v, tensor(table), *weights, total_len, out)
    positions = np.arange(start, total_len)
    q_norm, k_norm = norms if qk_norm else (None, None)
    queries = prepared_heads(qkv[0, :, :heads], table, positions, q_norm, eps)
    new_keys = prepared_heads(qkv[0, :, heads : heads + kv_heads], table, positions, k_norm, eps)
    expected_k, expected_v = k_cache.astype(np.float64), v_cache.astype(np.float64)
    expected_k[start:total_len] = new_keys
    expected_v[start:total_len] = qkv[0, :, heads + kv_heads :]
    prepared = np.concatenate([queries, qkv[0, :, heads:]], axis=1)[None]
    scores_scale = scale or 1 / math.sqrt(head_dim)
    expected = attention_reference(
        prepared, expected_k, expected_v, total_len, kv_heads, window, scores_scale, softcap
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=ATTENTION_ATOL)
    # The keys: a norm and a rotation, a few roundings of each value's size.
    np.testing.assert_allclose(k.numpy(), expected_k, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(v.numpy(), expected_v.astype(np.float32))


@pytest.mark.parametrize("form", ["cpu", "gpu"])
def test_encoder_attention(form):
    """Bidirectional attention of two padded inputs of lengths 5 and 3 (qkv (2, 5, 3 heads,
    head_dim)): each query sees its input's keys up to its length, never the padding (which
    holds NaN). Rows past an input's length are computed and never read, so not compared."""
    heads, head_dim, n = 3, 16, 5
    lengths = np.array([5, 3], np.int32)
    func = hand_written(
        form, lambda target: kernels.encoder_attention_func(heads, head_dim, "float32", target)
    )
    lib = compile_llvm(prim_module(encoder_attention=func))
    rng = np.random.default_rng(20)
    qkv = rng.standard_normal((2, n, 3 * heads, head_dim)).astype(np.float32)
    qkv[1, 3:] = np.nan
    out = tensor(np.zeros((2, n, heads * head_dim), np.float32))
    lib["encoder_attention"](tensor(qkv), tensor(lengths), out)
    result = out.numpy()
    scale = 1 / math.sqrt(head_dim)
    for s, length in enumerate(lengths):
        keys = qkv[s, :length]
        for i in range(length):
            for h in range(heads):
                q, k, v = keys[i, h], keys[:, heads + h], keys[:, 2 * heads + h]
                expected = softmax_attention(q, k, v, scale, 0.0)
                got = result[s, i, h * head_dim : (h + 1) * head_dim]
                np.testing.assert_allclose(got, expected, rtol=0, atol=ATTENTION_ATOL)


# ---------------------------------------------------------------------------------------------
# the add of a normed branch and the next norm (Gemma's sandwich layers)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("form", ["cpu", "software"])
def test_add_norm(form, rows, dtype):
    """x_out = x + rms_norm(branch, w_branch), normed = rms_norm(x_out, w_next), one kernel
    (models/add_norm.py), on the CPU (the rows in turn) and as the software target writes it (a
    workgroup of one invocation per row, its block loop made a plain loop), with float32 and
    float16 activations; the gpu target's form, whose invocations share a row through
    workgroup memory, runs in Chromium (tests/test_families.py). Reference: float64 numpy on
    the same inputs. Allowed: a float32 sum of `hidden` squares errs by up to hidden / 2
    roundings of its size, relatively, and its reciprocal square root by half that and a few
    more; then a rounding to the activations' dtype of the normed value and of the sum."""
    hidden, eps_branch, eps_next = 640, 1e-6, 1e-5
    target = WASM_TARGET if form == "cpu" else TARGETS["software"]
    func = add_norm.add_norm_func(hidden, dtype, eps_branch, eps_next, target)
    if form != "cpu":
        func = gpu_threads_as_loops(func)
    lib = compile_llvm(prim_module(add_norm=func))
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((1, rows, hidden)) * 3).astype(dtype)
    branch = (rng.standard_normal((1, rows, hidden)) * 50).astype(dtype)
    w_branch, w_next = (1 + rng.standard_normal((2, hidden))).astype(dtype)
    x_out = tensor(np.zeros((1, rows, hidden), dtype))
    normed = tensor(np.zeros((1, rows, hidden), dtype))
    lib["add_norm"](tensor(x), tensor(branch), tensor(w_branch), tensor(w_next), x_out, normed)

    def rms_norm(v: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
        v = v.astype(np.float64)
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps) * w.astype(np.float64)

    relative = (hidden / 2 + 4) * UNIT_ROUNDOFF
    rounding = UNIT_ROUNDOFF if dtype == "float32" else 2.0**-11
    normed_branch = rms_norm(branch, w_branch, eps_branch)
    expected = x.astype(np.float64) + normed_branch
    bound = (relative + rounding) * np.abs(normed_branch) + rounding * np.abs(expected)
    assert np.all(np.abs(x_out.numpy().astype(np.float64) - expected) <= bound)
    # The second norm, of the kernel's own sum.
    expected = rms_norm(x_out.numpy(), w_next, eps_next)
    error = np.abs(normed.numpy().astype(np.float64) - expected)
    assert np.all(error <= (relative + rounding) * np.abs(expected))
