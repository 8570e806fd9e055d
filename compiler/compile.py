"""Stage 3, compile: the network -> kernels + execution plans, through Apache TVM.

Three variants of one network: WGSL kernels with "software" schedules (for adapters that run
shaders on the CPU) or dlight's "gpu" schedules, and "wasm": the same network compiled by
TVM's LLVM code generator for wasm32 with SIMD and linked into one WebAssembly module, for
browsers with no WebGPU or only an emulated adapter. All three share one plan format."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any

import tvm
from tvm import relax, s_tir
from tvm.relax.backend.gpu_generic import pipeline as gpu_pipeline

from . import wasm
from .models import cpu_linear
from .models import kernels as model_kernels
from .models.family import Family
from .plan import build_kernels, cpu_launches, extract_plan
from .schedules import TOKEN_TILE, ApplyRules, cpu_rules, gpu_rules, software_rules

TARGET = tvm.target.Target("webgpu", host="llvm")
# fast-math-contract lets LLVM fuse a multiply and an add into relaxed SIMD's fused
# multiply-add (one instruction where the CPU has FMA, else the two); nothing else of fast math.
WASM_TARGET = tvm.target.Target(
    {
        "kind": "llvm",
        "mtriple": "wasm32-unknown-unknown-wasm",
        "mattr": wasm.FEATURES,
        "fast-math-contract": True,
    }
)
GPU_VARIANTS = {"software": software_rules, "gpu": gpu_rules}
VARIANTS = [*GPU_VARIANTS, "wasm"]


@dataclasses.dataclass
class Compiled:
    # name -> {wgsl, workgroup_size, pods} (WebGPU) or {symbol, args} (wasm)
    kernels: dict[str, dict[str, Any]]
    functions: dict[str, dict[str, Any]]  # entry function -> plan
    param_names: list[str]  # weight names in the order of the functions' params
    kv_cache: list[dict[str, Any]]  # {shape, dtype} of each KV-cache tensor, in plan order
    bounds: dict[str, int]  # the largest value of each symbolic size the plans use
    # kernel -> the schedule rule that scheduled it (schedules.ApplyRules), for tests
    rules: dict[str, str] = dataclasses.field(default_factory=dict)
    wasm: bytes | None = None  # the linked module of the "wasm" variant


def _lower(mod: tvm.IRModule, rules: list[Any], record: dict[str, str]) -> tvm.IRModule:
    """TVM's generic GPU pipeline with our schedule rules, stopped after memory planning:
    the passes after it prepare for TVM's VM, whose place the execution plan takes."""
    passes = (
        gpu_pipeline.library_dispatch_passes(TARGET)
        + [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            ApplyRules(rules, record),
        ]
        + gpu_pipeline.dataflow_lower_passes(TARGET)
        + [
            relax.transform.StaticPlanBlockMemory(),
            relax.transform.LowerAllocTensor(),
            relax.transform.KillAfterLastUse(),
            relax.transform.AttachGlobalSymbol(),
        ]
    )
    with TARGET:
        return tvm.transform.Sequential(passes)(mod)


def _lower_cpu(mod: tvm.IRModule, record: dict[str, str]) -> tvm.IRModule:
    """The same passes for a CPU target: our CPU schedules for matmul-like kernels, TVM's
    default loops for the rest."""
    passes = [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        ApplyRules(cpu_rules(), record),
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.AttachGlobalSymbol(),
    ]
    with WASM_TARGET:
        return tvm.transform.Sequential(passes)(mod)


def _compact_tiles(mod: tvm.IRModule) -> tvm.IRModule:
    """Sizes each local buffer for the whole region its loops touch. TVM's default lowering
    caps a buffer at its declared shape, so a prefill register tile over the symbolic token
    axis would become min(n, tile) wide, a dynamic size the registers cannot hold (and
    overrun by the tile's rows past n); these passes, run first, size it for the tile.
    Kernels written with vector types (`cpu_linear`) keep their buffers as declared (the
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
        (typed if func.attrs and func.attrs.get(cpu_linear.VECTOR_TYPED) else rest)[gv] = func
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


_POD_STRUCT = re.compile(r"struct PODArgs \{(.*?)\}", re.S)
_WORKGROUP = re.compile(r"@workgroup_size\((\d+), (\d+), (\d+)\)")


def _kernel_entry(name: str, wgsl: str) -> dict[str, Any]:
    pods = []
    match = _POD_STRUCT.search(wgsl)
    if match:
        for line in match.group(1).split(","):
            if ":" in line:
                field, kind = (s.strip() for s in line.split(":"))
                pods.append({"name": field, "type": kind})
    size = _WORKGROUP.search(wgsl)
    return {
        "wgsl": wgsl,
        "workgroup_size": [int(g) for g in size.groups()] if size else [1, 1, 1],
        "pods": pods,
    }


def compile_model(
    family: Family,
    config: Any,
    formats: dict[str, str],
    dtype: str,
    context_window: int,
    prefill_chunk: int,
    variant: str,
) -> Compiled:
    """Compiles one variant: "software" schedules for CPU-backed (fallback) adapters, "gpu"
    schedules (dlight's) for real GPUs, "wasm" for the CPU. `formats` names each weight's
    storage format, `dtype` the activations'."""
    with model_kernels.for_cpu() if variant == "wasm" else contextlib.nullcontext():
        model = family.network(config, formats, dtype, context_window)
        mod, params = model.export_tvm(spec=model.get_default_spec())
    # Activation buffers hold whole token tiles, so the tile rows past n that the software
    # kernels read (and never write back) stay inside their buffers.
    tiled_chunk = -(-prefill_chunk // TOKEN_TILE) * TOKEN_TILE
    bounds = model.upper_bounds(tiled_chunk)
    entry_points = list(model.get_default_spec().method_names)
    for name in entry_points:
        mod[name] = mod[name].with_attr("tir_var_upper_bound", bounds)
    record: dict[str, str] = {}
    if variant == "wasm":
        lowered = _lower_cpu(mod, record)
    else:
        lowered = _lower(mod, GPU_VARIANTS[variant](), record)
    prim_funcs = {
        gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
    }
    if variant == "wasm":
        launches = cpu_launches(prim_funcs)
    else:
        wgsl, launches, _ = build_kernels(lowered, TARGET)
    functions = {
        name: extract_plan(lowered[name], launches, prim_funcs, bounds) for name in entry_points
    }
    used = sorted({launch["kernel"] for plan in functions.values() for launch in plan["launches"]})
    cache = [{"shape": [int(d) for d in t.shape], "dtype": t.dtype} for t in model.cache_spec()]
    names = [name for name, _ in params]
    if variant != "wasm":
        kernels = {name: _kernel_entry(name, wgsl[name]) for name in used}
        return Compiled(kernels, functions, names, cache, bounds, _rules(record, launches, used))
    entries = {name: _wasm_entry(prim_funcs[name]) for name in used}
    kernels_mod = _compact_tiles(tvm.IRModule({n: prim_funcs[n] for n in used}))
    with tvm.transform.PassContext(opt_level=3):
        lib = tvm.tirx.build(kernels_mod, target=WASM_TARGET)
    module = wasm.link(lib, [entry["symbol"] for entry in entries.values()])
    rules = _rules(record, launches, used)
    return Compiled(entries, functions, names, cache, bounds, rules, module)


def _rules(record: dict[str, str], launches: dict[str, list], used: list[str]) -> dict[str, str]:
    """The rule of each kernel the plans launch: that of the function it was lowered from."""
    of_kernel = {
        launch["kernel"]: record[func] for func, calls in launches.items() for launch in calls
    }
    return {name: of_kernel[name] for name in used}
