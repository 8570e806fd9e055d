"""compiler/plan.py alone: its integer expressions (serialize, evaluate, and the error for what
the runtime cannot evaluate), the kernel launches it reads from a host function
(`host_launches`), and the plan it extracts (`extract_plan`) from a small Relax module lowered
as compile.py lowers a network, for the CPU target and a WebGPU one. The CPU plan is also run
here, kernel by kernel on buffers laid out as it says, against numpy: a wrong storage reuse or
launch order gives wrong numbers."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest
import tvm
from cpu_kernels import compile_llvm, prim_module, tensor
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op, spec
from tvm.script import tirx as T

from compiler.plan import PlanError, evaluate, extract_plan, serialize
from compiler.targets import TARGETS
from compiler.targets.webgpu import WEBGPU, build_kernels

# ---------------------------------------------------------------------------------------------
# Integer expressions

N = tirx.Var("n", "int64")
TOTAL = tirx.Var("total_len", "int64")
ENV = {N: "n", TOTAL: "total_len"}


def c(value: int) -> tirx.IntImm:
    return tirx.IntImm("int64", value)


# (TIR expression, the same in Python). FloorDiv and FloorMod round toward minus infinity, as
# Python's // and % do; the cases reach negative operands on purpose.
EXPRESSIONS = {
    "sum": (tirx.Add(N, TOTAL), lambda n, t: n + t),
    "difference": (tirx.Sub(TOTAL, N), lambda n, t: t - n),
    "product": (tirx.Mul(N, c(2304)), lambda n, t: n * 2304),
    "ceil-div": (tirx.FloorDiv(tirx.Add(N, c(63)), c(64)), lambda n, t: (n + 63) // 64),
    "negative-floordiv": (tirx.FloorDiv(tirx.Sub(N, c(7)), c(4)), lambda n, t: (n - 7) // 4),
    "negative-floormod": (tirx.FloorMod(tirx.Sub(N, TOTAL), c(3)), lambda n, t: (n - t) % 3),
    "min": (tirx.Min(N, c(8)), lambda n, t: min(n, 8)),
    "max": (tirx.Max(tirx.Sub(TOTAL, N), c(0)), lambda n, t: max(t - n, 0)),
    "window": (
        tirx.Max(tirx.Sub(tirx.Sub(TOTAL, N), c(511)), c(0)),
        lambda n, t: max(t - n - 511, 0),
    ),
    "cast": (tirx.Cast("int32", tirx.Mul(N, c(3))), lambda n, t: n * 3),
    "nested": (
        tirx.Mul(tirx.FloorDiv(tirx.Add(tirx.Min(N, TOTAL), c(3)), c(4)), c(4)),
        lambda n, t: (min(n, t) + 3) // 4 * 4,
    ),
}


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_expression_round_trip(name):
    """serialize then evaluate gives the expression's value, for every n and total_len of a
    grid, through JSON (as the manifest carries it)."""
    expr, python = EXPRESSIONS[name]
    serialized = json.loads(json.dumps(serialize(expr, ENV)))
    for n, total in itertools.product(range(0, 10), range(0, 1030, 43)):
        assert evaluate(serialized, {"n": n, "total_len": total}) == python(n, total), (n, total)


def test_constants_fold():
    """Operations on constants are folded: the runtime gets a number, not a tree."""
    assert serialize(tirx.Mul(c(3), tirx.Add(c(4), c(5))), ENV) == 27
    assert serialize(tirx.FloorDiv(c(-7), c(2)), ENV) == -4
    assert serialize(tirx.Add(N, tirx.Mul(c(2), c(3))), ENV) == ["+", "n", 6]
    assert serialize(12, ENV) == 12


def test_variables_are_renamed_through_the_environment():
    """A kernel's own variable is written as the plan's name for it (here an expression)."""
    m = tirx.Var("m", "int64")
    assert serialize(tirx.Add(m, c(1)), {m: ["*", 2, "n"]}) == ["+", ["*", 2, "n"], 1]


def test_unbound_variable_is_a_plan_error():
    m = tirx.Var("m", "int64")
    with pytest.raises(PlanError, match="unbound variable m"):
        serialize(tirx.Add(N, m), ENV)


@pytest.mark.parametrize(
    "expr",
    [tirx.Div(N, c(2)), tirx.Select(tirx.LT(N, c(2)), N, c(2))],
    ids=["truncating-division", "select"],
)
def test_unsupported_expression_is_a_plan_error(expr):
    """Operators the runtime's evaluator lacks are refused, not written out wrongly."""
    with pytest.raises(PlanError, match="unsupported expression"):
        serialize(expr, ENV)


