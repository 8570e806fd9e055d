"""The "wasm" target's lowering: the generic passes with our CPU schedule rules, and its kernels
compiled by TVM's LLVM code generator for wasm32 with SIMD, linked into one WebAssembly module."""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax, s_tir, tirx

from .. import rules as applying
from ..base import Emit, Launches
from ..stages import VECTOR_TYPED
from . import link
from .rules import rules

# fast-math-contract lets LLVM fuse a multiply and an add into relaxed SIMD's fused
# multiply-add (one instruction where the CPU has FMA, else the two); nothing else of fast math.
WASM = tvm.target.Target(
    {
        "kind": "llvm",
        "mtriple": "wasm32-unknown-unknown-wasm",
        "mattr": link.FEATURES,
        "fast-math-contract": True,
    }
)


def lower(mod: tvm.IRModule, record: dict[str, str]) -> tvm.IRModule:
    """The passes of the WebGPU targets for a CPU: our CPU schedules for matmul-like and
    element-wise kernels, TVM's default loops for the rest."""
    passes = [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        applying.ApplyRules(rules(), record),
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.AttachGlobalSymbol(),
    ]
    with WASM:
        return tvm.transform.Sequential(passes)(mod)


def emit(_lowered: tvm.IRModule, prim_funcs: dict[str, tirx.PrimFunc]) -> tuple[Launches, Emit]:
    """Each PrimFunc is one kernel; the ones the plans use are compiled and linked."""

    def entries(used: list[str]) -> tuple[dict[str, dict[str, Any]], bytes]:
        found = {name: _wasm_entry(prim_funcs[name]) for name in used}
        kernels = _compact_tiles(tvm.IRModule({name: prim_funcs[name] for name in used}))
        with tvm.transform.PassContext(opt_level=3):
            lib = tvm.tirx.build(kernels, target=WASM)
        return found, link.link(lib, [entry["symbol"] for entry in found.values()])

    return cpu_launches(prim_funcs), entries


def cpu_launches(prim_funcs: dict[str, tirx.PrimFunc]) -> dict[str, list[dict[str, Any]]]:
    """On a CPU target a PrimFunc is one kernel, called with all its parameters: tensors
    (with their shapes, for the DLTensors the runtime passes) and scalars."""
    launches = {}
    for name, func in prim_funcs.items():
        args = [
            ("param", i) if tirx.buffer.is_buffer_var(param) else ("expr", param)
            for i, param in enumerate(func.params)
        ]
        launches[name] = [{"kernel": name, "args": args, "launch": {}, "scratch": [], "cpu": True}]
    return launches


def _compact_tiles(mod: tvm.IRModule) -> tvm.IRModule:
    """Sizes each local buffer for the whole region its loops touch. TVM's default lowering
    caps a buffer at its declared shape, so a prefill register tile over the symbolic token
    axis would become min(n, tile) wide, a dynamic size the registers cannot hold (and
    overrun by the tile's rows past n); these passes, run first, size it for the tile.
    Kernels written with vector types (`integer_linear`) keep their buffers as declared (the
    compaction rewrites a vector index into a form the lowering refuses)."""
    passes = [
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(is_strict=False),
    ]
    typed: dict[tvm.ir.GlobalVar, Any] = {}
    rest: dict[tvm.ir.GlobalVar, Any] = {}
    for gv, func in mod.functions.items():
        (typed if func.attrs and func.attrs.get(VECTOR_TYPED) else rest)[gv] = func
    compacted = tvm.transform.Sequential(passes)(tvm.IRModule(rest))
    for gv, func in typed.items():
        compacted[gv] = func
    return compacted


def _wasm_entry(func: tvm.tirx.PrimFunc) -> dict[str, Any]:
    """How the runtime calls a kernel: TVM's packed calling convention, one argument per
    parameter (a DLTensor of `dtype` and `ndim`, or a scalar)."""
    args: list[dict[str, Any]] = []
    for param in func.params:
        if tvm.tirx.buffer.is_buffer_var(param):
            args.append({"dtype": str(param.dtype), "ndim": len(param.shape)})
        else:
            args.append({"scalar": str(param.ty.dtype)})
    return {"symbol": f"__tvm_ffi_{func.attrs['global_symbol']}", "args": args}
