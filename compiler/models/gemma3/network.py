"""Gemma 3 (text): llama's attention with RMSNorm over each query and key head, scores scaled
by query_pre_attn_scalar^-0.5, local layers (a sliding window, their own rope base) between
global ones; norms before and after both attention and MLP; a tanh-GELU MLP; embeddings
scaled by sqrt(hidden); Gemma 2's soft caps on scores and logits where the config has them.
Norm weights arrive as (1 + w), see weights.py."""

from __future__ import annotations

import math

from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ...targets import Target
from ..common import Formats
from ..llama.network import MLP, Attention, LlamaForCausalLM
from .config import Gemma3Config


class Gemma3DecoderLayer(nn.Module):
    def __init__(
        self,
        config: Gemma3Config,
        formats: Formats,
        dtype: str,
        capacity: int,
        target: Target,
        index: int,
    ):
        local = config.sliding_layers[index]
        for norm in NORMS:
            setattr(
                self,
                norm,
                nn.RMSNorm(config.hidden_size, -1, config.rms_norm_eps, bias=False, dtype=dtype),
            )
        self.self_attn = Attention(
            config,
            formats.below("self_attn."),
            dtype,
            capacity,
            target,
            window=config.sliding_window if local else 0,
            scale=config.query_pre_attn_scalar**-0.5,
            softcap=config.attn_logit_softcapping,
        )
        self.mlp = MLP(config, formats.below("mlp."), target, activation="gelu_tanh")

    def forward(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, total_len: tirx.Var, rope_table: Tensor
    ):
        attn, k_cache, v_cache = self.self_attn(
            self.input_layernorm(x), k_cache, v_cache, total_len, rope_table
        )
        x = x + self.post_attention_layernorm(attn)
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        return x, k_cache, v_cache


NORMS = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)


class Gemma3ForCausalLM(LlamaForCausalLM):
    config: Gemma3Config

    @staticmethod
    def layer(config, formats, dtype, capacity, target, index):
        return Gemma3DecoderLayer(config, formats, dtype, capacity, target, index)

    def embed(self, input_ids: Tensor) -> Tensor:
        # transformers multiplies by sqrt(hidden) rounded to the weights' dtype.
        return super().embed(input_ids) * math.sqrt(self.config.hidden_size)

    def finish_logits(self, logits: Tensor) -> Tensor:
        cap = self.config.final_logit_softcapping  # Gemma 2's
        return op.tanh(logits / cap) * cap if cap else logits
