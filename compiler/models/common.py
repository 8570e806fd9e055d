"""Building blocks every family's network shares: linears whose weights keep their storage
format, the table of each weight's format, projections fused when their formats agree, and
the weight-side helper that stacks the rows of fused projections."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..errors import BuildError
from ..formats import Format, SourceTensor, StoredBlocks, get_format
from ..formats.base import float_values
from ..targets import Target
from . import kernels


class QuantizedLinear(nn.Module):
    """A linear layer whose weight is stored in `fmt` and dequantized inside the matmul, with
    a bias in the activations' dtype if `bias` is set."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        fmt: Format,
        target: Target,
        bias: bool = False,
        dtype: str = "",
    ):
        self.format = fmt
        self.target = target
        self.out_features = out_features
        shapes = fmt.parts(out_features, in_features)
        self.part_names = list(shapes)
        for part, (shape, part_dtype) in shapes.items():
            setattr(self, part, nn.Parameter(shape, part_dtype))
        self.bias = nn.Parameter((out_features,), dtype) if bias else None

    def parts(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self.part_names}

    def forward(
        self, x: Tensor | kernels.Pending, name: str = "linear", residual: Tensor | None = None
    ) -> Tensor:
        """The product (+ bias), added to `residual` where one is given."""
        fmt, rows, target = self.format, self.out_features, self.target
        return kernels.linear(x, self.parts(), fmt, rows, name, target, residual, self.bias)

    def gated(self, x: Tensor | kernels.Pending, activation: str) -> Tensor:
        """act(gate) * up of a gated MLP whose gate and up rows this linear holds (in halves)."""
        inter = self.out_features // 2
        return kernels.gated_linear(x, self.parts(), self.format, inter, activation, self.target)


class Formats:
    """Each weight's format, by network name below `prefix`; `find` gives None for a weight
    not built (a projection built fused with others)."""

    def __init__(self, names: dict[str, str], prefix: str = ""):
        self.names = names
        self.prefix = prefix

    def __call__(self, name: str) -> Format:
        found = self.find(name)
        if found is None:
            raise KeyError(f"no weight {self.prefix + name} was built")
        return found

    def find(self, name: str) -> Format | None:
        found = self.names.get(self.prefix + name)
        return get_format(found) if found else None

    def below(self, prefix: str) -> Formats:
        return Formats(self.names, self.prefix + prefix)


def run_name(names: list[str]) -> str:
    """The name of a run of projections fused into one where not all of theirs could be (their
    formats differ): `self_attn.q_proj`, `self_attn.k_proj` -> `self_attn.qk_proj`."""
    prefix = names[0].rpartition(".")[0]
    stems = [name.rpartition(".")[2].removesuffix("_proj") for name in names]
    joined = "".join(stems) if all(len(stem) == 1 for stem in stems) else "_".join(stems)
    return f"{prefix}.{joined}_proj" if prefix else f"{joined}_proj"


def add_projections(
    module: nn.Module,
    in_features: int,
    sizes: dict[str, int],
    fused: str,
    formats: Formats,
    target: Target,
    bias: bool = False,
    dtype: str = "",
) -> list[str]:
    """Linears reading one input, set on `module`: one fused matmul when the build fused their
    weights (they share a format), else one per run of neighbours that the build fused (a
    format each, `run_name`) or per projection. Returns their attribute names, in order."""
    keys, names, start = list(sizes), [], 0
    while start < len(keys):
        for end in range(len(keys), start, -1):  # the longest run from `start` there is
            run = keys[start:end]
            name = fused if len(run) == len(keys) else run[0] if len(run) == 1 else run_name(run)
            fmt = formats.find(name)
            if fmt is not None:
                break
        else:
            fmt = formats(keys[start])  # a one-line error naming the weight
        total = sum(sizes[key] for key in run)
        setattr(module, name, QuantizedLinear(in_features, total, fmt, target, bias, dtype))
        names.append(name)
        start = end
    return names


def project(module: nn.Module, names: list[str], x: Tensor | kernels.Pending) -> Tensor:
    outputs = [getattr(module, name)(x, name) for name in names]
    return outputs[0] if len(outputs) == 1 else op.concat(outputs, dim=-1)


def last_token(x: Tensor) -> Tensor:
    """The last position of x (1, n, hidden): prefill needs only its logits."""

    def compute(xt: te.Tensor) -> te.Tensor:
        batch, seq, hidden = xt.shape
        return te.compute((batch, 1, hidden), lambda b, _, c: xt[b, seq - 1, c], name="last_token")

    return op.tensor_expr_op(compute, "last_token", [x])


def required(tensors: Mapping[str, SourceTensor], model_id: str) -> Callable[[str], SourceTensor]:
    """tensors[name], or a one-line error naming the weight the model lacks."""

    def get(name: str) -> SourceTensor:
        if name not in tensors:
            raise BuildError(f"{model_id}: weight {name} is missing")
        return tensors[name]

    return get


def concat_rows(parts: list[SourceTensor]) -> SourceTensor:
    """Stacks the rows of weights that one fused projection holds; GGUF blocks of one type
    stay blocks."""
    first = parts[0]
    if isinstance(first, StoredBlocks) and all(
        isinstance(p, StoredBlocks) and p.type_name == first.type_name for p in parts
    ):
        rows = sum(p.shape[0] for p in parts)
        data = np.concatenate([p.data for p in parts])
        return StoredBlocks(first.type_name, (rows, first.shape[1]), data)
    return np.concatenate([float_values(p).astype(np.float32) for p in parts])
