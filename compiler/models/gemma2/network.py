"""The gemma2 network: norms before and after both attention and MLP; attention with scores
scaled by query_pre_attn_scalar^-0.5 and soft-capped, local layers (a sliding window) between
global ones; a GeGLU (tanh-GELU) MLP; embeddings scaled by sqrt(hidden); soft-capped logits."""

from __future__ import annotations

import math

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor

from ..common import Formats
from ..decoder import MLP, Attention, CausalLM, LocalGlobalConfig, SandwichNormLayer, soft_cap


class Gemma2ForCausalLM(CausalLM):
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
        return SandwichNormLayer(self.hidden_norm, attention, mlp)

    def embed(self, input_ids: Tensor, scale: float = 1.0) -> Tensor:
        # transformers multiplies by sqrt(hidden) rounded to the weights' dtype.
        return super().embed(input_ids, scale * math.sqrt(self.config.hidden_size))

    def finish_logits(self, logits: Tensor) -> Tensor:
        return soft_cap(logits, self.config.final_logit_softcapping)
