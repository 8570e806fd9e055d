"""Compile targets: the kernel sets one network is compiled into, a folder each with its
lowering passes and schedule rules.

- `webgpu_software`: WGSL scheduled for adapters that run shaders on the CPU (SwiftShader).
- `webgpu_gpu`: WGSL with dlight's schedules, for real GPUs.
- `wasm`: the CPU backend, WebAssembly with SIMD and threads.

All three share one plan format (plan.py). Ops (models/kernels.py) take the target as an
argument; the stage names that ops and rules agree on are in stages.py."""

from __future__ import annotations

from .base import TOKEN_TILE, Target
from .wasm import TARGET as WASM
from .webgpu_gpu import TARGET as WEBGPU_GPU
from .webgpu_software import TARGET as WEBGPU_SOFTWARE

__all__ = ["TARGETS", "TOKEN_TILE", "Target"]

# By their names in the manifest, in the order the build compiles them.
TARGETS: dict[str, Target] = {t.name: t for t in (WEBGPU_SOFTWARE, WEBGPU_GPU, WASM)}
