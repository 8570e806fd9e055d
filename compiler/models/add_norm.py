"""The add of a normed branch to the residual stream, and the next RMSNorm of the sum, in one
kernel (Gemma's sandwich layers: x + post_norm(branch), then the next pre-norm of it):

    x_out  = x + rms_norm(branch, w_branch)
    normed = rms_norm(x_out, w_next)

written out by hand (two reductions over a row and two outputs, a pattern no schedule rule
takes), as one workgroup per token row on WebGPU, as a norm's kernel is: `Target.row_threads`
invocations share the row's sums of squares (a tree in workgroup memory where there are
several); on the CPU the rows one after another in the calling thread. Like the separate
kernels it replaces (TVM's legalization of relax's rms_norm and the add), the norms compute
in float32: each sum of squares in float32, the normed value (x * rsqrt(mean + eps)) * w,
then rounded to the activations' dtype, and the sum x + that in the activations' dtype.

On the gpu kernel set neither is a kernel of its own in decode: the one-token linears that
read `normed` compute both as they read it (`AddNormed`), in each workgroup, and the first of
them writes x_out.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script import builder as B

from ..targets import Target
from ..targets.stages import ADD_STAGES, NORM_STAGES, Stage
from .kernels import Pending, builder_loops, rsqrt_mean_square

F32 = "float32"


def _f32(value):
    return tirx.Cast(F32, value)


def _sync() -> None:
    """A workgroup barrier over workgroup memory."""
    B.evaluate(tirx.call_intrin("int32", "tirx.tvm_storage_sync", "shared"))


def add_norm_func(
    hidden: int, dtype: str, branch_eps: float, next_eps: float, target: Target
) -> tirx.PrimFunc:
    """x (1, n, hidden), branch, w_branch (hidden,), w_next -> x_out = x + rms_norm(branch,
    w_branch), normed = rms_norm(x_out, w_next), one workgroup (or task) per token row."""
    threads = 1 if target.cpu else target.row_threads
    assert threads & (threads - 1) == 0, "the tree of partial sums halves the invocations"
    per = -(-hidden // threads)  # the elements of a row each invocation takes
    # (loop over rows, loop over a row's invocations, scope of an invocation's buffers). On a
    # CPU not a parallel loop: a row takes about a microsecond, and a parallel launch waits for
    # the CPU backend's worker threads: with one, this kernel took 1.4 ms a launch in Gemma 3's
    # decode step (`scripts/bench --profile` on a loaded machine), where the two norm kernels
    # it replaces took a few microseconds.
    rows_of, invocations, scope = builder_loops(target, parallel=False)
    f32 = _f32

    with IRBuilder() as builder:
        with B.prim_func(private=True):
            B.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            n = B.int64()
            x = B.arg("x", B.Buffer((1, n, hidden), dtype))
            branch = B.arg("branch", B.Buffer((1, n, hidden), dtype))
            w_branch = B.arg("w_branch", B.Buffer((hidden,), dtype))
            w_next = B.arg("w_next", B.Buffer((hidden,), dtype))
            x_out = B.arg("x_out", B.Buffer((1, n, hidden), dtype))
            normed = B.arg("normed", B.Buffer((1, n, hidden), dtype))
            with rows_of(n) as row:
                with invocations(threads) as tx:
                    partial = B.alloc_buffer((1,), F32, scope=scope)
                    factor = B.alloc_buffer((1,), F32, scope=scope)
                    shared = (
                        B.alloc_buffer((threads,), F32, scope="shared") if threads > 1 else None
                    )

                    def each(body) -> None:
                        """body(element) for this invocation's elements of the row."""
                        with B.serial(0, per) as j:
                            element = j * threads + tx
                            if hidden % threads:
                                with B.If(element < hidden):
                                    with B.Then():
                                        body(element)
                            else:
                                body(element)

                    def rsqrt_of_mean_square(source, eps: float) -> None:
                        """factor = 1 / sqrt(mean(source[row]^2) + eps), the sum in float32."""
                        B.buffer_store(partial, tirx.const(0, F32), [0])

                        def square(k) -> None:
                            value = f32(source[0, row, k])
                            B.buffer_store(partial, partial[0] + value * value, [0])

                        each(square)
                        total = partial[0]
                        if shared is not None:
                            B.buffer_store(shared, partial[0], [tx])
                            _sync()
                            half = threads // 2
                            while half:
                                with B.If(tx < half):
                                    with B.Then():
                                        B.buffer_store(shared, shared[tx] + shared[tx + half], [tx])
                                _sync()
                                half //= 2
                            total = shared[0]
                        mean = total / tirx.const(hidden, F32)
                        B.buffer_store(factor, tirx.rsqrt(mean + tirx.const(eps, F32)), [0])
                        if shared is not None:
                            _sync()  # every invocation has read shared[0] before it is reused

                    rsqrt_of_mean_square(branch, branch_eps)

                    def add(k) -> None:
                        scaled = factor[0] * f32(branch[0, row, k]) * f32(w_branch[k])
                        B.buffer_store(x_out, x[0, row, k] + tirx.Cast(dtype, scaled), [0, row, k])

                    each(add)
                    # x_out read back by the invocation that wrote each element.
                    rsqrt_of_mean_square(x_out, next_eps)

                    def norm(k) -> None:
                        scaled = factor[0] * f32(x_out[0, row, k]) * f32(w_next[k])
                        B.buffer_store(normed, tirx.Cast(dtype, scaled), [0, row, k])

                    each(norm)
    return builder.get()


