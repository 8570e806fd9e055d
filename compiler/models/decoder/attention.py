"""Self-attention over a KV cache: grouped-query heads, rope from a table of cos and sin, and
the variants families switch on (a sliding window, a score scale, a soft cap of the scores,
RMSNorm over each query and key head, biases on the projections)."""

from __future__ import annotations

from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ...targets import Target
from .. import kernels
from ..common import Formats, QuantizedLinear, add_projections
from .config import DecoderConfig
from .norms import rms_norm


class Attention(nn.Module):
    """Self-attention with rope over a KV cache, its cos and sin read from a table (a
    parameter of the model, see rope.py). The config gives the heads (fewer key/value heads
    than query heads: grouped-query attention), the biases and the q/k norms. `window` and
    `scale` (of the scores) default to the config's and 1 / sqrt(head_dim); families whose
    layers differ (local and global layers) give them per layer. `softcap`: scores become
    softcap * tanh(score / softcap); 0: as they are."""

    def __init__(
        self,
        config: DecoderConfig,
        formats: Formats,
        dtype: str,
        capacity: int,
        target: Target,
        window: int | None = None,
        scale: float | None = None,
        softcap: float = 0.0,
    ):
        self.config = config
        self.target = target
        self.softcap = softcap
        self.capacity = capacity
        self.scale = scale
        # A sliding window at least as long as the cache changes nothing.
        window = (config.sliding_window if window is None else window) or 0
        self.window = window if window < capacity else 0
        h, kvh, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        sizes = {"q_proj": h * d, "k_proj": kvh * d, "v_proj": kvh * d}
        self.qkv = add_projections(
            self, config.hidden_size, sizes, "qkv_proj", formats, target, config.qkv_bias, dtype
        )
        self.o_proj = QuantizedLinear(
            h * d, config.hidden_size, formats("o_proj"), target, config.o_bias, dtype
        )
        if config.qk_norm:  # RMSNorm over each query and key head
            self.q_norm = rms_norm(d, config.rms_norm_eps, dtype)
            self.k_norm = rms_norm(d, config.rms_norm_eps, dtype)

    def forward(
        self,
        x: Tensor | kernels.Pending,
        k_cache: Tensor,
        v_cache: Tensor,
        total_len: tirx.Var,
        rope_table: Tensor,
        residual: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(residual +) the attention's output, and the updated caches."""
        c = self.config
        h, kvh, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        seq = x.shape[1]
        # One fused projection, or q, k and v in runs of those whose formats agree (q/k and v,
        # or each apart), read by one kernel: the q/k norms, rope, the cache append and
        # attention (kernels.py).
        projections = [getattr(self, name)(x, name) for name in self.qkv]
        sizes = (h * d, kvh * d, kvh * d)
        runs, kind = [], 0
        for projection in projections:  # how many of q, k and v each holds
            run, total = 0, 0
            while total < int(projection.shape[-1]):
                total, run = total + sizes[kind + run], run + 1
            runs.append(run)
            kind += run
        if len(projections) == 1:
            projections = [op.reshape(projections[0], (1, seq, h + 2 * kvh, d))]
        dtype = x.dtype
        norms = [self.q_norm.weight, self.k_norm.weight] if c.qk_norm else []
        func = kernels.attention_func(
            h,
            kvh,
            d,
            self.capacity,
            dtype,
            self.target,
            int(rope_table.shape[1]),
            self.window,
            self.scale,
            self.softcap,
            c.rms_norm_eps if c.qk_norm else None,
            fused_qkv=len(projections) == 1,
            runs=tuple(runs),
        )
        k_cache, v_cache, out = op.tensor_ir_inplace_op(
            func,
            "attention",
            [*projections, k_cache, v_cache, rope_table, *norms, total_len],
            [len(projections), len(projections) + 1, -1],
            [
                Tensor.placeholder(k_cache.shape, dtype),
                Tensor.placeholder(v_cache.shape, dtype),
                Tensor.placeholder([1, seq, h * d], dtype),
            ],
        )
        return self.o_proj(out, "o_proj", residual), k_cache, v_cache
