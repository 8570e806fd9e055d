"""Running the kernels of compiler/models/kernels.py on this machine's CPU, for
tests/test_kernels.py, with no browser:

- an op's PrimFuncs, taken from a one-op Relax module (`op_functions`), compiled for `llvm` as
  the op defines them (what the GPU targets schedule) or after the wasm target's schedule
  rules (`schedule_cpu`: the rules match any target whose keys include "cpu", so they apply
  to the native one too);
- a GPU target's hand-written kernel with its block and thread loops made plain loops
  (`gpu_threads_as_loops`), which is the same computation where invocations never meet
  (no barriers, no shared memory);
- kernels written with WebAssembly intrinsics built for wasm32, linked as the build links them,
  and called under Node (`run_wasm`, tests/wasm_kernels.mjs);
- weights of every format from an independent decoder (`stored_weight`).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from gguf import GGMLQuantizationType, quantize
from tiny_gguf import random_k_quant_blocks
from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import spec

from compiler.formats import FORMATS, STORED, StoredBlocks
from compiler.targets.rules import ApplyRules
from compiler.targets.wasm import link
from compiler.targets.wasm.lowering import WASM, _compact_tiles
from compiler.targets.wasm.rules import rules

NODE_SCRIPT = Path(__file__).with_name("wasm_kernels.mjs")
UNIT_ROUNDOFF = 2.0**-24  # of float32

Params = dict[str, tuple[tuple[int, ...], str]]


class _Op(nn.Module):
    """One op over an input `x`, its weights as parameters."""

    def __init__(self, params: Params, body: Callable[..., nn.Tensor]) -> None:
        self._names = list(params)
        for name, (shape, dtype) in params.items():
            setattr(self, name, nn.Parameter(shape, dtype))
        self._body = body

    def weights(self) -> dict[str, nn.Tensor]:
        return {name: getattr(self, name) for name in self._names}

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self._body(x, self.weights())


class _OpWithLength(_Op):
    """One op over `x` and the cache length `total_len` (a symbolic scalar)."""

    def forward(self, x: nn.Tensor, total_len: tirx.Var) -> nn.Tensor:  # type: ignore[override]
        return self._body(x, self.weights(), total_len)


def op_functions(
    body: Callable[..., nn.Tensor], params: Params, x: spec.Tensor, with_length: bool = False
) -> tvm.IRModule:
    """The PrimFuncs of `body(x, weights[, total_len])` as the op emits them, by name, each
    with its name as its symbol."""
    module = (_OpWithLength if with_length else _Op)(params, body)
    inputs: dict[str, Any] = {"x": x, "total_len": spec.Int()} if with_length else {"x": x}
    mod, _ = module.export_tvm(spec={"forward": inputs})
    return tvm.IRModule(
        {
            gv.name_hint: func.with_attr("global_symbol", gv.name_hint)
            for gv, func in mod.functions_items()
            if isinstance(func, tirx.PrimFunc)
        }
    )


def prim_module(**funcs: tirx.PrimFunc) -> tvm.IRModule:
    """PrimFuncs (a hand-written kernel) as a module, each with its name as its symbol."""
    return tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})


def schedule_cpu(
    mod: tvm.IRModule, target: tvm.target.Target | None = None
) -> tuple[tvm.IRModule, dict[str, str]]:
    """`mod` with the wasm target's schedule rules applied for `target` (the native CPU unless
    given), and the rule that took each function."""
    record: dict[str, str] = {}
    with target or tvm.target.Target("llvm"):
        scheduled = ApplyRules(rules(), record)(mod)
    return scheduled, record


def compile_llvm(mod: tvm.IRModule) -> Any:
    """`mod` compiled for this machine, its buffers sized as the wasm build sizes them
    (lowering's `_compact_tiles`: a prefill tile's registers for the whole tile)."""
    return tvm.compile(_compact_tiles(mod), target="llvm")


def gpu_threads_as_loops(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """A hand-written GPU kernel with its blockIdx.x and threadIdx.x loops made serial loops,
    through its TVMScript (the one edit there is; the count is checked)."""
    pattern = r'T\.thread_binding\((.*), thread="(?:blockIdx|threadIdx)\.x"\)'
    source, count = re.subn(pattern, r"T.serial(\1)", func.script())
    assert count == 2 and "thread_binding" not in source, source
    return tvm.script.from_source(source)


def tensor(array: np.ndarray) -> Any:
    return tvm.runtime.tensor(np.ascontiguousarray(array))


def padded(array: np.ndarray, rows: int, fill: float = 0.0) -> tuple[Any, Any]:
    """A device tensor holding `array` (1, n, ...) in a buffer of `rows` rows (the rest
    `fill`), and its view of the first n rows: the activation buffers of a prefill
    are sized for whole token tiles, the kernels given the first n."""
    shape = (array.shape[0], rows, *array.shape[2:])
    full = np.full(shape, fill, array.dtype)
    full[:, : array.shape[1]] = array
    whole = tensor(full)
    return whole, whole._create_view(array.shape)


# ---------------------------------------------------------------------------------------------
# Weights


def _gguf_blocks(type_name: str, weight: np.ndarray, rng: np.random.Generator) -> StoredBlocks:
    """The weight as a GGUF stores it in `type_name`: quantized by `gguf`, or random valid
    K-quant blocks (which `gguf` cannot quantize to)."""
    kind = GGMLQuantizationType[type_name]
    rows, cols = weight.shape
    if type_name.endswith("_K"):
        data = random_k_quant_blocks(kind, rows, cols, rng)
    elif type_name == "F16":
        data = weight.astype(np.float16).view(np.uint8)
    elif type_name == "BF16":
        data = (weight.view(np.uint32) >> np.uint32(16)).astype(np.uint16).view(np.uint8)
    else:
        data = quantize(weight, kind).reshape(rows, -1).view(np.uint8)
    return StoredBlocks(type_name, (rows, cols), np.ascontiguousarray(data))


# Our own group formats, made from GGUF blocks they carry exactly (their reference then is
# `gguf`'s decoder too); q8 quantizes floats, its reference the format's definition in numpy.
_FROM_BLOCKS = {"q4f32": "Q4_1", "q4f16": "Q4_0"}


def stored_weight(
    name: str, rows: int, cols: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The parts of a random (rows, cols) weight stored in format `name`, and the float32
    values they stand for, from a decoder that is not the format's TE expression: `gguf`'s
    numpy dequantization for GGUF types, numpy casts for float formats, and the q8 formats'
    definition (int8 codes times the group's scale) for those."""
    fmt = FORMATS[name]
    weight = (rng.standard_normal((rows, cols)) * 0.3).astype(np.float32)
    gguf_type = {v: k for k, v in STORED.items()}.get(name, _FROM_BLOCKS.get(name))
    if name == "f32":
        return fmt.encode(weight), weight
    if name == "f16-native":
        return fmt.encode(weight), weight.astype(np.float16).astype(np.float32)
    if gguf_type is not None:
        blocks = _gguf_blocks(gguf_type, weight, rng)
        return fmt.encode(blocks), blocks.dequantize()
    assert name in ("q8f32", "q8f16"), name
    parts = fmt.encode(weight)
    codes = parts["q8"].view(np.int8).reshape(rows, cols).astype(np.float32)
    scales = np.repeat(parts["scale"].astype(np.float32), 32, axis=1)
    return parts, codes * scales


