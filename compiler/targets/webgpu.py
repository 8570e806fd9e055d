"""What the two WebGPU targets share: TVM's generic GPU pipeline with a target's schedule
rules, stopped after memory planning, and the WGSL of each kernel with its workgroup size and
scalar parameters."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import tvm
from tvm import relax, tirx
from tvm.relax.backend.gpu_generic import pipeline as gpu_pipeline
from tvm.s_tir.dlight.base import ScheduleRule

from ..plan import host_launches
from .base import Emit, Launches
from .rules import ApplyRules

WEBGPU = tvm.target.Target("webgpu", host="llvm")


def lowering(
    rules: Callable[[], list[ScheduleRule]],
) -> Callable[[tvm.IRModule, dict[str, str]], tvm.IRModule]:
    """TVM's generic GPU pipeline with `rules`, stopped after memory planning: the passes after
    it prepare for TVM's VM, whose place the execution plan takes."""

    def lower(mod: tvm.IRModule, record: dict[str, str]) -> tvm.IRModule:
        passes = (
            gpu_pipeline.library_dispatch_passes(WEBGPU)
            + [
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                ApplyRules(rules(), record),
            ]
            + gpu_pipeline.dataflow_lower_passes(WEBGPU)
            + [
                relax.transform.StaticPlanBlockMemory(),
                relax.transform.LowerAllocTensor(),
                relax.transform.KillAfterLastUse(),
                relax.transform.AttachGlobalSymbol(),
            ]
        )
        with WEBGPU:
            return tvm.transform.Sequential(passes)(mod)

    return lower


def emit(lowered: tvm.IRModule, _prim_funcs: dict[str, tirx.PrimFunc]) -> tuple[Launches, Emit]:
    """Builds the kernels to WGSL: each PrimFunc's launches (from its host side), and the
    manifest entry of each kernel the plans use."""
    wgsl, launches, _ = build_kernels(lowered, WEBGPU)

    def entries(used: list[str]) -> tuple[dict[str, dict[str, Any]], None]:
        return {name: kernel_entry(wgsl[name]) for name in used}, None

    return launches, entries


def split_wgsl(source: str) -> dict[str, str]:
    """The webgpu module's source holds every kernel after a `// Function: NAME` header."""
    parts = re.split(r"^// Function: (\S+)\n//-+\n", source, flags=re.M)
    kernels: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if body.strip():
            kernels[name] = body.strip() + "\n"
    return kernels


def build_kernels(mod: tvm.IRModule, target: tvm.target.Target):
    """Compiles every PrimFunc of `mod`; returns (wgsl by kernel, launches by PrimFunc name,
    device PrimFuncs by kernel name)."""
    captured: dict[str, tvm.IRModule] = {}

    @tvm.instrument.pass_instrument
    class _Capture:
        def run_after_pass(self, module, info):
            if info.name.endswith("SplitHostDevice"):
                captured["mod"] = module

    tir_mod = tvm.IRModule(
        {gv: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    )
    with tvm.transform.PassContext(opt_level=3, instruments=[_Capture()]):
        lib = tvm.tirx.build(tir_mod, target=target)
    device = [m for m in lib.imports if m.kind == "webgpu"]
    wgsl = split_wgsl(device[0].inspect_source()) if device else {}
    split = captured["mod"]
    launches, kernels = {}, {}
    for gv, func in split.functions.items():
        if "calling_conv" in func.attrs and int(func.attrs["calling_conv"]) == 2:
            kernels[gv.name_hint] = func
        else:
            launches[gv.name_hint] = host_launches(func)
    return wgsl, launches, kernels


_POD_STRUCT = re.compile(r"struct PODArgs \{(.*?)\}", re.S)
_WORKGROUP = re.compile(r"@workgroup_size\((\d+), (\d+), (\d+)\)")


def storage_buffers(wgsl: str) -> int:
    """The storage buffers a kernel binds."""
    return wgsl.count("var<storage,")


def kernel_entry(wgsl: str) -> dict[str, Any]:
    """A kernel's manifest entry: its WGSL, workgroup size and scalar parameters (PODArgs)."""
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
