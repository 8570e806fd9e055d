"""A request's log probabilities on the device: after a step's token is picked (sampling.py's
argmax or sample, from the logits as edit leaves them), the picked token's log probability and
the TOP largest, so that a request that asks for logprobs reads back 164 bytes a token, not
the vocabulary's float32 logits.

`logprobs(logits[1, 1, vocab] f32, token[1] i32) -> out[1 + 2 * TOP] f32`: out[0] the token's
log probability, out[1 + j] that of the j-th most likely token and out[1 + TOP + j] its id
(exact in float32: ids are below 2^24), or 0 and -1 past the finite ones. The rule is the JS
path's (web/src/engine/logits.js `logSoftmax` and `topK`, which the runtime uses where it reads
the logits back): with m the largest finite logit, the log partition m + ln(sum exp(l - m))
over the finite logits, each log probability l less it; the most likely in order of logit,
the lowest index first among equal ones, -Infinity (a masked token) and NaN never among them.
The sum is taken in float32 in chunks of ceil(vocab / THREADS) consecutive tokens, then the
chunks' sums in order, on every target alike (JS sums in float64: the two differ by that
rounding, tests/test_top_logprobs.py).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from .targets import Target

# The most alternatives a request takes (OpenAI's bound on top_logprobs).
TOP = 20
OUT = 1 + 2 * TOP
# Invocations of the one GPU workgroup: each keeps the TOP largest of a contiguous chunk of the
# row in order, then TOP rounds take the largest of their heads.
THREADS = 256
FLOAT_MAX = 3.4028234663852886e38


def _finite(x: tirx.PrimExpr) -> tirx.PrimExpr:
    # Not -Infinity, Infinity or NaN (no comparison passes a NaN).
    return tirx.all(x >= T.float32(-FLOAT_MAX), x <= T.float32(FLOAT_MAX))


@T.macro
def _keep(value, index, held, x, i):
    # Into the list value/index (its first held[0] entries in order: the logit descending, then
    # the index ascending), token i of logit x, met in index order; the list keeps TOP at most.
    if _finite(x):
        if held[0] < TOP or x > value[TOP - 1]:
            # Its place: after every entry at or above it (those met before it).
            held[1] = 0
            for j in range(TOP):
                if j < held[0]:
                    if value[j] >= x:
                        held[1] = held[1] + 1
            for j in range(TOP - 1):
                if TOP - 1 - j > held[1] and TOP - 1 - j <= held[0]:
                    value[TOP - 1 - j] = value[TOP - 2 - j]
                    index[TOP - 1 - j] = index[TOP - 2 - j]
            value[held[1]] = x
            index[held[1]] = T.Cast("int32", i)
            held[0] = T.min(held[0] + 1, TOP)


def logprobs_func(vocab: int, target: Target) -> tirx.PrimFunc:
    """The kernel: logits (1, 1, vocab) float32 and token (1,) int32 -> out (OUT,) float32, the
    module docstring's rule. On a CPU, plain loops; on a GPU, one workgroup."""
    chunk = -(-vocab // THREADS)

    @T.macro
    def chunk_sum(total, logits, t, largest):
        # Into total[0]: the weights exp(l - largest) of chunk t's finite logits, in order.
        total[0] = T.float32(0)
        for k in range(chunk):
            if t * chunk + k < vocab:
                if _finite(logits[0, 0, t * chunk + k]):
                    total[0] = total[0] + T.exp(logits[0, 0, t * chunk + k] - largest)

    if target.cpu:

        @T.prim_func(private=True)
        def logprobs_cpu(var_logits: T.handle, var_token: T.handle, var_out: T.handle):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            logits = T.match_buffer(var_logits, (1, 1, vocab), "float32")
            token = T.match_buffer(var_token, (1,), "int32")
            out = T.match_buffer(var_out, (OUT,), "float32")
            value = T.alloc_buffer((TOP,), "float32", scope="global")
            index = T.alloc_buffer((TOP,), "int32", scope="global")
            held = T.alloc_buffer((2,), "int32", scope="global")  # entries, a place
            total = T.alloc_buffer((3,), "float32", scope="global")  # a chunk's, all, log Z
            held[0] = 0
            for i in range(vocab):
                _keep(value, index, held, logits[0, 0, i], i)
            total[1] = T.float32(0)
            for t in range(THREADS):
                chunk_sum(total, logits, t, value[0])
                total[1] = total[1] + total[0]
            _write(out, logits, token, value, index, held, total)

        return logprobs_cpu

    @T.prim_func(private=True)
    def logprobs_gpu(var_logits: T.handle, var_token: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        logits = T.match_buffer(var_logits, (1, 1, vocab), "float32")
        token = T.match_buffer(var_token, (1,), "int32")
        out = T.match_buffer(var_out, (OUT,), "float32")
        for _bx in T.thread_binding(1, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                value = T.alloc_buffer((TOP,), "float32", scope="local")
                index = T.alloc_buffer((TOP,), "int32", scope="local")
                held = T.alloc_buffer((3,), "int32", scope="local")  # entries, a place, head
                total = T.alloc_buffer((3,), "float32", scope="local")  # a sum, all, log Z
                best = T.alloc_buffer((2,), "float32", scope="local")
                at = T.alloc_buffer((2,), "int32", scope="local")
                # The chosen ones, kept by the first invocation until the log partition is known.
                chosen = T.alloc_buffer((TOP,), "float32", scope="local")
                chosen_index = T.alloc_buffer((TOP,), "int32", scope="local")
                part = T.alloc_buffer((THREADS,), "float32", scope="shared")
                part_index = T.alloc_buffer((THREADS,), "int32", scope="shared")
                shared_f = T.alloc_buffer((1,), "float32", scope="shared")
                shared_i = T.alloc_buffer((1,), "int32", scope="shared")
                # Each invocation's chunk: its TOP largest, in order.
                held[0] = 0
                for k in range(chunk):
                    if tx * chunk + k < vocab:
                        _keep(value, index, held, logits[0, 0, tx * chunk + k], tx * chunk + k)
                # The largest finite logit: the first of some invocation's list.
                part_index[tx] = held[0]
                part[tx] = value[0]
                T.tvm_storage_sync("shared")
                if tx == 0:
                    at[0] = 0
                    for t in range(THREADS):
                        at[1] = part_index[t]
                        best[1] = part[t]
                        if at[1] > 0:
                            if at[0] == 0 or best[1] > best[0]:
                                best[0] = best[1]
                                at[0] = 1
                    if at[0] == 0:
                        best[0] = T.float32(0)
                    shared_f[0] = best[0]
                T.tvm_storage_sync("shared")
                best[0] = shared_f[0]
                chunk_sum(total, logits, tx, best[0])
                part[tx] = total[0]
                T.tvm_storage_sync("shared")
                if tx == 0:
                    total[1] = T.float32(0)
                    for t in range(THREADS):
                        total[0] = part[t]
                        total[1] = total[1] + total[0]
                T.tvm_storage_sync("shared")
                # TOP rounds: each invocation offers its list's head, the first takes the largest
                # (the lowest index among equal ones), whose invocation moves on.
                held[2] = 0
                for r in range(TOP):
                    part[tx] = T.float32(0)
                    part_index[tx] = -1
                    if held[2] < held[0]:
                        part[tx] = value[held[2]]
                        part_index[tx] = index[held[2]]
                    T.tvm_storage_sync("shared")
                    if tx == 0:
                        at[0] = -1
                        for t in range(THREADS):
                            at[1] = part_index[t]
                            best[1] = part[t]
                            if at[1] >= 0:
                                if (
                                    at[0] < 0
                                    or best[1] > best[0]
                                    or (best[1] == best[0] and at[1] < chosen_index[r])
                                ):
                                    best[0] = best[1]
                                    at[0] = t
                                    chosen_index[r] = at[1]
                        if at[0] < 0:
                            chosen_index[r] = -1
                        chosen[r] = best[0]
                        shared_i[0] = at[0]
                    T.tvm_storage_sync("shared")
                    # Into a register first: TVM's barrier analysis refuses a shared read in a
                    # condition.
                    held[1] = shared_i[0]
                    if tx == held[1]:
                        held[2] = held[2] + 1
                if tx == 0:
                    held[0] = 0
                    for r in range(TOP):
                        if chosen_index[r] >= 0:
                            held[0] = held[0] + 1
                    _write(out, logits, token, chosen, chosen_index, held, total)

    return logprobs_gpu


@T.macro
def _write(out, logits, token, value, index, held, total):
    # out from the TOP largest in order (held[0] of them) and the sum of the weights
    # (total[1], each exp(l - value[0])).
    total[2] = T.float32(0)
    if held[0] > 0:
        total[2] = value[0] + T.log(total[1])
    out[0] = logits[0, 0, token[0]] - total[2]
    for j in range(TOP):
        out[1 + j] = T.float32(0)
        out[1 + TOP + j] = T.float32(-1)
        if j < held[0]:
            out[1 + j] = value[j] - total[2]
            out[1 + TOP + j] = T.Cast("float32", index[j])
