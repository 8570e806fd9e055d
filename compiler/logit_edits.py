"""A request's penalties, biases and grammar mask applied to a row of logits on the device,
before its token is picked (compiler/sampling.py's argmax or sample), so that such a request
too reads back its token alone.

`edit(logits[1, 1, vocab] f32, mask[ceil(vocab / 32)] i32, edits[EDITS + 1, 3] f32) ->
[1, 1, vocab] f32`. Row 0 of `edits` holds the value a masked token takes (-Infinity, which
WGSL has no literal for), the number of edit rows that follow, and whether the mask applies (1)
or not (0). Each edit row holds a token id (exact in float32: ids are below 2^24), a divisor r
and an offset: the token's logit l becomes (l > 0 ? l / r : l * r) + offset, each operation
rounded to float32. The runtime writes the rows (web/src/engine/logits.js `LogitsProcessor`,
whose JS path applies the same rule): r the repetition penalty of a token already seen, else 1;
the offset its bias less its frequency and presence penalties. At most one row per token.
Where the mask applies, a token whose bit (mask[id >> 5] >> (id & 31) & 1) is clear takes the
masked value, edited or not (a grammar's mask, as web/src/text/grammar.js builds it).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from .targets import Target

# Edit rows at most: a request that needs more (a long prompt under a repetition penalty) has
# its logits read back and edited in JS.
EDITS = 4096
EDIT_COLUMNS = 3  # token, divisor, offset; row 0: the masked value, rows used, mask applies
# Invocations of the one GPU workgroup: invocation t writes the tokens t, t + THREADS, ...,
# and then applies the edits of those same tokens, so that no two invocations write one logit.
THREADS = 256


def mask_words(vocab: int) -> int:
    return -(-vocab // 32)


def edit_func(vocab: int, target: Target) -> tirx.PrimFunc:
    """The kernel: logits (1, 1, vocab), mask (words,) int32 and edits (EDITS + 1, 3) float32 ->
    out (1, 1, vocab) float32, the module docstring's rule. On a CPU, plain loops; on a GPU,
    one workgroup (the edits are few, and a row is copied once)."""
    words = mask_words(vocab)
    if target.cpu:

        @T.prim_func(private=True)
        def edit_cpu(
            var_logits: T.handle, var_mask: T.handle, var_edits: T.handle, var_out: T.handle
        ):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            logits = T.match_buffer(var_logits, (1, 1, vocab), "float32")
            mask = T.match_buffer(var_mask, (words,), "int32")
            edits = T.match_buffer(var_edits, (EDITS + 1, EDIT_COLUMNS), "float32")
            out = T.match_buffer(var_out, (1, 1, vocab), "float32")
            for i in range(vocab):
                out[0, 0, i] = logits[0, 0, i]
            value = T.alloc_buffer((1,), "float32", scope="global")
            for j in T.serial(T.Cast("int32", edits[0, 1])):
                token = T.meta_var(T.Cast("int32", edits[j + 1, 0]))
                # Stored between the two operations, so that they are not fused (one rounding).
                if logits[0, 0, token] > T.float32(0):
                    value[0] = logits[0, 0, token] / edits[j + 1, 1]
                else:
                    value[0] = logits[0, 0, token] * edits[j + 1, 1]
                out[0, 0, token] = value[0] + edits[j + 1, 2]
            if edits[0, 2] > T.float32(0):
                for i in range(vocab):
                    if T.bitwise_and(T.shift_right(mask[i // 32], i % 32), 1) == 0:
                        out[0, 0, i] = edits[0, 0]

        return edit_cpu

    steps = -(-vocab // THREADS)

    @T.prim_func(private=True)
    def edit_gpu(var_logits: T.handle, var_mask: T.handle, var_edits: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        logits = T.match_buffer(var_logits, (1, 1, vocab), "float32")
        mask = T.match_buffer(var_mask, (words,), "int32")
        edits = T.match_buffer(var_edits, (EDITS + 1, EDIT_COLUMNS), "float32")
        out = T.match_buffer(var_out, (1, 1, vocab), "float32")
        for _bx in T.thread_binding(1, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                value = T.alloc_buffer((1,), "float32", scope="local")
                for k in range(steps):
                    i = T.meta_var(k * THREADS + tx)
                    if i < vocab:
                        out[0, 0, i] = logits[0, 0, i]
                for j in T.serial(T.Cast("int32", edits[0, 1])):
                    token = T.meta_var(T.Cast("int32", edits[j + 1, 0]))
                    if token % THREADS == tx:
                        # Stored between the two operations: TVM would fuse them (fma).
                        value[0] = logits[0, 0, token]
                        if value[0] > T.float32(0):
                            value[0] = value[0] / edits[j + 1, 1]
                        else:
                            value[0] = value[0] * edits[j + 1, 1]
                        out[0, 0, token] = value[0] + edits[j + 1, 2]
                if edits[0, 2] > T.float32(0):
                    for k in range(steps):
                        i = T.meta_var(k * THREADS + tx)
                        if i < vocab:
                            if T.bitwise_and(T.shift_right(mask[i // 32], i % 32), 1) == 0:
                                out[0, 0, i] = edits[0, 0]

    return edit_gpu
