"""The layer stacks decoder families are made of: each a `CausalLM` that says what its layers
are. A family's network names one (and its docstring what the family switches on in it)."""

from __future__ import annotations

import math

from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor

from .. import kernels
from ..add_norm import AddNormed
from ..common import Formats
from .attention import Attention
from .blocks import MLP, PreNormLayer, SandwichNormLayer, soft_cap
from .causal_lm import CausalLM, Keep
from .config import LocalGlobalConfig


class PreNormSwiGLU(CausalLM):
    """Pre-norm layers of RMSNorm, attention as the config sets it (grouped-query heads, rope,
    an optional sliding window, biases, q/k norms) and a SwiGLU MLP: Llama, Qwen2, Qwen3,
    Phi-3."""

    def layer(self, index: int, formats: Formats) -> nn.Module:
        c, capacity = self.config, self.context_window
        return PreNormLayer(
            self.hidden_norm,
            Attention(c, formats.below("self_attn."), self.dtype, capacity, self.target),
            MLP(c, formats.below("mlp."), self.target, activation="silu"),
            self.target,
        )


class SandwichGeGLU(CausalLM):
    """Gemma's: norms before and after both attention and MLP; attention with scores scaled by
    query_pre_attn_scalar^-0.5 and soft-capped where the config says, local layers (a sliding
    window, their own rope where the config has one) between global ones; a GeGLU (tanh-GELU)
    MLP; embeddings scaled by sqrt(hidden); logits soft-capped where the config says."""

    config: LocalGlobalConfig

    def layer(self, index: int, formats: Formats) -> nn.Module:
        c, capacity = self.config, self.context_window
        attention = Attention(
            c,
            formats.below("self_attn."),
            self.dtype,
            capacity,
            self.target,
            window=c.sliding_window if c.sliding_layers[index] else 0,
            scale=c.query_pre_attn_scalar**-0.5,
            softcap=c.attn_logit_softcapping,
        )
        mlp = MLP(c, formats.below("mlp."), self.target, activation="gelu_tanh")
        return SandwichNormLayer(self.hidden_norm, attention, mlp, self.target)

    def hidden_states(
        self, x: Tensor, kv_cache: list[Tensor], total_len: tirx.Var, keep: Keep
    ) -> tuple[Tensor, list[Tensor]]:
        # Each layer hands the next its x with x's input norm (SandwichNormLayer), the last
        # layer with the final norm.
        layers = list(self.layers)
        state: Tensor | AddNormed = x
        normed = kernels.rms_normed(layers[0].input_layernorm, x, self.target)
        new_cache = []
        for i, layer in enumerate(layers):
            next_norm = layers[i + 1].input_layernorm if i + 1 < len(layers) else self.norm
            table = getattr(self, self.config.layer_rope(i))
            state, k, v = layer(
                state, normed, next_norm, kv_cache[2 * i], kv_cache[2 * i + 1], total_len, table
            )
            normed = state
            new_cache += [k, v]
        return keep(kernels.plain(normed)), new_cache

    def embed(self, input_ids: Tensor, scale: float = 1.0) -> Tensor:
        # transformers multiplies by sqrt(hidden) rounded to the weights' dtype.
        return super().embed(input_ids, scale * math.sqrt(self.config.hidden_size))

    def finish_logits(self, logits: Tensor) -> Tensor:
        return soft_cap(logits, self.config.final_logit_softcapping)
