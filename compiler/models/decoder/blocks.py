"""The blocks a decoder layer is made of: gated MLPs (SwiGLU, GeGLU with tanh-GELU), and the
two ways layers place their norms around attention and MLP. A family's network picks them."""

from __future__ import annotations

from collections.abc import Callable

from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ...targets import Target
from .. import kernels
from ..add_norm import AddNormed
from ..common import Formats, QuantizedLinear, add_projections, project
from .attention import Attention
from .config import DecoderConfig


class MLP(nn.Module):
    """down(act(gate(x)) * up(x)), `act` one of kernels.ACTIVATIONS: "silu" (SwiGLU) or
    "gelu_tanh" (GeGLU with tanh-approximated GELU, Gemma)."""

    def __init__(
        self, config: DecoderConfig, formats: Formats, target: Target, activation: str = "silu"
    ):
        assert activation in kernels.ACTIVATIONS, activation
        self.activation = activation
        self.inter = config.intermediate_size
        sizes = {"gate_proj": self.inter, "up_proj": self.inter}
        self.gate_up = add_projections(
            self, config.hidden_size, sizes, "gate_up_proj", formats, target
        )
        self.down_proj = QuantizedLinear(
            self.inter, config.hidden_size, formats("down_proj"), target
        )

    def forward(self, x: Tensor | kernels.Pending, residual: Tensor | None = None) -> Tensor:
        """(residual +) the MLP's output."""
        if len(self.gate_up) == 1:  # one weight: the gating is its kernel's epilogue
            gated = getattr(self, self.gate_up[0]).gated(x, self.activation)
        else:
            gate, up = op.split(project(self, self.gate_up, x), 2, axis=-1)
            gated = kernels.gating(gate, up, self.activation)
        return self.down_proj(gated, "down_proj", residual)


def soft_cap(x: Tensor, cap: float) -> Tensor:
    """cap * tanh(x / cap); 0: x as it is."""
    return op.tanh(x / cap) * cap if cap else x


Norm = Callable[[], nn.Module]  # makes one norm over the hidden size


class PreNormLayer(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)); on a target with `norm_prologue` the
    norms run in the projections' kernels where they can (kernels.Normed)."""

    def __init__(self, norm: Norm, attention: Attention, mlp: MLP, target: Target):
        self.input_layernorm = norm()
        self.self_attn = attention
        self.post_attention_layernorm = norm()
        self.mlp = mlp
        self.target = target

    def forward(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, total_len: tirx.Var, rope_table: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        # The residual adds run in the projections' kernels (their epilogues).
        normed = kernels.rms_normed(self.input_layernorm, x, self.target)
        x, k_cache, v_cache = self.self_attn(
            normed, k_cache, v_cache, total_len, rope_table, residual=x
        )
        x = self.mlp(kernels.rms_normed(self.post_attention_layernorm, x, self.target), residual=x)
        return x, k_cache, v_cache


class SandwichNormLayer(nn.Module):
    """Norms before and after both attention and MLP (Gemma 2 and 3):
    x + norm(attention(norm(x))), then x + norm(mlp(norm(x))).

    Each add of a normed branch runs with the norm of the sum that follows it (add_norm.py
    `AddNormed`: one kernel, or on the gpu set the projections that read the normed sum): the
    layer takes x with its input norm (`normed`: from the previous layer, the same AddNormed
    as x) and returns its own sum with `next_norm` applied (the next layer's input norm, or the
    final norm), for the next layer to take as both."""

    def __init__(self, norm: Norm, attention: Attention, mlp: MLP, target: Target):
        self.input_layernorm = norm()
        self.post_attention_layernorm = norm()
        self.pre_feedforward_layernorm = norm()
        self.post_feedforward_layernorm = norm()
        self.self_attn = attention
        self.mlp = mlp
        self.target = target

    def forward(
        self,
        x: Tensor | AddNormed,
        normed: Tensor | kernels.Pending,
        next_norm: nn.RMSNorm,
        k_cache: Tensor,
        v_cache: Tensor,
        total_len: tirx.Var,
        rope_table: Tensor,
    ) -> tuple[AddNormed, Tensor, Tensor]:
        """(next_norm(x) after the layer, and x, as an AddNormed; k_cache, v_cache), `normed`
        being input_layernorm(x)."""
        attn, k_cache, v_cache = self.self_attn(normed, k_cache, v_cache, total_len, rope_table)
        # x of an AddNormed is read once the projections above wrote it.
        x = x.residual() if isinstance(x, AddNormed) else x
        norms = (self.post_attention_layernorm, self.pre_feedforward_layernorm)
        added = AddNormed(x, attn, *norms, self.target)
        mlp = self.mlp(added)
        norms = (self.post_feedforward_layernorm, next_norm)
        return AddNormed(added.residual(), mlp, *norms, self.target), k_cache, v_cache
