"""Stage 3b: turn a compiled Relax module into what the JS runtime executes, with no VM.

After TVM's GPU passes up to memory planning, each entry function is a straight list of
storage allocations, tensor views, kernel calls and kills. `extract_plan` writes it out as
  storages  - GPU buffers of static size (symbolic sizes taken at their upper bounds),
  launches  - kernel name, bound buffers, POD values and workgroup counts, the last two as
              expressions over the function's symbolic variables (n, total_len),
  outputs   - which buffers hold the results.
Kernel launch geometry comes from the host side of each PrimFunc right after TVM's
SplitHostDevice pass, where every device kernel call carries its launch extents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tvm
from tvm import relax, tirx

Expr = int | str | list  # serialized integer expression: int, variable name, [op, a, b]

_BINOPS = {
    tirx.Add: "+",
    tirx.Sub: "-",
    tirx.Mul: "*",
    tirx.FloorDiv: "//",
    tirx.FloorMod: "%",
    tirx.Min: "min",
    tirx.Max: "max",
}
_FOLD: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
    "min": min,
    "max": max,
}


class PlanError(Exception):
    """The compiled module uses a construct the JS runtime cannot execute."""


def serialize(expr: Any, env: dict[Any, Expr]) -> Expr:
    """A TIR integer expression -> JSON form, replacing variables through `env`."""
    if isinstance(expr, int):
        return expr
    if isinstance(expr, tirx.IntImm):
        return int(expr.value)
    if isinstance(expr, tirx.Var):
        if expr in env:
            return env[expr]
        raise PlanError(f"unbound variable {expr.name} in a launch expression")
    if isinstance(expr, tirx.Cast):
        return serialize(expr.value, env)
    for cls, name in _BINOPS.items():
        if isinstance(expr, cls):
            a, b = serialize(expr.a, env), serialize(expr.b, env)
            if isinstance(a, int) and isinstance(b, int):
                return _FOLD[name](a, b)
            return [name, a, b]
    raise PlanError(f"unsupported expression in a launch: {expr!r}")


def evaluate(expr: Expr, values: dict[str, int]) -> int:
    """Python twin of the runtime's evaluator (used for upper bounds)."""
    if isinstance(expr, int):
        return expr
    if isinstance(expr, str):
        return values[expr]
    op, a, b = expr
    return _FOLD[op](evaluate(a, values), evaluate(b, values))


# ---------------------------------------------------------------------------------------------
# The host-side launch of each PrimFunc


def _buffer_of(arg: Any) -> Any | None:
    if isinstance(arg, tvm.ir.Call) and arg.op.name == "tirx.buffer_data":
        return arg.args[0]
    return None


def host_launches(func: tirx.PrimFunc) -> list[dict[str, Any]]:
    """Kernel calls of one host PrimFunc, with args as ("param", index) or ("expr", PrimExpr)."""
    params = list(func.params)
    declared: dict[Any, Any] = {}  # decl_buffer var -> the buffer its data comes from
    lets: dict[Any, Any] = {}
    launches = []
    body = func.body
    stmts = list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]

    scratch: list[Any] = []  # global buffers the host allocates between two kernels

    def root_param(buf: Any) -> tuple[str, int]:
        while buf not in params:
            if buf in scratch:
                return ("scratch", scratch.index(buf))
            if buf not in declared:
                raise PlanError(f"{func.attrs['global_symbol']}: unknown buffer {buf}")
            buf = declared[buf]
        return ("param", params.index(buf))

    def inline(expr: Any) -> Any:
        return _Inliner(lets).visit(expr)

    for stmt in stmts:
        if isinstance(stmt, tirx.Bind):
            lets[stmt.var] = stmt.value
        elif isinstance(stmt, tirx.DeclBuffer):
            source = _buffer_of(stmt.data)
            if source is None:
                raise PlanError(f"unsupported buffer declaration {stmt.buffer}")
            declared[stmt.buffer] = source
        elif isinstance(stmt, tirx.Evaluate) and isinstance(stmt.value, tvm.ir.Call):
            call = stmt.value
            if call.op.name != "tirx.call_ffi_kernel":
                raise PlanError(f"unsupported host call {call.op.name}")
            tags = list(call.attrs.launch_params)
            args = list(call.args[1:])
            kernel_args, launch_args = args[: len(args) - len(tags)], args[len(args) - len(tags) :]
            refs = []
            for arg in kernel_args:
                buf = _buffer_of(arg)
                refs.append(root_param(buf) if buf is not None else ("expr", inline(arg)))
            launches.append(
                {
                    "kernel": call.args[0].value,
                    "args": refs,
                    "launch": {tag: inline(v) for tag, v in zip(tags, launch_args, strict=True)},
                    "scratch": [([inline(d) for d in b.shape], b.dtype) for b in scratch],
                }
            )
        elif isinstance(stmt, tirx.AllocBuffer):
            scratch.append(stmt.buffer)
        elif isinstance(stmt, tirx.AssertStmt):
            continue
        else:
            name = func.attrs["global_symbol"]
            raise PlanError(f"unsupported host statement {type(stmt).__name__} in {name}")
    return launches


