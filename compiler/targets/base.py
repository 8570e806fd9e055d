"""What a compile target is: the kernel set the build compiles one network into, with its own
lowering passes and schedule rules (one folder each: webgpu_software, webgpu_gpu, wasm)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tvm
from tvm import tirx

# Prefill tiles of tokens: the software and CPU kernels compute TOKEN_TILE tokens of an output
# at once and run the last tile past n, so `compile` pads the activation buffers to whole tiles.
TOKEN_TILE = 4

# A verify step (speculative decoding, models/decoder/causal_lm.py) takes a token and its draft,
# VERIFY_TOKENS at most, as the symbolic size VERIFY_VAR: kernels may take that few tokens as
# decode does, reading the weights once for all of them.
VERIFY_TOKENS = 16
VERIFY_VAR = "v"

# Launches by PrimFunc (see plan.py), and what turns the kernels the plans use into manifest
# entries: (name -> entry, the linked WebAssembly module or None).
Launches = dict[str, list[dict[str, Any]]]
Emit = Callable[[list[str]], tuple[dict[str, dict[str, Any]], bytes | None]]


@dataclasses.dataclass(frozen=True)
class Target:
    # The kernel set's name in the manifest: "software", "gpu" or "wasm".
    name: str
    # Whether kernels run as CPU tasks: hand-written kernels then take a parallel loop over
    # cores and plain loops within, where a GPU kernel binds blocks and threads (models/kernels.py).
    cpu: bool
    # The Relax module and a dict to fill with each PrimFunc's schedule rule -> the module
    # lowered up to memory planning (the plan's input).
    lower: Callable[[tvm.IRModule, dict[str, str]], tvm.IRModule]
    # The lowered module and its PrimFuncs by name -> each PrimFunc's launches, and `Emit`.
    emit: Callable[[tvm.IRModule, dict[str, tirx.PrimFunc]], tuple[Launches, Emit]]
    # Whether a linear of a grouped format sums x * code over each group before it scales
    # the sum (models/kernels.py's `group_sums`): an operation fewer per weight, for kernels
    # that arithmetic bounds rather than memory (SwiftShader's).
    group_sums: bool = False
    # Whether a gated MLP's gating is the gate/up projection's epilogue (`gated_linear`): the
    # target's rule must compute an output's gate and up in one invocation (or task).
    gated_epilogue: bool = False
    # Whether that is so only where the token count is known (decode's one token): the rule
    # that takes it is a GEMV's (the gpu set's), and prefill's products go to dlight's Matmul.
    gated_one_token: bool = False
    # Whether a one-token (or verify step's) linear that reads an RMSNorm's output applies the
    # norm itself, so that the norm is no launch of its own: where the CPU's integer form
    # rounds its inputs (a pass over the inputs each task makes anyway), and on the gpu set in
    # each workgroup of a one-token linear (sums across its invocations, the normed input in
    # shared memory). Not on SwiftShader: there a norm's launch costs ~0.1 ms, and the norm in
    # the projections more, whether each invocation norms the input (qkv 1.6 -> 2.6 ms,
    # gate/up 4.9 -> 8.1 ms at SmolLM2's sizes) or each workgroup (1.7 -> 3.0, 5.2 -> 9.4 ms).
    norm_prologue: bool = False
    # On a GPU target with `norm_prologue`: whether its rule takes a one-token linear with such
    # an input (models/kernels.py `Pending`) of (inputs, outputs, storage buffers its kernel
    # binds, rows of the input the prologue keeps in workgroup memory); None: any.
    prologue_fits: Callable[[int, int, int, int], bool] | None = None
    # Invocations of a workgroup that share a token row's sums in the hand-written norm kernels
    # (models/add_norm.py): one where workgroup barriers cost more than they save (SwiftShader).
    row_threads: int = 1