# ---------------------------------------------------------------------------------------------
# host_launches


@T.prim_func
def _scaled_copy(var_a: T.handle, var_b: T.handle, factor: T.float32):
    T.func_attr({"tirx.noalias": True, "global_symbol": "scaled_copy"})
    m = T.int64()
    a = T.match_buffer(var_a, (m,), "float32")
    b = T.match_buffer(var_b, (m,), "float32")
    for bx in T.thread_binding((m + 63) // 64, thread="blockIdx.x"):
        for tx in T.thread_binding(64, thread="threadIdx.x"):
            if bx * 64 + T.Cast("int64", tx) < m:
                b[bx * 64 + T.Cast("int64", tx)] = a[bx * 64 + T.Cast("int64", tx)] * factor


def test_host_launches_of_a_webgpu_kernel():
    """A kernel whose launch is known (a block of 64 threads per 64 elements): its host
    function gives one launch of the device kernel, buffers as indices of the host function's
    parameters, scalars as expressions, and the grid as an expression of the length."""
    _, launches, kernels = build_kernels(prim_module(scaled_copy=_scaled_copy), WEBGPU)
    (launch,) = launches["scaled_copy"]
    assert launch["kernel"] in kernels and launch["scratch"] == []
    buffers = [value for kind, value in launch["args"] if kind == "param"]
    assert sorted(buffers) == [0, 1]
    scalars = [value for kind, value in launch["args"] if kind == "expr"]
    m = _scaled_copy.params[0].shape[0]
    env = {m: "m", _scaled_copy.params[2]: "factor"}
    assert "factor" in [serialize(s, env) for s in scalars]
    grid = serialize(launch["launch"]["blockIdx.x"], env)
    for length in (1, 63, 64, 65, 4096):
        assert evaluate(grid, {"m": length}) == -(-length // 64)
    assert serialize(launch["launch"]["threadIdx.x"], env) == 64


# ---------------------------------------------------------------------------------------------
# extract_plan

HIDDEN, INNER = 8, 16
UPPER = 12  # the upper bound of n the plan is sized for


def scale_by_position(k: nn.Tensor, total_len: tirx.Var) -> nn.Tensor:
    """k[0, i, c] times its position total_len - n + i: an op with a scalar argument."""

    def compute(kt: te.Tensor, total: tirx.Var) -> te.Tensor:
        seq = kt.shape[1]
        return te.compute(
            kt.shape,
            lambda b, i, j: kt[b, i, j] * tirx.Cast("float32", total - seq + i),
            name="scaled",
        )

    return op.tensor_expr_op(compute, "scale_by_position", [k, total_len])


class Chain(nn.Module):
    """Four matmuls in a row, the third scaled by position: three activations of n x 16 are
    alive two at a time, so memory planning gives two storages and reuses the first."""

    def __init__(self) -> None:
        self.w1 = nn.Parameter((HIDDEN, INNER), "float32")
        self.w2 = nn.Parameter((INNER, INNER), "float32")
        self.w3 = nn.Parameter((INNER, INNER), "float32")
        self.w4 = nn.Parameter((INNER, HIDDEN), "float32")

    def forward(self, x: nn.Tensor, total_len: tirx.Var) -> nn.Tensor:
        h = op.matmul(x, self.w1)
        g = op.matmul(h, self.w2)
        k = scale_by_position(op.matmul(g, self.w3), total_len)
        return op.matmul(k, self.w4)


def reference(x: np.ndarray, weights: dict[str, np.ndarray], total_len: int) -> np.ndarray:
    w = {name: a.astype(np.float64) for name, a in weights.items()}
    n = x.shape[1]
    positions = np.arange(total_len - n, total_len, dtype=np.float64)[None, :, None]
    return (x.astype(np.float64) @ w["w1"] @ w["w2"] @ w["w3"] * positions) @ w["w4"]


def lowered_chain(
    target_name: str, upper: int = UPPER
) -> tuple[tvm.IRModule, dict[str, Any], dict[str, Any]]:
    """The module lowered for a target as compile.py does (n's upper bound given to memory
    planning), its PrimFuncs, and its launches."""
    spec_ = {"forward": {"x": spec.Tensor([1, "n", HIDDEN], "float32"), "total_len": spec.Int()}}
    mod, _ = Chain().export_tvm(spec=spec_)
    mod["forward"] = mod["forward"].with_attr("tir_var_upper_bound", {"n": upper})
    target = TARGETS[target_name]
    lowered = target.lower(mod, {})
    prim_funcs = {
        gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tirx.PrimFunc)
    }
    launches, _ = target.emit(lowered, prim_funcs)
    return lowered, prim_funcs, launches


@pytest.fixture(scope="module")
def cpu_chain():
    lowered, prim_funcs, launches = lowered_chain("wasm")
    plan = extract_plan(lowered["forward"], launches, prim_funcs, {"n": UPPER})
    return plan, prim_funcs


@pytest.fixture(scope="module")
def gpu_chain():
    lowered, prim_funcs, launches = lowered_chain("software")
    plan = extract_plan(lowered["forward"], launches, prim_funcs, {"n": UPPER})
    return plan, launches


ACTIVATION = UPPER * INNER * 4  # bytes of an n x 16 float32 activation at n's upper bound
OUTPUT = UPPER * HIDDEN * 4


def test_cpu_plan(cpu_chain):
    """The plan of the CPU target: the token ids' place taken by x and the int total_len;
    storages at n's upper bound (two activations and the output); the kernels in the order the
    network calls them, each with its buffers and their shapes (for the DLTensors), the
    scalar as an expression; the first storage reused once its tensor is dead; one output."""
    plan, _ = cpu_chain
    assert plan["inputs"] == [
        {"name": "x", "kind": "tensor", "dtype": "float32", "shape": [1, "n", HIDDEN]},
        {"name": "total_len", "kind": "int"},
    ]
    assert plan["storages"] == [ACTIVATION, ACTIVATION, OUTPUT]
    first, second, third, fourth = plan["launches"]
    assert first["buffers"] == [{"input": "x"}, {"param": "w1"}, {"storage": 0}]
    assert second["buffers"] == [{"storage": 0}, {"param": "w2"}, {"storage": 1}]
    assert third["buffers"] == [{"storage": 1}, {"param": "w3"}, {"storage": 0}]  # reused
    assert fourth["buffers"] == [{"storage": 0}, {"param": "w4"}, {"storage": 2}]
    assert [launch["pods"] for launch in plan["launches"]] == [[], [], ["total_len"], []]
    assert first["shapes"] == [[1, "n", HIDDEN], [HIDDEN, INNER], [1, "n", INNER]]
    assert third["shapes"][0] == third["shapes"][2] == [1, "n", INNER]
    assert fourth["shapes"][2] == [1, "n", HIDDEN]
    assert plan["outputs"] == [{"storage": 2}]
    assert "grid" not in first


def test_storages_follow_the_upper_bound():
    """Built for another upper bound (memory planning's, and the plan's for the sizes left
    symbolic, the output's), every storage scales with it."""
    lowered, prim_funcs, launches = lowered_chain("wasm", 3 * UPPER)
    plan = extract_plan(lowered["forward"], launches, prim_funcs, {"n": 3 * UPPER})
    assert plan["storages"] == [3 * ACTIVATION, 3 * ACTIVATION, 3 * OUTPUT]


def run_cpu_plan(plan, prim_funcs, lib, x, weights, total_len) -> np.ndarray:
    """Runs a CPU plan as the wasm executor does: every storage and input allocated once at
    the upper bounds, each kernel given views of the shapes the plan says, scalars evaluated."""
    values = {"n": x.shape[1], "total_len": total_len}
    storages = [tvm.runtime.empty((size,), "uint8") for size in plan["storages"]]
    whole_x = np.zeros((1, UPPER, HIDDEN), np.float32)
    whole_x[:, : x.shape[1]] = x
    sources = {("input", "x"): tensor(whole_x)}
    sources.update({("param", name): tensor(a) for name, a in weights.items()})

    def view(ref: dict[str, Any], shape: list[Any], dtype: str) -> Any:
        dims = [evaluate(d, values) for d in shape]
        ((kind, key),) = ref.items()
        source = storages[key] if kind == "storage" else sources[(kind, key)]
        return source._create_view(dims, dtype)

    for launch in plan["launches"]:
        func = prim_funcs[launch["kernel"]]
        buffers = iter(zip(launch["buffers"], launch["shapes"], strict=True))
        pods = iter(launch["pods"])
        args = []
        for param in func.params:
            if tirx.buffer.is_buffer_var(param):
                ref, shape = next(buffers)
                args.append(view(ref, shape, str(param.dtype)))
            else:
                args.append(evaluate(next(pods), values))
        lib[launch["kernel"]](*args)
    return view(plan["outputs"][0], [1, "n", HIDDEN], "float32").numpy()


def test_cpu_plan_runs(cpu_chain):
    """The plan run with its kernels (the wasm target's schedules compiled for this CPU) gives
    the network's output, for one token, a partial token tile and the upper bound."""
    plan, prim_funcs = cpu_chain
    lib = compile_llvm(tvm.IRModule(prim_funcs))
    rng = np.random.default_rng(30)
    weights = {
        "w1": rng.standard_normal((HIDDEN, INNER)),
        "w2": rng.standard_normal((INNER, INNER)) / 4,
        "w3": rng.standard_normal((INNER, INNER)) / 4,
        "w4": rng.standard_normal((INNER, HIDDEN)),
    }
    weights = {name: a.astype(np.float32) for name, a in weights.items()}
    for n, total_len in ((1, 9), (5, 5), (UPPER, 20)):
        x = rng.standard_normal((1, n, HIDDEN)).astype(np.float32)
        out = run_cpu_plan(plan, prim_funcs, lib, x, weights, total_len)
        expected = reference(x, weights, total_len)
        # Four float32 products of 8 or 16 terms in a row: each rounds at about 1e-7 of its
        # terms' size, which the products grow by at most the positions (20); 1e-4 of the
        # output's scale leaves a wide margin and still fails a misplaced buffer outright.
        scale = np.abs(expected).max()
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4 * scale)