def add_norm(
    x: Tensor, branch: Tensor, branch_norm: nn.RMSNorm, next_norm: nn.RMSNorm, target: Target
) -> tuple[Tensor, Tensor]:
    """(x + branch_norm(branch), next_norm of that), in one kernel."""
    hidden = int(x.shape[-1])
    func = add_norm_func(hidden, x.dtype, branch_norm.epsilon, next_norm.epsilon, target)
    x_out, normed = op.tensor_ir_op(
        func,
        "add_norm",
        [x, branch, branch_norm.weight, next_norm.weight],
        [Tensor.placeholder(x.shape, x.dtype), Tensor.placeholder(x.shape, x.dtype)],
    )
    return x_out, normed


class AddNormed(Pending):
    """(x + branch_norm(branch), next_norm of that) as `add_norm` computes them, not yet
    computed: the normed sum for linears to read (a `Pending` input: on the gpu set a one-token
    linear computes it in each workgroup, in float32 as add_norm does, and the first such linear
    writes the sum, `Stage.RESIDUAL`), the sum itself for the layer's next add (`residual`)."""

    rows = 2  # the sum and its norm

    def __init__(
        self,
        x: Tensor,
        branch: Tensor,
        branch_norm: nn.RMSNorm,
        next_norm: nn.RMSNorm,
        target: Target,
    ):
        self.x = x
        self.branch = branch
        self.branch_norm = branch_norm
        self.next_norm = next_norm
        self.target = target
        self._sum: Tensor | None = None
        self._applied: Tensor | None = None

    def applied(self) -> Tensor:
        if self._applied is None:
            norms = (self.branch_norm, self.next_norm)
            self._sum, self._applied = add_norm(self.x, self.branch, *norms, self.target)
        return self._applied

    def residual(self) -> Tensor:
        """x + branch_norm(branch): as the first linear that read this wrote it, else as
        add_norm's kernel does."""
        if self._sum is None:
            self.applied()
        assert self._sum is not None
        return self._sum

    def inputs(self) -> list[Tensor]:
        return [self.x, self.branch, self.branch_norm.weight, self.next_norm.weight]

    def stages(self, *tensors: te.Tensor) -> tuple[te.Tensor, list[te.Tensor]]:
        xt, branch, w_branch, w_next = tensors
        dtype = xt.dtype
        eps = float(self.branch_norm.epsilon)
        branch_factor = rsqrt_mean_square(branch, eps, F32, ADD_STAGES[:2])

        summed = te.compute(
            xt.shape,
            lambda b, i, c: (
                xt[b, i, c]
                + tirx.Cast(dtype, branch_factor(b, i) * _f32(branch[b, i, c]) * _f32(w_branch[c]))
            ),
            name=Stage.SUMMED,
        )
        eps = float(self.next_norm.epsilon)
        factor = rsqrt_mean_square(summed, eps, F32, NORM_STAGES[:2])
        normed = te.compute(
            xt.shape,
            lambda b, i, c: tirx.Cast(
                dtype, factor(b, i) * _f32(summed[b, i, c]) * _f32(w_next[c])
            ),
            name=Stage.NORMED,
        )
        if not self.writes():
            return normed, []
        return normed, [te.compute(xt.shape, lambda *i: summed[i], name=Stage.RESIDUAL)]

    def writes(self) -> int:
        return int(self._sum is None)

    def written(self, outputs: list[Tensor]) -> None:
        if outputs:
            (self._sum,) = outputs