class _Inliner:
    """Replaces let-bound variables by their values (expressions are tiny trees)."""

    def __init__(self, lets: dict[Any, Any]):
        self.lets = lets

    def visit(self, expr: Any) -> Any:
        if isinstance(expr, tirx.Var) and expr in self.lets:
            return self.visit(self.lets[expr])
        for cls in _BINOPS:
            if isinstance(expr, cls):
                return cls(self.visit(expr.a), self.visit(expr.b))
        if isinstance(expr, tirx.Cast):
            return tirx.Cast(expr.dtype, self.visit(expr.value))
        return expr


# ---------------------------------------------------------------------------------------------
# Relax functions -> execution plans


_ALLOC_STORAGE = "relax.memory.alloc_storage"
_ALLOC_TENSOR = "relax.memory.alloc_tensor"
_BUILTIN_ALLOC = "relax.builtin.alloc_tensor"
_KILLS = ("relax.memory.kill_tensor", "relax.memory.kill_storage")
_VIEWS = ("relax.reshape",)


def _shape_of(var: relax.Expr) -> list[Any]:
    return list(var.ty.shape.values)


def extract_plan(
    func: relax.Function,
    launches: dict[str, list[dict[str, Any]]],
    prim_funcs: dict[str, tirx.PrimFunc],
    upper_bounds: dict[str, int],
) -> dict[str, Any]:
    """One Relax entry function -> its execution plan (see module doc)."""
    num_input = int(func.attrs["num_input"])
    env: dict[Any, Expr] = {}  # relax-level symbolic vars -> names
    refs: dict[Any, Any] = {}  # relax var -> buffer reference
    inputs = []
    cache_count = 0
    for index, param in enumerate(func.params):
        ty = param.ty
        if isinstance(ty, relax.ShapeType) or type(ty).__name__ == "ShapeType":
            for value in param.ty.values:
                env[value] = value.name
            inputs.append({"name": param.name, "kind": "int"})
        elif hasattr(ty, "fields"):  # the KV-cache tuple
            refs[param] = [{"cache": cache_count + i} for i in range(len(ty.fields))]
            cache_count += len(ty.fields)
            inputs.append({"name": param.name, "kind": "cache", "count": len(ty.fields)})
        else:
            shape = _shape_of(param)
            for dim in shape:
                if isinstance(dim, tirx.Var):
                    env[dim] = dim.name
            kind = "input" if index < num_input else "param"
            refs[param] = {kind: param.name}
            if kind == "input":
                inputs.append(
                    {
                        "name": param.name,
                        "kind": "tensor",
                        "dtype": str(ty.dtype),
                        "shape": [serialize(d, env) for d in shape],
                    }
                )

    storages: list[int] = []
    plan_launches: list[dict[str, Any]] = []

    def sizeof(shape: list[Any], dtype: str) -> int:
        count = 1
        for dim in shape:
            count *= evaluate(serialize(dim, env), upper_bounds)
        return count * tvm.runtime.DataType(dtype).bits // 8

    def emit_call(callee: str, args: list[Any]) -> None:
        prim = prim_funcs[callee]
        tir_env: dict[Any, Expr] = {}
        buffers: list[Any] = []
        for param, arg in zip(prim.params, args, strict=True):
            if tirx.buffer.is_buffer_var(param):
                buffers.append(refs[arg])
                for dim, value in zip(param.shape, _shape_of(arg), strict=True):
                    if isinstance(dim, tirx.Var) and dim not in tir_env:
                        tir_env[dim] = serialize(value, env)
            else:
                value = arg if tvm.ir.is_prim_expr(arg) else arg.value
                tir_env[param] = serialize(value, env)
                buffers.append(None)
        scratch: list[Any] = []
        for launch in launches[callee]:
            for shape, dtype in launch["scratch"][len(scratch) :]:
                size = 1
                for dim in shape:
                    size *= evaluate(serialize(dim, tir_env), upper_bounds)
                scratch.append({"storage": len(storages)})
                storages.append(size * tvm.runtime.DataType(dtype).bits // 8)
            bound, pods, shapes = [], [], []
            for kind, value in launch["args"]:
                if kind == "param":
                    bound.append(buffers[value])
                    if launch.get("cpu"):
                        shape = prim.params[value].shape
                        shapes.append([serialize(d, tir_env) for d in shape])
                elif kind == "scratch":
                    bound.append(scratch[value])
                else:
                    pods.append(serialize(value, tir_env))
            entry = {"kernel": launch["kernel"], "buffers": bound, "pods": pods}
            if launch.get("cpu"):
                entry["shapes"] = shapes  # the DLTensors' shapes
            else:
                geometry = {tag: serialize(v, tir_env) for tag, v in launch["launch"].items()}
                entry["grid"] = [geometry.get(f"blockIdx.{a}", 1) for a in "xyz"]
            plan_launches.append(entry)

    def resolve(expr: Any) -> Any:
        if isinstance(expr, relax.Tuple):
            return [resolve(f) for f in expr.fields]
        if isinstance(expr, relax.TupleGetItem):
            return resolve(expr.tuple_value)[expr.index]
        return refs[expr]

    for block in func.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                name = value.op.name
                if name == _ALLOC_STORAGE:
                    size = evaluate(serialize(value.args[0].values[0], env), upper_bounds)
                    refs[var] = {"storage": len(storages)}
                    storages.append(size)
                elif name == _ALLOC_TENSOR:
                    offset = int(value.args[1].value)
                    if offset:
                        raise PlanError("tensors at non-zero storage offsets are not supported")
                    refs[var] = refs[value.args[0]]
                elif name == _BUILTIN_ALLOC:
                    refs[var] = {"storage": len(storages)}
                    storages.append(sizeof(list(value.args[0].values), str(value.args[1].value)))
                elif name in _VIEWS:
                    refs[var] = refs[value.args[0]]
                elif name in _KILLS:
                    continue
                else:
                    raise PlanError(f"unsupported operator {name} in {func.attrs['global_symbol']}")
            elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
                emit_call(value.op.name_hint, list(value.args))
            elif isinstance(value, relax.TupleGetItem | relax.Tuple | relax.Var):
                refs[var] = resolve(value)
            else:
                raise PlanError(f"unsupported binding {type(value).__name__}")
    outputs = resolve(func.body.body)
    if isinstance(outputs, dict):  # one output, not a tuple: a list of one all the same
        outputs = [outputs]
    return {
        "inputs": inputs,
        "storages": storages,
        "launches": plan_launches,
        "outputs": outputs,
    }