def test_gpu_plan(cpu_chain, gpu_chain):
    """The plan of a WebGPU target for the same module: the same inputs, storages and outputs
    (memory planning precedes the schedules); each launch binds the same buffers as the CPU
    plan's (in the device kernel's own order) and gives its scalars and workgroup grid as
    expressions of n and total_len that equal the host function's, with the kernel's
    variables set to the plan's."""
    cpu_plan, _ = cpu_chain
    plan, launches = gpu_chain
    assert plan["inputs"] == cpu_plan["inputs"]
    assert plan["storages"] == cpu_plan["storages"]
    assert plan["outputs"] == cpu_plan["outputs"]
    assert len(plan["launches"]) == len(cpu_plan["launches"])
    by_kernel = {launch["kernel"]: launch for calls in launches.values() for launch in calls}
    for gpu, cpu in zip(plan["launches"], cpu_plan["launches"], strict=True):
        assert gpu["kernel"] == cpu["kernel"] + "_kernel"
        assert sorted(map(json.dumps, gpu["buffers"])) == sorted(map(json.dumps, cpu["buffers"]))
        assert len(gpu["grid"]) == 3 and gpu["grid"][1:] == [1, 1]
        host = by_kernel[gpu["kernel"]]
        variables = {
            v: v.name
            for arg in [*host["launch"].values(), *(a for k, a in host["args"] if k == "expr")]
            for v in _variables(arg)
        }
        for n, total_len in ((1, 1), (5, 9), (UPPER, UPPER)):
            values = {"n": n, "total_len": total_len}
            blocks = evaluate(serialize(host["launch"]["blockIdx.x"], variables), values)
            assert evaluate(gpu["grid"][0], values) == blocks >= 1
            pods = [serialize(a, variables) for k, a in host["args"] if k == "expr"]
            assert [evaluate(p, values) for p in gpu["pods"]] == [evaluate(p, values) for p in pods]
    assert any("total_len" in json.dumps(launch["pods"]) for launch in plan["launches"])


def _variables(expr: Any) -> list[tirx.Var]:
    """The variables of an integer expression (the host function's own n and total_len, which
    the plan must have renamed to the Relax function's)."""
    if isinstance(expr, tirx.Var):
        return [expr]
    if isinstance(expr, tirx.Cast):
        return _variables(expr.value)
    if hasattr(expr, "a") and hasattr(expr, "b"):
        return _variables(expr.a) + _variables(expr.b)
    return []
