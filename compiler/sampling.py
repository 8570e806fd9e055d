"""Sampling on the device: the token a decode step picks from its row of logits, greedy or
drawn, so that a step reads back 4 bytes instead of the vocabulary's float32 logits (196 KB a
token for SmolLM2, 1 MB for Gemma 3).

`add_sampling` puts the entry functions `argmax(logits[1, 1, vocab] f32) -> int32[1]`,
`argmax_rows(logits[1, v, vocab] f32) -> int32[v]` (each row's, for a verify step's v rows of
logits, v at most VERIFY_TOKENS) and `sample(logits[1, 1, vocab] f32, sampling[PARAMS] f32) ->
int32[1]`, `edit` (compiler/logit_edits.py: a request's penalties, biases and grammar mask,
applied to the logits before either picks) and `logprobs` (compiler/top_logprobs.py: the picked
token's log probability and the likeliest tokens', after either picks) into a network's module
before it is lowered: they are compiled by the same target with the network (on the CPU target
their kernels are linked into the one WebAssembly module), and planned like any entry function.
They depend on the vocabulary's size alone, never on the family. The runtime binds a plan's
`logits` input to the logits that prefill, decode or verify leaves on the device and runs both
in one submission: a greedy verify step reads back v tokens, not v rows of the vocabulary's
logits.

The tie rule is the JS sampler's (web/src/engine/sampler.js `argmax`): the lowest index among
equal maxima. Each candidate (value, index) replaces the best so far when its value is
greater, or equal with a lower index; every invocation starts from logits[0] at index 0, so
that a row of -Infinity (or a NaN at index 0, which no comparison passes) gives 0, as in JS,
and no infinity is ever written in a kernel (WGSL has no literal for it).

Sampling: the JS sampler's rule (sampler.js `drawParams`, `pick`), whose parameters the runtime
writes as float32 (1 / temperature, top_p, top_k, u, floor). With m the largest logit, a
token's x = (logit - m) * (1 / temperature), each step rounded to float32, and its weight
exp(x). The candidates are the tokens with x at or above the floor (ln 1e-9 for a truncated
draw, so that few remain; -87 otherwise, where exp still gives a normal float32). top_k keeps
the candidates whose logit is at or above the k-th largest candidate's (all of them where there
are fewer); top_p then raises the threshold to the largest logit whose candidates at or above
it still hold top_p of top_k's weight. Thresholds are logits, found exactly as uint32 keys
(`order_key`) by halving their range, ties always kept together. The token is the first kept
one, in index order, whose running weight passes u times the kept weight (the last kept where
rounding leaves none); a row with no finite logit gives 0. Weights are summed in float32 in
chunks of ceil(vocab / 256) consecutive tokens, then the chunks' sums in order, on every target
alike; JS sums in float64, so the two can differ only where u or top_p falls within that
rounding of a boundary.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op, spec
from tvm.script import tirx as T

from .formats.base import u32
from .logit_edits import EDIT_COLUMNS, EDITS, edit_func, mask_words
from .targets import Target
from .targets.base import VERIFY_VAR
from .top_logprobs import OUT, logprobs_func

# The entry functions' names in the manifest, and their one input's.
ARGMAX = "argmax"
ARGMAX_ROWS = "argmax_rows"
SAMPLE = "sample"
EDIT = "edit"  # compiler/logit_edits.py
LOGPROBS = "logprobs"  # compiler/top_logprobs.py
LOGITS = "logits"
# logprobs' second input: the token picked (argmax's or sample's output).
TOKEN = "token"
# edit's inputs beside the logits: a grammar's mask and the edit rows (logit_edits.py).
MASK = "mask"
EDIT_ROWS = "edits"
# sample's second input: float32 [PARAMS], written by the runtime for each step.
SAMPLING = "sampling"
PARAMS = 5  # 1 / temperature, top_p, top_k (0: no limit), u in [0, 1), the candidates' floor
# Halvings of the uint32 key range: enough to find any threshold exactly.
KEY_BITS = 32
# Invocations of the one GPU workgroup: each scans every THREADS-th logit, then the first
# combines their candidates (one barrier: SwiftShader runs invocations as CPU threads, where
# barriers are dear).
THREADS = 256
# A truncated draw's thresholds are found among the candidates at or above a lower bound of
# them, known after one pass: for top_k (up to THREADS), the k-th largest of the chunks' largest
# keys; for top_p alone, the buckets (BUCKETS equal spans of x over [floor, 0]) from the top
# whose mass passes top_p by BUCKET_MARGIN, far above the sums' rounding. On the GPU the
# invocations keep those of their chunks in a POOL of shared memory where they all fit (each its
# own in index order, after those of the invocations before it), so that the halvings pass over
# a few elements instead of the row (else they pass over the chunks).
BUCKETS = 8
BUCKET_MARGIN = 1e-3
POOL = 2048


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


def x_of(logit: tirx.PrimExpr, best: tirx.PrimExpr, sampling: tirx.Buffer) -> tirx.PrimExpr:
    """A token's x: (logit - the largest) * (1 / temperature), each operation in float32."""
    return (logit - best) * sampling[0]


