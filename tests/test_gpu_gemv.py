"""The gpu kernel set's one-token linears that dlight's GEMV does not take
(compiler/targets/webgpu_gpu/rules.py `Gemv`): the gate/up projection with the MLP's gating as
its epilogue, and a projection that applies its input's RMSNorm itself (models/kernels.py
`Normed`), or computes a sandwich layer's add and norm itself and writes the sum
(models/add_norm.py `AddNormed`), gated or not. Their WGSL, run on the page's adapter, is held
to numpy on weights decoded independently of the formats' TE expressions (tests/cpu_kernels.py
`stored_weight`), weight format by weight format, within test_kernels.py's bounds."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from cpu_kernels import UNIT_ROUNDOFF, op_functions, stored_weight
from kernel_page import as_floats, f32, i32, run_kernel
from test_kernels import (
    COLS,
    NORM_EPS,
    ROWS,
    gated_bound,
    linear_reference,
    linear_tolerance,
)
from tvm import s_tir
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import spec

from compiler.formats import FORMATS
from compiler.models import kernels
from compiler.models.add_norm import AddNormed
from compiler.targets import TARGETS
from compiler.targets.rules import ApplyRules
from compiler.targets.stages import NORM_PARTS, NORM_STAGES
from compiler.targets.webgpu import WEBGPU, build_kernels, kernel_entry
from compiler.targets.webgpu_gpu.rules import ROWS as ROWS_PER_GROUP
from compiler.targets.webgpu_gpu.rules import rules

GPU = TARGETS["gpu"]


def gemv_op(fmt_name: str, activation: str | None, normed: bool, tokens=1) -> tvm.IRModule:
    """One token's gate/up projection gated by `activation` (None: a plain projection of ROWS
    outputs), reading x, or x under an RMSNorm of weight `norm` (`normed`)."""
    fmt = FORMATS[fmt_name]
    params = fmt.parts(2 * ROWS if activation else ROWS, COLS)

    def body(x, p):
        if normed:
            norm = nn.RMSNorm(COLS, -1, NORM_EPS, bias=False)
            norm.weight = p["norm"]
            x = kernels.rms_normed(norm, x, GPU)
            assert isinstance(x, kernels.Normed)
        parts = {k: p[k] for k in params}
        if activation:
            return kernels.gated_linear(x, parts, fmt, ROWS, activation, GPU)
        return kernels.linear(x, parts, fmt, ROWS, "proj", GPU)

    weights = ({"norm": ((COLS,), "float32")} if normed else {}) | params
    return op_functions(body, weights, spec.Tensor([1, tokens, COLS], "float32"))


def add_op(fmt_name: str, activation: str | None, readers: int) -> tvm.IRModule:
    """`readers` linears as gemv_op's reading next_norm(x + branch_norm(branch)) (an
    AddNormed), and the sum, which the first writes."""
    fmt = FORMATS[fmt_name]
    params = fmt.parts(2 * ROWS if activation else ROWS, COLS)

    def body(x, p):
        norms = []
        for name in ("branch_norm", "next_norm"):
            norms.append(nn.RMSNorm(COLS, -1, NORM_EPS, bias=False))
            norms[-1].weight = p[name]
        added = AddNormed(x, p["branch"], *norms, GPU)
        parts = {k: p[k] for k in params}
        ys = [
            kernels.gated_linear(added, parts, fmt, ROWS, activation, GPU)
            if activation
            else kernels.linear(added, parts, fmt, ROWS, "proj", GPU)
            for _ in range(readers)
        ]
        return (*ys, added.residual())

    vectors = {name: ((COLS,), "float32") for name in ("branch_norm", "next_norm")}
    weights = vectors | {"branch": ((1, 1, COLS), "float32")} | params
    return op_functions(body, weights, spec.Tensor([1, 1, COLS], "float32"))


def gemv_kernel(mod: tvm.IRModule, function: str | None = None) -> tuple[dict, list[str]]:
    """The WGSL kernel of `mod`'s one function (or `function`) on the gpu set, and its buffers
    in binding order."""
    if function is not None:
        mod = tvm.IRModule({function: mod[function]})
    record: dict[str, str] = {}
    with tvm.target.Target("webgpu"):
        scheduled = ApplyRules(rules(), record)(mod)
    assert list(record.values()) == ["Gemv"]
    wgsl, _, _ = build_kernels(scheduled, WEBGPU)
    (name,) = wgsl
    order = re.findall(r"@binding\(\d+\) var<storage, [a-z_]+> (\w+)_ptr", wgsl[name])
    return {**kernel_entry(wgsl[name]), "name": name}, order


def rms_norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + NORM_EPS) * weight


CASES = [
    *[("silu", fmt, False) for fmt in ["f32", "q4_1", "q4_k", "q6_k", "q8_0", "q4f32"]],
    *[("gelu_tanh", fmt, False) for fmt in ["f32", "q4_k"]],
    *[("silu", fmt, True) for fmt in ["f32", "q4_1", "q4_k"]],
    *[(None, fmt, True) for fmt in ["f32", "q4_1", "q6_k", "q8_0"]],
]


def test_gemv_matches_numpy(tiny_built, engine_page):
    """Each case's kernel on its random weight and input. The normed input's own roundings
    (a sum of squares, a square root, two products) are a few ulps of each of its values: 8
    unit roundoffs of the products' magnitudes are allowed for them."""
    rng = np.random.default_rng(31)
    cases = []
    for activation, fmt_name, normed in CASES:
        rows = 2 * ROWS if activation else ROWS
        parts, weight = stored_weight(fmt_name, rows, COLS, rng)
        x = rng.standard_normal((1, 1, COLS)).astype(np.float32)
        norm = (1 + 0.2 * rng.standard_normal(COLS)).astype(np.float32)
        kernel, order = gemv_kernel(gemv_op(fmt_name, activation, normed))
        out = "gated" if activation else "proj"
        arrays = {"x": f32(x), "norm": f32(norm), out: f32(np.zeros(ROWS))}
        for part, values in parts.items():
            arrays[part] = f32(values) if values.dtype == np.float32 else i32(values)
        read = rms_norm(x, norm) if normed else x

        def tolerance(x_, w_, read=read, normed=normed):
            bound = linear_tolerance(read, w_)
            if normed:
                bound += 8 * UNIT_ROUNDOFF * (np.abs(read) @ np.abs(w_.astype(np.float64)).T)
            return bound

        if activation:
            want, bound = gated_bound(read, weight, activation, tolerance)
        else:
            want = linear_reference(read, weight)
            bound = tolerance(read, weight) + 4 * UNIT_ROUNDOFF * np.abs(want)
        groups = rows // ROWS_PER_GROUP
        # The one scalar: packGridDimX, the workgroup count less one.
        run = {"bind": {n: n for n in order} | {"out": out}, "pods": [groups - 1]}
        run |= {"groups": groups, "count": ROWS}
        cases.append((kernel, order, arrays, run, want, bound))
    with engine_page(tiny_built("q4f32"), "software") as page:
        for kernel, order, arrays, run, want, bound in cases:
            (found,) = run_kernel(page, kernel, order, arrays, [run])
            assert np.all(np.abs(as_floats(found) - want.ravel()) <= bound.ravel())


