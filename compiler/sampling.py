"""Sampling on the device: the greedy token of a row of logits, so that a greedy decode step
reads back 4 bytes instead of the vocabulary's float32 logits (196 KB a token for SmolLM2,
1 MB for Gemma 3).

`add_sampling` puts the entry functions `argmax(logits[1, 1, vocab] f32) -> int32[1]` and
`argmax_rows(logits[1, v, vocab] f32) -> int32[v]` (each row's, for a verify step's v rows of
logits, v at most VERIFY_TOKENS) into a network's module before it is lowered: they are compiled
by the same target with the network (on the CPU target their kernels are linked into the one
WebAssembly module), and planned like any entry function. They depend on the vocabulary's
size alone, never on the family. The runtime binds a plan's `logits` input to the logits that
prefill, decode or verify leaves on the device and runs both in one submission: a greedy
verify step reads back v tokens, not v rows of the vocabulary's logits.

The tie rule is the JS sampler's (web/src/engine/sampler.js `argmax`): the lowest index among
equal maxima. Each candidate (value, index) replaces the best so far when its value is
greater, or equal with a lower index; every invocation starts from logits[0] at index 0, so
that a row of -Infinity (or a NaN at index 0, which no comparison passes) gives 0, as in JS,
and no infinity is ever written in a kernel (WGSL has no literal for it).
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op, spec
from tvm.script import tirx as T

from .targets import Target
from .targets.base import VERIFY_VAR

# The entry functions' names in the manifest, and their one input's.
ARGMAX = "argmax"
ARGMAX_ROWS = "argmax_rows"
LOGITS = "logits"
# Invocations of the one GPU workgroup: each scans every THREADS-th logit, then the first
# combines their candidates (one barrier: SwiftShader runs invocations as CPU threads, where
# barriers are dear).
THREADS = 256


def argmax_func(vocab: int, target: Target, rows: int | None = 1) -> tirx.PrimFunc:
    """The kernel: logits (1, rows, vocab) float32 -> out (rows,) int32, each row's index of
    its largest, the lowest among equal ones; rows None: as many as the symbolic size
    VERIFY_VAR. On a CPU, plain loops (a few hundred microseconds a row for Gemma 3's 262,144
    logits, well under a decode step); on a GPU, one workgroup a row."""
    count = tirx.Var(VERIFY_VAR, "int64") if rows is None else rows
    if target.cpu:

        @T.prim_func(private=True)
        def argmax_cpu(var_logits: T.handle, var_out: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            logits = T.match_buffer(var_logits, (1, count, vocab), "float32")
            out = T.match_buffer(var_out, (count,), "int32")
            best = T.alloc_buffer((1,), "float32", scope="global")
            index = T.alloc_buffer((1,), "int32", scope="global")
            for r in range(count):
                best[0] = logits[0, r, 0]
                index[0] = 0
                for i in range(1, vocab):
                    if logits[0, r, i] > best[0]:
                        best[0] = logits[0, r, i]
                        index[0] = T.Cast("int32", i)
                out[r] = index[0]

        return argmax_cpu

    steps = -(-vocab // THREADS)

    @T.prim_func(private=True)
    def argmax_gpu(var_logits: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        logits = T.match_buffer(var_logits, (1, count, vocab), "float32")
        out = T.match_buffer(var_out, (count,), "int32")
        for bx in T.thread_binding(count, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                best = T.alloc_buffer((1,), "float32", scope="local")
                index = T.alloc_buffer((1,), "int32", scope="local")
                value = T.alloc_buffer((1,), "float32", scope="local")
                at = T.alloc_buffer((1,), "int32", scope="local")
                shared_best = T.alloc_buffer((THREADS,), "float32", scope="shared")
                shared_index = T.alloc_buffer((THREADS,), "int32", scope="shared")
                best[0] = logits[0, bx, 0]
                index[0] = 0
                for k in range(steps):
                    i = T.meta_var(k * THREADS + tx)
                    if i < vocab:
                        # Ascending within an invocation: a greater value alone replaces.
                        if logits[0, bx, i] > best[0]:
                            best[0] = logits[0, bx, i]
                            index[0] = T.Cast("int32", i)
                shared_best[tx] = best[0]
                shared_index[tx] = index[0]
                T.tvm_storage_sync("shared")
                if tx == 0:
                    for t in range(1, THREADS):
                        # Into registers first: TVM's barrier analysis refuses a shared
                        # read in a condition.
                        value[0] = shared_best[t]
                        at[0] = shared_index[t]
                        if value[0] > best[0] or (value[0] == best[0] and at[0] < index[0]):
                            best[0] = value[0]
                            index[0] = at[0]
                    out[bx] = index[0]

    return argmax_gpu


class Sampling(nn.Module):
    """The sampling entry functions, for a vocabulary of `vocab` tokens."""

    def __init__(self, vocab: int, target: Target) -> None:
        self.vocab = vocab
        self.target = target

    def argmax(self, logits: Tensor) -> Tensor:
        return op.tensor_ir_op(
            argmax_func(self.vocab, self.target),
            "argmax_logits",
            args=[logits],
            out=Tensor.placeholder([1], "int32"),
        )

    def argmax_rows(self, logits: Tensor) -> Tensor:
        return op.tensor_ir_op(
            argmax_func(self.vocab, self.target, None),
            "argmax_rows_logits",
            args=[logits],
            out=Tensor.placeholder([logits.shape[1]], "int32"),
        )

    def spec(self) -> spec.ModuleSpec:
        plain = {"param_mode": "none", "effect_mode": "none"}
        return spec.ModuleSpec.from_raw(
            {
                ARGMAX: {LOGITS: spec.Tensor([1, 1, self.vocab], "float32"), "$": plain},
                ARGMAX_ROWS: {
                    LOGITS: spec.Tensor([1, VERIFY_VAR, self.vocab], "float32"),
                    "$": plain,
                },
            },
            self,
        )


def add_sampling(mod: tvm.IRModule, vocab: int, target: Target) -> list[str]:
    """Adds the sampling entry functions (and their kernels) to `mod`, a network's module not
    yet lowered; returns their names. A name the network already uses is an error, not a
    silent replacement."""
    sampling = Sampling(vocab, target)
    sampling_mod, _ = sampling.export_tvm(spec=sampling.spec())
    taken = {gv.name_hint for gv in mod.get_global_vars()}
    for gv, func in sampling_mod.functions_items():
        if gv.name_hint in taken:
            raise ValueError(f"the network already has a function named {gv.name_hint}")
        mod[gv] = func
    return [ARGMAX, ARGMAX_ROWS]
