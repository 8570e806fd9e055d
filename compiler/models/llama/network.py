"""The llama network: pre-norm layers of RMSNorm, attention (grouped-query, rope, an optional
sliding window and biases) and a SwiGLU MLP."""

from __future__ import annotations

from tvm.relax.frontend import nn

from ..common import Formats
from ..decoder import MLP, Attention, CausalLM, PreNormLayer


class LlamaForCausalLM(CausalLM):
    def layer(self, index: int, formats: Formats) -> nn.Module:
        c, capacity = self.config, self.context_window
        return PreNormLayer(
            self.hidden_norm,
            Attention(c, formats.below("self_attn."), self.dtype, capacity, self.target),
            MLP(c, formats.below("mlp."), self.target, activation="silu"),
        )