# ---------------------------------------------------------------------------------------------
# WebAssembly under Node


def build_wasm(mod: tvm.IRModule) -> bytes:
    """`mod`'s kernels compiled for wasm32 and linked as the build does (lowering.emit)."""
    with tvm.transform.PassContext(opt_level=3):
        lib = tvm.tirx.build(_compact_tiles(mod), target=WASM)
    return link.link(lib, [f"__tvm_ffi_{gv.name_hint}" for gv in mod.functions])


def run_wasm(
    module: bytes, tensors: dict[str, np.ndarray], calls: list[tuple[str, list[str]]]
) -> dict[str, np.ndarray]:
    """Calls kernels of a linked module in order, each with tensors by name (allocated once in
    the module's memory, shared between the calls); returns every tensor after the calls."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernels.wasm"
        path.write_bytes(module)
        request = {
            "wasm": str(path),
            "tensors": {
                name: {
                    "dtype": str(a.dtype),
                    "shape": list(a.shape),
                    "data": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode(),
                }
                for name, a in tensors.items()
            },
            "calls": [{"symbol": f"__tvm_ffi_{name}", "args": args} for name, args in calls],
        }
        result = subprocess.run(
            ["node", str(NODE_SCRIPT)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    return {
        name: np.frombuffer(base64.b64decode(answer[name]), a.dtype).reshape(a.shape)
        for name, a in tensors.items()
    }
