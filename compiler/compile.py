"""Stage 3, compile: the network -> WGSL kernels + execution plans, through Apache TVM."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import tvm
from tvm import relax
from tvm.relax.backend.gpu_generic import pipeline as gpu_pipeline
from tvm.s_tir import dlight as dl

from .models.family import Family
from .plan import build_kernels, extract_plan
from .schedules import TOKEN_TILE, gpu_rules, software_rules

TARGET = tvm.target.Target("webgpu", host="llvm")
VARIANTS = {"software": software_rules, "gpu": gpu_rules}


@dataclasses.dataclass
class Compiled:
    kernels: dict[str, dict[str, Any]]  # name -> {wgsl, workgroup_size, pods}
    functions: dict[str, dict[str, Any]]  # entry function -> plan
    param_names: list[str]  # weight names in the order of the functions' params
    kv_cache: list[dict[str, Any]]  # {shape, dtype} of each KV-cache tensor, in plan order


def _lower(mod: tvm.IRModule, rules: list[Any]) -> tvm.IRModule:
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
            dl.ApplyDefaultSchedule(*rules),
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
    schedules (dlight's) for real GPUs. `formats` names each weight's storage format, `dtype`
    the activations'."""
    model = family.network(config, formats, dtype, context_window)
    mod, params = model.export_tvm(spec=model.get_default_spec())
    # Activation buffers hold whole token tiles, so the tile rows past n that the software
    # kernels read (and never write back) stay inside their buffers.
    tiled_chunk = -(-prefill_chunk // TOKEN_TILE) * TOKEN_TILE
    bounds = {"n": tiled_chunk, "total_len": context_window}
    for name in ("prefill", "decode"):
        mod[name] = mod[name].with_attr("tir_var_upper_bound", bounds)
    lowered = _lower(mod, VARIANTS[variant]())
    wgsl, launches, _ = build_kernels(lowered, TARGET)
    prim_funcs = {
        gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
    }
    functions = {
        name: extract_plan(lowered[name], launches, prim_funcs, bounds)
        for name in ("prefill", "decode")
    }
    used = {launch["kernel"] for plan in functions.values() for launch in plan["launches"]}
    kernels = {name: _kernel_entry(name, wgsl[name]) for name in sorted(used)}
    cache = [{"shape": [int(d) for d in t.shape], "dtype": t.dtype} for t in model.cache_spec()]
    return Compiled(kernels, functions, [name for name, _ in params], cache)
