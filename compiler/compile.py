"""Stage 3, compile: the network -> kernels + execution plans, through Apache TVM.

One network, compiled for each target (compiler/targets/): WGSL kernels with "software"
schedules (for adapters that run shaders on the CPU) or dlight's "gpu" schedules, and "wasm":
the same network compiled by TVM's LLVM code generator for wasm32 with SIMD and linked into
one WebAssembly module, for browsers with no WebGPU or only an emulated adapter. All three
share one plan format."""

from __future__ import annotations

import dataclasses
from typing import Any

import tvm

from .models.family import Family
from .plan import extract_plan
from .sampling import add_sampling
from .targets import TARGETS, TOKEN_TILE

VARIANTS = list(TARGETS)


@dataclasses.dataclass
class Compiled:
    # name -> {wgsl, workgroup_size, pods} (WebGPU) or {symbol, args} (wasm)
    kernels: dict[str, dict[str, Any]]
    functions: dict[str, dict[str, Any]]  # entry function -> plan
    param_names: list[str]  # weight names in the order of the functions' params
    kv_cache: list[dict[str, Any]]  # {shape, dtype} of each KV-cache tensor, in plan order
    bounds: dict[str, int]  # the largest value of each symbolic size the plans use
    # kernel -> the schedule rule that scheduled it (targets.rules.ApplyRules), for tests
    rules: dict[str, str] = dataclasses.field(default_factory=dict)
    wasm: bytes | None = None  # the linked module of the "wasm" variant


def compile_model(
    family: Family,
    config: Any,
    formats: dict[str, str],
    dtype: str,
    context_window: int,
    prefill_chunk: int,
    variant: str,
) -> Compiled:
    """Compiles for one target by its name (`variant`, a key of `targets.TARGETS`): "software"
    schedules for CPU-backed (fallback) adapters, "gpu" schedules (dlight's) for real GPUs,
    "wasm" for the CPU. `formats` names each weight's storage format, `dtype` the
    activations'."""
    target = TARGETS[variant]
    model = family.network(config, formats, dtype, context_window, target)
    mod, params = model.export_tvm(spec=model.get_default_spec())
    # Activation buffers hold whole token tiles, so the tile rows past n that the software
    # kernels read (and never write back) stay inside their buffers.
    tiled_chunk = -(-prefill_chunk // TOKEN_TILE) * TOKEN_TILE
    bounds = model.upper_bounds(tiled_chunk)
    entry_points = list(model.get_default_spec().method_names)
    if family.task == "chat":  # the greedy tokens picked on the device (sampling.py)
        entry_points += add_sampling(mod, config.vocab_size, target)
    for name in entry_points:
        mod[name] = mod[name].with_attr("tir_var_upper_bound", bounds)
    record: dict[str, str] = {}
    lowered = target.lower(mod, record)
    prim_funcs = {
        gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
    }
    launches, emit = target.emit(lowered, prim_funcs)
    functions = {
        name: extract_plan(lowered[name], launches, prim_funcs, bounds) for name in entry_points
    }
    used = sorted({launch["kernel"] for plan in functions.values() for launch in plan["launches"]})
    cache = [{"shape": [int(d) for d in t.shape], "dtype": t.dtype} for t in model.cache_spec()]
    kernels, module = emit(used)
    names = [name for name, _ in params]
    return Compiled(
        kernels, functions, names, cache, bounds, _rules(record, launches, used), module
    )


def _rules(record: dict[str, str], launches: dict[str, list], used: list[str]) -> dict[str, str]:
    """The rule of each kernel the plans launch: that of the function it was lowered from."""
    of_kernel = {
        launch["kernel"]: record[func] for func, calls in launches.items() for launch in calls
    }
    return {name: of_kernel[name] for name in used}
