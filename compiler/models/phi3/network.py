"""The phi3 network: pre-norm layers of RMSNorm, attention (grouped-query, rope on all or a part
of each head, an optional sliding window) and a SwiGLU MLP, its projections fused as the
checkpoints store them."""

from __future__ import annotations

from tvm.relax.frontend import nn

from ..common import Formats
from ..decoder import MLP, Attention, CausalLM, PreNormLayer


class Phi3ForCausalLM(CausalLM):
    def layer(self, index: int, formats: Formats) -> nn.Module:
        c, capacity = self.config, self.context_window
        return PreNormLayer(
            self.hidden_norm,
            Attention(c, formats.below("self_attn."), self.dtype, capacity, self.target),
            MLP(c, formats.below("mlp."), self.target, activation="silu"),
        )
