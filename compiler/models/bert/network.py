"""The BERT encoder: one entry point over a batch of inputs padded to one length,

    embed(input_ids[b, n], lengths[b]) -> pooled states [b, hidden]

token, position and token-type embeddings summed and normalized, then layers of
bidirectional attention and a GELU MLP, each added to its input and normalized after (post-LN);
the pooling mean over each input's `lengths` tokens (never the padding) or its first token.
Scaling to unit length, where the model asks for it, is the runtime's last step. Every input
is one segment (token type 0), as sentence-transformers encodes single texts."""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op, spec

from ...targets import Target
from .. import kernels
from ..common import Formats, QuantizedLinear, add_projections, project
from .config import BertConfig

# Inputs per forward: the runtime splits larger batches (the activations are sized for it).
MAX_BATCH = 16


class EncoderLayer(nn.Module):
    def __init__(self, c: BertConfig, formats: Formats, dtype: str, target: Target):
        h, eps = c.hidden_size, c.layer_norm_eps
        self.config = c
        self.target = target
        sizes = {"q_proj": h, "k_proj": h, "v_proj": h}
        self.qkv = add_projections(self, h, sizes, "qkv_proj", formats, target, True, dtype)
        self.o_proj = QuantizedLinear(h, h, formats("o_proj"), target, True, dtype)
        self.attention_norm = nn.LayerNorm(h, eps, dtype=dtype)
        self.up_proj = QuantizedLinear(
            h, c.intermediate_size, formats("up_proj"), target, True, dtype
        )
        self.down_proj = QuantizedLinear(
            c.intermediate_size, h, formats("down_proj"), target, True, dtype
        )
        self.output_norm = nn.LayerNorm(h, eps, dtype=dtype)

    def forward(self, x: Tensor, lengths: Tensor, b, n) -> Tensor:
        """x (1, b * n, hidden): the batch's rows one after another, as the matmuls take it."""
        c = self.config
        heads, dim = c.num_attention_heads, c.head_dim
        qkv = op.reshape(project(self, self.qkv, x), (b, n, 3 * heads, dim))
        attended = op.tensor_ir_op(
            kernels.encoder_attention_func(heads, dim, x.dtype, self.target),
            "encoder_attention",
            [qkv, lengths],
            Tensor.placeholder([b, n, c.hidden_size], x.dtype),
        )
        attended = op.reshape(attended, (1, b * n, c.hidden_size))
        x = self.attention_norm(x + self.o_proj(attended, "o_proj"))
        inner = op.gelu(self.up_proj(x, "up_proj"))
        return self.output_norm(x + self.down_proj(inner, "down_proj"))


class BertEncoder(nn.Module):
    def __init__(
        self,
        config: BertConfig,
        formats: dict[str, str],
        dtype: str,
        max_length: int,
        target: Target,
    ):
        self.config = config
        self.dtype = dtype
        self.max_length = max_length
        lookup = Formats(formats)
        h = config.hidden_size
        self.embed_tokens = QuantizedLinear(h, config.vocab_size, lookup("embed_tokens"), target)
        self.embed_positions = QuantizedLinear(
            h, config.max_position_embeddings, lookup("embed_positions"), target
        )
        self.embed_types = QuantizedLinear(h, config.type_vocab_size, lookup("embed_types"), target)
        self.embed_norm = nn.LayerNorm(h, config.layer_norm_eps, dtype=dtype)
        self.layers = nn.ModuleList(
            [
                EncoderLayer(config, lookup.below(f"layers.{i}."), dtype, target)
                for i in range(config.num_hidden_layers)
            ]
        )

    def _embeddings(self, input_ids: Tensor) -> Tensor:
        tables = [self.embed_tokens, self.embed_positions, self.embed_types]
        hidden, dtype = self.config.hidden_size, self.dtype

        def compute(ids: te.Tensor, *parts: te.Tensor) -> te.Tensor:
            split, rest = [], list(parts)
            for table in tables:  # each table's parts, in the order they were passed
                count = len(table.part_names)
                split.append(dict(zip(table.part_names, rest[:count], strict=True)))
                rest = rest[count:]

            def value(s, i, col):
                rows = (ids[s, i], i, tirx.const(0, "int64"))
                return sum(
                    (
                        kernels.weight_value(table.format, p, row, col, dtype)
                        for table, p, row in zip(tables, split, rows, strict=True)
                    ),
                    tirx.const(0, dtype),
                )

            batch, seq = ids.shape
            return te.compute((batch, seq, hidden), value, name="embeddings")

        tensors = [part for table in tables for part in table.parts().values()]
        return op.tensor_expr_op(compute, "embeddings", [input_ids, *tensors])

    def _pool(self, x: Tensor, lengths: Tensor) -> Tensor:
        mean = self.config.pooling == "mean"

        def compute(xt: te.Tensor, lt: te.Tensor) -> te.Tensor:
            batch, seq, hidden = xt.shape
            if not mean:
                return te.compute((batch, hidden), lambda s, c: xt[s, 0, c], name="pool")
            k = te.reduce_axis((0, seq), name="k")
            zero = tirx.const(0, xt.dtype)
            total = te.compute(
                (batch, hidden),
                lambda s, c: te.sum(te.if_then_else(k < lt[s], xt[s, k, c], zero), axis=k),
                name="pool_sum",
            )
            return te.compute(
                (batch, hidden),
                lambda s, c: total[s, c] / tirx.Cast(xt.dtype, lt[s]),
                name="pool",
            )

        return op.tensor_expr_op(compute, "pool", [x, lengths])

    def embed(self, input_ids: Tensor, lengths: Tensor) -> Tensor:
        b, n = input_ids.shape
        h = self.config.hidden_size
        x = self.embed_norm(self._embeddings(input_ids))
        x = op.reshape(x, (1, b * n, h))
        for layer in self.layers:
            x = layer(x, lengths, b, n)
        pooled = self._pool(op.reshape(x, (b, n, h)), lengths)
        return pooled if pooled.dtype == "float32" else pooled.astype("float32")

    def cache_spec(self) -> list[spec.Tensor]:
        return []  # an encoder keeps no state between calls

    def upper_bounds(self, prefill_chunk: int) -> dict[str, int]:
        """The largest value of each symbolic size, which sizes the activation buffers."""
        return {"b": MAX_BATCH, "n": self.max_length}

    def get_default_spec(self) -> spec.ModuleSpec:
        mod_spec = {
            "embed": {
                "input_ids": spec.Tensor(["b", "n"], "int32"),
                "lengths": spec.Tensor(["b"], "int32"),
                "$": {"param_mode": "plain", "effect_mode": "none"},
            },
        }
        return spec.ModuleSpec.from_raw(mod_spec, self)