def bucket_of(x: tirx.PrimExpr, sampling: tirx.Buffer) -> tirx.PrimExpr:
    """Which of BUCKETS equal spans of [floor, 0] a candidate's x falls in, 0 the top one."""
    return T.min(T.Cast("int32", x * (T.float32(BUCKETS) / sampling[4])), BUCKETS - 1)


def order_key(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """A uint32 that orders float32 values as the floats do (a negative's bits all flipped,
    others' sign bit set; -0 is +0), so that a threshold among logits is found by halving
    integers."""
    bits = tirx.reinterpret("uint32", x)
    bits = tirx.Select(bits == u32(0x80000000), u32(0), bits)
    return bits ^ (((bits >> u32(31)) * u32(0xFFFFFFFF)) | u32(0x80000000))


def sample_func(vocab: int, target: Target) -> tirx.PrimFunc:
    """The kernel: logits (1, 1, vocab) float32 and sampling (PARAMS,) float32 -> out (1,)
    int32, the token the module docstring's rule draws. On a CPU, plain loops over the
    candidates gathered once (most of a vocabulary is below the floor of a truncated draw);
    on a GPU, one workgroup whose invocations each take a contiguous chunk of the row (so that
    the chunks' masses in order are the walk's), each halving a pass over the row."""
    if target.cpu:
        return _sample_cpu(vocab)
    return _sample_gpu(vocab)


def _sample_cpu(vocab: int) -> tirx.PrimFunc:
    chunk = -(-vocab // THREADS)

    def halve(lo: tirx.PrimExpr, hi: tirx.PrimExpr) -> tirx.PrimExpr:
        return lo + (hi - lo) // u32(2)

    @T.prim_func(private=True)
    def sample_cpu(var_logits: T.handle, var_sampling: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        logits = T.match_buffer(var_logits, (1, 1, vocab), "float32")
        sampling = T.match_buffer(var_sampling, (PARAMS,), "float32")
        out = T.match_buffer(var_out, (1,), "int32")
        # The candidates in index order: their tokens, keys and weights.
        tokens = T.alloc_buffer((vocab,), "int32", scope="global")
        keys = T.alloc_buffer((vocab,), "uint32", scope="global")
        weights = T.alloc_buffer((vocab,), "float32", scope="global")
        # Masses by chunk of the row, summed as the GPU kernel's invocations sum them.
        part = T.alloc_buffer((THREADS,), "float32", scope="global")
        count = T.alloc_buffer((2,), "int32", scope="global")  # candidates, those over mid
        picked = T.alloc_buffer((2,), "int32", scope="global")  # the chunk walked, the token
        best = T.alloc_buffer((1,), "float32", scope="global")
        mass = T.alloc_buffer((3,), "float32", scope="global")  # the limit's, a sum, r
        bound = T.alloc_buffer((2,), "uint32", scope="global")  # lo (holds), hi (does not)
        high = T.alloc_buffer((THREADS,), "uint32", scope="global")  # the chunks' largest keys
        near = T.alloc_buffer((BUCKETS,), "float32", scope="global")
        cut = T.alloc_buffer((1,), "int32", scope="global")  # the last bucket kept
        x = T.alloc_buffer((1,), "float32", scope="global")
        best[0] = logits[0, 0, 0]
        for i in range(1, vocab):
            if logits[0, 0, i] > best[0]:
                best[0] = logits[0, 0, i]
        # A truncated draw's lower bound of its thresholds, as the GPU kernel finds it: the
        # chunks' largest candidate keys, all candidates' mass (the limit where top_k keeps
        # all) in the chunks' order, and their masses by bucket.
        mass[0] = T.float32(0)
        bound[0] = T.uint32(0)
        cut[0] = BUCKETS - 1
        if sampling[2] > T.float32(0) or sampling[1] < T.float32(1):
            for b in range(BUCKETS):
                near[b] = T.float32(0)
            for t in range(THREADS):
                part[t] = T.float32(0)
                high[t] = T.uint32(0)
                for k in range(chunk):
                    if t * chunk + k < vocab:
                        x[0] = x_of(logits[0, 0, t * chunk + k], best[0], sampling)
                        if x[0] >= sampling[4]:
                            if order_key(logits[0, 0, t * chunk + k]) > high[t]:
                                high[t] = order_key(logits[0, 0, t * chunk + k])
                            part[t] = part[t] + T.exp(x[0])
                            near[bucket_of(x[0], sampling)] = near[
                                bucket_of(x[0], sampling)
                            ] + T.exp(x[0])
                mass[0] = mass[0] + part[t]
            bound[1] = order_key(best[0]) + T.uint32(1)
            if sampling[2] > T.float32(0) and sampling[2] <= T.float32(THREADS):
                for _halving in range(KEY_BITS):
                    if bound[1] - bound[0] > T.uint32(1):
                        count[1] = 0
                        for t in range(THREADS):
                            if high[t] >= halve(bound[0], bound[1]):
                                count[1] = count[1] + 1
                        if T.Cast("float32", count[1]) >= sampling[2]:
                            bound[0] = halve(bound[0], bound[1])
                        else:
                            bound[1] = halve(bound[0], bound[1])
            if sampling[2] <= T.float32(0) and sampling[1] < T.float32(1):
                mass[1] = T.float32(0)
                for b in range(BUCKETS):
                    mass[1] = mass[1] + near[b]
                    if cut[0] == BUCKETS - 1 and mass[1] >= sampling[1] * mass[0] * (
                        T.float32(1 + BUCKET_MARGIN)
                    ):
                        cut[0] = b
        # The candidates at or above the bound, in index order.
        count[0] = 0
        for i in range(vocab):
            x[0] = x_of(logits[0, 0, i], best[0], sampling)
            if x[0] >= sampling[4]:
                if order_key(logits[0, 0, i]) >= bound[0] and bucket_of(x[0], sampling) <= cut[0]:
                    tokens[count[0]] = T.Cast("int32", i)
                    keys[count[0]] = order_key(logits[0, 0, i])
                    weights[count[0]] = T.exp(x[0])
                    count[0] = count[0] + 1
        # top_k: the largest key that at least top_k candidates reach.
        bound[1] = order_key(best[0]) + T.uint32(1)
        if sampling[2] > T.float32(0):
            for _halving in range(KEY_BITS):
                if bound[1] - bound[0] > T.uint32(1):
                    count[1] = 0
                    for j in T.serial(count[0]):
                        if keys[j] >= halve(bound[0], bound[1]):
                            count[1] = count[1] + 1
                    if T.Cast("float32", count[1]) >= sampling[2]:
                        bound[0] = halve(bound[0], bound[1])
                    else:
                        bound[1] = halve(bound[0], bound[1])
        if sampling[2] > T.float32(0):
            for t in range(THREADS):
                part[t] = T.float32(0)
            for j in T.serial(count[0]):
                if keys[j] >= bound[0]:
                    part[tokens[j] // chunk] = part[tokens[j] // chunk] + weights[j]
            mass[0] = T.float32(0)
            for t in range(THREADS):
                mass[0] = mass[0] + part[t]
        # top_p: the largest key whose candidates at or above it hold top_p of that mass.
        bound[1] = order_key(best[0]) + T.uint32(1)
        if sampling[1] < T.float32(1):
            for _halving in range(KEY_BITS):
                if bound[1] - bound[0] > T.uint32(1):
                    for t in range(THREADS):
                        part[t] = T.float32(0)
                    for j in T.serial(count[0]):
                        if keys[j] >= halve(bound[0], bound[1]):
                            part[tokens[j] // chunk] = part[tokens[j] // chunk] + weights[j]
                    mass[1] = T.float32(0)
                    for t in range(THREADS):
                        mass[1] = mass[1] + part[t]
                    if mass[1] >= sampling[1] * mass[0]:
                        bound[0] = halve(bound[0], bound[1])
                    else:
                        bound[1] = halve(bound[0], bound[1])
        # The walk: the chunks' kept masses in order, to the first whose running sum passes
        # u of the whole (else, rounding, the last holding any); then that chunk's tokens.
        for t in range(THREADS):
            part[t] = T.float32(0)
        for j in T.serial(count[0]):
            if keys[j] >= bound[0]:
                part[tokens[j] // chunk] = part[tokens[j] // chunk] + weights[j]
        mass[0] = T.float32(0)
        for t in range(THREADS):
            mass[0] = mass[0] + part[t]
        mass[2] = sampling[3] * mass[0]
        mass[1] = T.float32(0)
        picked[0] = -1
        picked[1] = -1
        for t in range(THREADS):
            if part[t] > T.float32(0):
                picked[1] = t
                if picked[0] < 0:
                    if mass[1] + part[t] > mass[2]:
                        picked[0] = t
                        mass[2] = mass[2] - mass[1]
                    else:
                        mass[1] = mass[1] + part[t]
        if picked[0] < 0:
            picked[0] = picked[1]
            mass[2] = mass[0]
        out[0] = 0
        mass[1] = T.float32(0)
        picked[1] = -1
        for j in T.serial(count[0]):
            if keys[j] >= bound[0] and tokens[j] // chunk == picked[0]:
                if picked[1] < 0:
                    out[0] = tokens[j]
                    mass[1] = mass[1] + weights[j]
                    if mass[1] > mass[2]:
                        picked[1] = tokens[j]

    return sample_cpu


def _sample_gpu(vocab: int) -> tirx.PrimFunc:
    chunk = -(-vocab // THREADS)

    def halve(lo: tirx.PrimExpr, hi: tirx.PrimExpr) -> tirx.PrimExpr:
        return lo + (hi - lo) // u32(2)

    @T.macro
    def locate(spot, own, pool, tx, k):
        # The k-th of the invocation's elements: its k-th in the pool, or its chunk's k-th.
        spot[0] = tx * chunk + k
        if own[1] == 1:
            spot[0] = T.Cast("int32", pool[own[3] + k])

    @T.macro
    def pooled(keep, value, logits, best, sampling, bound, own, i):
        # keep[0]: 1 where token i goes into the pool (a candidate at or above the lower bound,
        # in a bucket kept), else 0; its x in value[0].
        keep[0] = 0
        if i < vocab:
            value[0] = x_of(logits[0, 0, i], best[0], sampling)
            if value[0] >= sampling[4]:
                if order_key(logits[0, 0, i]) >= bound[0]:
                    if bucket_of(value[0], sampling) <= own[2]:
                        keep[0] = 1

    @T.macro
    def add_mass(total, spot, own, pool, tx, logits, best, sampling, at_least):
        # Into total[1]: the weights of the invocation's candidates whose key reaches at_least.
        value = T.alloc_buffer((1,), "float32", scope="local")
        for k in T.serial(own[0]):
            locate(spot, own, pool, tx, k)
            if spot[0] < vocab:
                value[0] = x_of(logits[0, 0, spot[0]], best[0], sampling)
                if value[0] >= sampling[4]:
                    if order_key(logits[0, 0, spot[0]]) >= at_least:
                        total[1] = total[1] + T.exp(value[0])

    @T.macro
    def sum_parts(into, at, value, part):
        # Into into[at]: the invocations' parts, in order.
        into[at] = T.float32(0)
        for t in range(THREADS):
            value[0] = part[t]
            into[at] = into[at] + value[0]

    @T.prim_func(private=True)
    def sample_gpu(var_logits: T.handle, var_sampling: T.handle, var_out: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        logits = T.match_buffer(var_logits, (1, 1, vocab), "float32")
        sampling = T.match_buffer(var_sampling, (PARAMS,), "float32")
        out = T.match_buffer(var_out, (1,), "int32")
        for _bx in T.thread_binding(1, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                best = T.alloc_buffer((1,), "float32", scope="local")
                value = T.alloc_buffer((1,), "float32", scope="local")
                total = T.alloc_buffer((3,), "float32", scope="local")  # limit's mass, sum, r
                bound = T.alloc_buffer((2,), "uint32", scope="local")  # lo (holds), hi (not)
                tally = T.alloc_buffer((4,), "int32", scope="local")  # count, sum, chosen, last
                walk = T.alloc_buffer((2,), "int32", scope="local")  # found, last
                # elements, in the pool (1) or not, the last bucket kept, start in the pool
                own = T.alloc_buffer((4,), "int32", scope="local")
                spot = T.alloc_buffer((1,), "int32", scope="local")
                keep = T.alloc_buffer((1,), "int32", scope="local")
                near = T.alloc_buffer((BUCKETS,), "float32", scope="local")
                high = T.alloc_buffer((1,), "uint32", scope="local")
                part = T.alloc_buffer((THREADS,), "float32", scope="shared")
                part_count = T.alloc_buffer((THREADS,), "int32", scope="shared")
                part_key = T.alloc_buffer((THREADS,), "uint32", scope="shared")
                # The buckets' masses of each invocation, then each invocation's slots.
                pool = T.alloc_buffer((POOL,), "float32", scope="shared")
                part_start = T.alloc_buffer((THREADS,), "int32", scope="shared")
                shared_f = T.alloc_buffer((2,), "float32", scope="shared")
                shared_u = T.alloc_buffer((2,), "uint32", scope="shared")
                shared_i = T.alloc_buffer((2,), "int32", scope="shared")
                # The row's largest logit.
                best[0] = logits[0, 0, 0]
                for k in range(chunk):
                    if tx * chunk + k < vocab:
                        if logits[0, 0, tx * chunk + k] > best[0]:
                            best[0] = logits[0, 0, tx * chunk + k]
                part[tx] = best[0]
                T.tvm_storage_sync("shared")
                if tx == 0:
                    for t in range(1, THREADS):
                        value[0] = part[t]
                        if value[0] > best[0]:
                            best[0] = value[0]
                    shared_f[0] = best[0]
                T.tvm_storage_sync("shared")
                best[0] = shared_f[0]
                # A truncated draw's candidates in the chunk: their largest key, their mass (the
                # limit where top_k keeps all) and their masses by bucket.
                high[0] = T.uint32(0)
                total[1] = T.float32(0)
                for b in range(BUCKETS):
                    near[b] = T.float32(0)
                if sampling[2] > T.float32(0) or sampling[1] < T.float32(1):
                    for k in range(chunk):
                        if tx * chunk + k < vocab:
                            value[0] = x_of(logits[0, 0, tx * chunk + k], best[0], sampling)
                            if value[0] >= sampling[4]:
                                if order_key(logits[0, 0, tx * chunk + k]) > high[0]:
                                    high[0] = order_key(logits[0, 0, tx * chunk + k])
                                spot[0] = bucket_of(value[0], sampling)
                                value[0] = T.exp(value[0])
                                total[1] = total[1] + value[0]
                                near[spot[0]] = near[spot[0]] + value[0]
                part[tx] = total[1]
                part_key[tx] = high[0]
                for b in range(BUCKETS):
                    pool[b * THREADS + tx] = near[b]
                T.tvm_storage_sync("shared")
                if tx == 0:
                    sum_parts(total, 0, value, part)
                    shared_f[1] = total[0]
                    # top_k's lower bound: the k-th largest of the chunks' largest keys.
                    bound[0] = T.uint32(0)
                    bound[1] = order_key(best[0]) + T.uint32(1)
                    if sampling[2] > T.float32(0) and sampling[2] <= T.float32(THREADS):
                        for _halving in range(KEY_BITS):
                            if bound[1] - bound[0] > T.uint32(1):
                                tally[0] = 0
                                for t in range(THREADS):
                                    high[0] = part_key[t]
                                    if high[0] >= halve(bound[0], bound[1]):
                                        tally[0] = tally[0] + 1
                                if T.Cast("float32", tally[0]) >= sampling[2]:
                                    bound[0] = halve(bound[0], bound[1])
                                else:
                                    bound[1] = halve(bound[0], bound[1])
                    shared_u[0] = bound[0]
                    # top_p's (where top_k keeps all): the buckets from the top that hold
                    # clearly more than top_p of the mass.
                    own[2] = BUCKETS - 1
                    if sampling[2] <= T.float32(0) and sampling[1] < T.float32(1):
                        total[1] = T.float32(0)
                        for b in range(BUCKETS):
                            for t in range(THREADS):
                                value[0] = pool[b * THREADS + t]
                                total[1] = total[1] + value[0]
                            if own[2] == BUCKETS - 1 and total[1] >= sampling[1] * total[0] * (
                                T.float32(1 + BUCKET_MARGIN)
                            ):
                                own[2] = b
                    shared_i[0] = own[2]
                T.tvm_storage_sync("shared")
                bound[0] = shared_u[0]
                own[2] = shared_i[0]
                # Each invocation's candidates at or above both bounds: how many, then (where
                # all of them fit the pool) the tokens, in index order, from the invocation's
                # start in it.
                own[0] = 0
                if sampling[2] > T.float32(0) or sampling[1] < T.float32(1):
                    for k in range(chunk):
                        pooled(keep, value, logits, best, sampling, bound, own, tx * chunk + k)
                        if keep[0] == 1:
                            own[0] = own[0] + 1
                part_count[tx] = own[0]
                T.tvm_storage_sync("shared")
                if tx == 0:
                    tally[1] = 0
                    for t in range(THREADS):
                        part_start[t] = tally[1]
                        tally[0] = part_count[t]
                        tally[1] = tally[1] + tally[0]
                    own[1] = 0
                    if sampling[2] > T.float32(0) or sampling[1] < T.float32(1):
                        if tally[1] <= POOL:
                            own[1] = 1
                    shared_i[1] = own[1]
                T.tvm_storage_sync("shared")
                own[1] = shared_i[1]
                own[3] = part_start[tx]
                if own[1] == 1:
                    tally[0] = 0
                    for k in range(chunk):
                        pooled(keep, value, logits, best, sampling, bound, own, tx * chunk + k)
                        if keep[0] == 1:
                            pool[own[3] + tally[0]] = T.Cast("float32", tx * chunk + k)
                            tally[0] = tally[0] + 1
                else:
                    own[0] = chunk
                # top_k's key, halving from its lower bound: every halving is a pass over the
                # elements and two barriers, taken by every invocation (a barrier must be), the
                # work skipped where none is left.
                bound[1] = order_key(best[0]) + T.uint32(1)
                for _halving in range(KEY_BITS):
                    tally[0] = 0
                    if sampling[2] > T.float32(0) and bound[1] - bound[0] > T.uint32(1):
                        for k in T.serial(own[0]):
                            locate(spot, own, pool, tx, k)
                            if spot[0] < vocab:
                                if x_of(logits[0, 0, spot[0]], best[0], sampling) >= sampling[
                                    4
                                ] and order_key(logits[0, 0, spot[0]]) >= halve(bound[0], bound[1]):
                                    tally[0] = tally[0] + 1
                    part_count[tx] = tally[0]
                    T.tvm_storage_sync("shared")
                    if tx == 0:
                        tally[1] = 0
                        for t in range(THREADS):
                            tally[0] = part_count[t]
                            tally[1] = tally[1] + tally[0]
                        if sampling[2] > T.float32(0) and bound[1] - bound[0] > T.uint32(1):
                            if T.Cast("float32", tally[1]) >= sampling[2]:
                                bound[0] = halve(bound[0], bound[1])
                            else:
                                bound[1] = halve(bound[0], bound[1])
                        shared_u[0] = bound[0]
                        shared_u[1] = bound[1]
                    T.tvm_storage_sync("shared")
                    bound[0] = shared_u[0]
                    bound[1] = shared_u[1]
                # The mass within top_k (all candidates' without it), then top_p's key the
                # same way.
                total[1] = T.float32(0)
                if sampling[2] > T.float32(0):
                    add_mass(total, spot, own, pool, tx, logits, best, sampling, bound[0])
                part[tx] = total[1]
                T.tvm_storage_sync("shared")
                if tx == 0:
                    if sampling[2] > T.float32(0):
                        sum_parts(total, 0, value, part)
                        shared_f[1] = total[0]
                T.tvm_storage_sync("shared")
                total[0] = shared_f[1]
                bound[1] = order_key(best[0]) + T.uint32(1)
                for _halving in range(KEY_BITS):
                    total[1] = T.float32(0)
                    if sampling[1] < T.float32(1) and bound[1] - bound[0] > T.uint32(1):
                        add_mass(
                            total,
                            spot,
                            own,
                            pool,
                            tx,
                            logits,
                            best,
                            sampling,
                            halve(bound[0], bound[1]),
                        )
                    part[tx] = total[1]
                    T.tvm_storage_sync("shared")
                    if tx == 0:
                        sum_parts(total, 1, value, part)
                        if sampling[1] < T.float32(1) and bound[1] - bound[0] > T.uint32(1):
                            if total[1] >= sampling[1] * total[0]:
                                bound[0] = halve(bound[0], bound[1])
                            else:
                                bound[1] = halve(bound[0], bound[1])
                        shared_u[0] = bound[0]
                        shared_u[1] = bound[1]
                    T.tvm_storage_sync("shared")
                    bound[0] = shared_u[0]
                    bound[1] = shared_u[1]
                # The walk: each invocation's kept mass; the first whose running sum passes u
                # of the whole walks its elements (else, rounding, the last holding any mass).
                total[1] = T.float32(0)
                add_mass(total, spot, own, pool, tx, logits, best, sampling, bound[0])
                part[tx] = total[1]
                T.tvm_storage_sync("shared")
                if tx == 0:
                    sum_parts(total, 0, value, part)
                    total[2] = sampling[3] * total[0]
                    total[1] = T.float32(0)
                    tally[2] = -1
                    tally[3] = -1
                    for t in range(THREADS):
                        value[0] = part[t]
                        if value[0] > T.float32(0):
                            tally[3] = t
                            if tally[2] < 0:
                                if total[1] + value[0] > total[2]:
                                    tally[2] = t
                                    total[2] = total[2] - total[1]
                                else:
                                    total[1] = total[1] + value[0]
                    if tally[2] < 0:
                        tally[2] = tally[3]
                        total[2] = total[0]
                    shared_i[0] = tally[2]
                    shared_f[0] = total[2]
                    if tally[2] < 0:
                        out[0] = 0
                T.tvm_storage_sync("shared")
                tally[2] = shared_i[0]
                total[2] = shared_f[0]
                if tx == tally[2]:
                    total[1] = T.float32(0)
                    walk[0] = -1
                    walk[1] = -1
                    for k in T.serial(own[0]):
                        locate(spot, own, pool, tx, k)
                        if spot[0] < vocab:
                            value[0] = x_of(logits[0, 0, spot[0]], best[0], sampling)
                            if value[0] >= sampling[4]:
                                if order_key(logits[0, 0, spot[0]]) >= bound[0]:
                                    walk[1] = spot[0]
                                    if walk[0] < 0:
                                        total[1] = total[1] + T.exp(value[0])
                                        if total[1] > total[2]:
                                            walk[0] = spot[0]
                    if walk[0] >= 0:
                        out[0] = walk[0]
                    else:
                        out[0] = walk[1]

    return sample_gpu


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

    def sample(self, logits: Tensor, sampling: Tensor) -> Tensor:
        return op.tensor_ir_op(
            sample_func(self.vocab, self.target),
            "sample_logits",
            args=[logits, sampling],
            out=Tensor.placeholder([1], "int32"),
        )

    def edit(self, logits: Tensor, mask: Tensor, edits: Tensor) -> Tensor:
        return op.tensor_ir_op(
            edit_func(self.vocab, self.target),
            "edit_logits",
            args=[logits, mask, edits],
            out=Tensor.placeholder([1, 1, self.vocab], "float32"),
        )

    def logprobs(self, logits: Tensor, token: Tensor) -> Tensor:
        return op.tensor_ir_op(
            logprobs_func(self.vocab, self.target),
            "logprobs_logits",
            args=[logits, token],
            out=Tensor.placeholder([OUT], "float32"),
        )

    def spec(self) -> spec.ModuleSpec:
        plain = {"param_mode": "none", "effect_mode": "none"}
        return spec.ModuleSpec.from_raw(
            {
                EDIT: {
                    LOGITS: spec.Tensor([1, 1, self.vocab], "float32"),
                    MASK: spec.Tensor([mask_words(self.vocab)], "int32"),
                    EDIT_ROWS: spec.Tensor([EDITS + 1, EDIT_COLUMNS], "float32"),
                    "$": plain,
                },
                ARGMAX: {LOGITS: spec.Tensor([1, 1, self.vocab], "float32"), "$": plain},
                SAMPLE: {
                    LOGITS: spec.Tensor([1, 1, self.vocab], "float32"),
                    SAMPLING: spec.Tensor([PARAMS], "float32"),
                    "$": plain,
                },
                ARGMAX_ROWS: {
                    LOGITS: spec.Tensor([1, VERIFY_VAR, self.vocab], "float32"),
                    "$": plain,
                },
                LOGPROBS: {
                    LOGITS: spec.Tensor([1, 1, self.vocab], "float32"),
                    TOKEN: spec.Tensor([1], "int32"),
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
    return [ARGMAX, ARGMAX_ROWS, SAMPLE, EDIT, LOGPROBS]