@pytest.mark.parametrize("tokens", ["n", 1])
def test_only_one_token_takes_the_epilogue_and_the_norm(tokens):
    """Prefill's products (n tokens) are dlight's, the gating and the norm kernels of their own
    (relax's)."""
    mod = gemv_op("f32", "silu", True, tokens)
    sch = s_tir.Schedule(mod["gate_up_proj"])
    blocks = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    one = tokens == 1
    stages = {*NORM_STAGES, "gate_up_proj", "gated"}
    assert blocks == (stages if one else {"gate_up_proj"})


NORM_ROUNDING = (COLS // NORM_PARTS + NORM_PARTS) / 2 + 4
ADD_CASES = [
    ("gelu_tanh", "q4_k", 1),
    ("gelu_tanh", "f32", 1),
    (None, "q8_0", 1),
    (None, "q6_k", 2),
]


def test_add_norm_prologue_matches_numpy(tiny_built, engine_page):
    """A sandwich layer's add and norm computed by the linears that read the normed sum: each
    case's kernels on random weights and inputs against numpy's s = x + rms_norm(branch) and the
    product of rms_norm(s), the sum written once (by the first linear; a second one reads x and
    the branch again and writes nothing beside its product). Each norm's factor sums its
    squares in COLS / NORM_PARTS terms, then NORM_PARTS partial sums (float32: at most that
    many unit roundoffs of the sum), half of that through the square root, and a few roundings
    more (the mean, the root, the reciprocal, the products): `NORM_ROUNDING` unit roundoffs of
    a normed value; the sum one more of its own; the product's input carries both norms'."""
    rng = np.random.default_rng(37)
    cases = []
    for activation, fmt_name, readers in ADD_CASES:
        rows = 2 * ROWS if activation else ROWS
        parts, weight = stored_weight(fmt_name, rows, COLS, rng)
        x, branch = rng.standard_normal((2, 1, 1, COLS)).astype(np.float32)
        norms = (1 + 0.2 * rng.standard_normal((2, COLS))).astype(np.float32)
        added = x + rms_norm(branch, norms[0])
        read = rms_norm(added, norms[1])
        sum_bound = UNIT_ROUNDOFF * (np.abs(added) + NORM_ROUNDING * np.abs(added - x))

        def tolerance(x_, w_, read=read):
            magnitudes = np.abs(read) @ np.abs(w_.astype(np.float64)).T
            return linear_tolerance(read, w_) + 2 * NORM_ROUNDING * UNIT_ROUNDOFF * magnitudes

        if activation:
            want, bound = gated_bound(read, weight, activation, tolerance)
        else:
            want = linear_reference(read, weight)
            bound = tolerance(read, weight) + 4 * UNIT_ROUNDOFF * np.abs(want)
        mod = add_op(fmt_name, activation, readers)
        functions = sorted(gv.name_hint for gv in mod.get_global_vars())
        assert len(functions) == readers
        out = "gated" if activation else "proj"
        arrays = {
            "x": f32(x),
            "branch": f32(branch),
            "branch_norm": f32(norms[0]),
            "next_norm": f32(norms[1]),
            out: f32(np.zeros(ROWS)),
            "residual": f32(np.zeros(COLS)),
        }
        for part, values in parts.items():
            arrays[part] = f32(values) if values.dtype == np.float32 else i32(values)
        groups = rows // ROWS_PER_GROUP
        for function in functions:
            kernel, order = gemv_kernel(mod, function)
            assert ("residual" in order) == (function == functions[0])
            run = {"bind": {n: n for n in order}, "pods": [groups - 1], "groups": groups}
            runs = [run | {"bind": run["bind"] | {"out": out}, "count": ROWS}]
            if "residual" in order:
                runs.append(run | {"bind": run["bind"] | {"out": "residual"}, "count": COLS})
            cases.append((kernel, order, arrays, runs, [(want, bound), (added, sum_bound)]))
    with engine_page(tiny_built("q4f32"), "software") as page:
        for kernel, order, arrays, runs, wanted in cases:
            found = run_kernel(page, kernel, order, arrays, runs)
            for values, (want, bound) in zip(found, wanted, strict=False):
                assert np.all(np.abs(as_floats(values) - want.ravel()) <= bound.ravel())


@pytest.mark.parametrize("cols", [96, 4096, 3840])
def test_a_prologue_only_where_the_gemv_takes_it(cols):
    """A hidden size that is no multiple of a workgroup's 64 invocations (96), or whose normed
    input would not fit WebGPU's default 16 KB of workgroup memory (4096 float32 values), keeps
    its norm a kernel of its own (relax's rms_norm, before the product); 3840 fits."""
    fmt = FORMATS["q8_0"]
    params = fmt.parts(ROWS, cols)

    def body(x, p):
        norm = nn.RMSNorm(cols, -1, NORM_EPS, bias=False)
        norm.weight = p["norm"]
        normed = kernels.rms_normed(norm, x, GPU)
        return kernels.linear(normed, {k: p[k] for k in params}, fmt, ROWS, "proj", GPU)

    weights = {"norm": ((cols,), "float32")} | params
    mod = op_functions(body, weights, spec.Tensor([1, 1, cols], "float32"))
    sch = s_tir.Schedule(mod["proj"])
    blocks = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    assert (set(NORM_STAGES) <= blocks) == (cols == 3840)
