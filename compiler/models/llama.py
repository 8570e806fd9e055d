"""The llama family (Llama, SmolLM, Mistral): one forward pass, two entry points.

    prefill(input_ids[1, n], kv_cache, total_len) -> logits of the last token [1, 1, vocab]
    decode(input_ids[1, 1],  kv_cache, total_len) -> logits [1, 1, vocab]

`total_len` counts the tokens in the cache after this call; the n new tokens sit at positions
total_len - n .. total_len - 1. The cache is 2 tensors per layer (keys, values), each of
shape [context_window, kv_heads, head_dim], updated in place.
"""

from __future__ import annotations

from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op, spec

from ..config import LlamaConfig
from ..quantization import Scheme
from . import kernels


class QuantizedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, scheme: Scheme):
        self.scheme = scheme
        self.out_features = out_features
        self.part_names = list(scheme.param_shapes(out_features, in_features))
        for part, (shape, dtype) in scheme.param_shapes(out_features, in_features).items():
            setattr(self, part, nn.Parameter(shape, dtype))

    def parts(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self.part_names}

    def forward(self, x: Tensor, name: str = "linear") -> Tensor:
        return kernels.linear(x, self.parts(), self.scheme, self.out_features, name)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, scheme: Scheme, capacity: int):
        self.config = config
        self.capacity = capacity
        h, kvh, d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.qkv_proj = QuantizedLinear(config.hidden_size, (h + 2 * kvh) * d, scheme)
        self.o_proj = QuantizedLinear(h * d, config.hidden_size, scheme)

    def forward(self, x: Tensor, k_cache: Tensor, v_cache: Tensor, total_len: tirx.Var):
        c = self.config
        h, kvh, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        seq = x.shape[1]
        qkv = op.reshape(self.qkv_proj(x, "qkv_proj"), (1, seq, h + 2 * kvh, d))
        qkv = kernels.rotary(qkv, total_len, h + kvh, c.rope_theta)
        dtype = x.dtype
        k_cache, v_cache = op.tensor_ir_inplace_op(
            kernels.kv_append_func(h, kvh, d, self.capacity, dtype),
            "kv_append",
            [k_cache, v_cache, qkv, total_len],
            [0, 1],
            [Tensor.placeholder(k_cache.shape, dtype), Tensor.placeholder(v_cache.shape, dtype)],
        )
        out = op.tensor_ir_op(
            kernels.attention_func(h, kvh, d, self.capacity, dtype),
            "attention",
            [qkv, k_cache, v_cache, total_len],
            Tensor.placeholder([1, seq, h * d], dtype),
        )
        return self.o_proj(out, "o_proj"), k_cache, v_cache


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig, scheme: Scheme):
        self.inter = config.intermediate_size
        self.gate_up_proj = QuantizedLinear(config.hidden_size, 2 * self.inter, scheme)
        self.down_proj = QuantizedLinear(self.inter, config.hidden_size, scheme)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = op.split(self.gate_up_proj(x, "gate_up_proj"), 2, axis=-1)
        return self.down_proj(op.silu(gate) * up, "down_proj")


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, scheme: Scheme, capacity: int):
        eps = config.rms_norm_eps
        self.input_layernorm = nn.RMSNorm(
            config.hidden_size, -1, eps, bias=False, dtype=scheme.dtype
        )
        self.self_attn = Attention(config, scheme, capacity)
        self.post_attention_layernorm = nn.RMSNorm(
            config.hidden_size, -1, eps, bias=False, dtype=scheme.dtype
        )
        self.mlp = MLP(config, scheme)

    def forward(self, x: Tensor, k_cache: Tensor, v_cache: Tensor, total_len: tirx.Var):
        attn, k_cache, v_cache = self.self_attn(
            self.input_layernorm(x), k_cache, v_cache, total_len
        )
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, k_cache, v_cache


class LlamaForCausalLM(nn.Module):
    def __init__(self, config: LlamaConfig, scheme: Scheme, context_window: int):
        self.config = config
        self.scheme = scheme
        self.context_window = context_window
        self.embed_tokens = QuantizedLinear(config.hidden_size, config.vocab_size, scheme)
        self.layers = nn.ModuleList(
            [DecoderLayer(config, scheme, context_window) for _ in range(config.num_hidden_layers)]
        )
        self.norm = nn.RMSNorm(
            config.hidden_size, -1, config.rms_norm_eps, bias=False, dtype=scheme.dtype
        )
        if not config.tie_word_embeddings:
            self.lm_head = QuantizedLinear(config.hidden_size, config.vocab_size, scheme)

    def _forward(self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var):
        c = self.config
        x = kernels.embedding(input_ids, self.embed_tokens.parts(), self.scheme, c.hidden_size)
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, kv_cache[2 * i], kv_cache[2 * i + 1], total_len)
            new_cache += [k, v]
        if not (isinstance(x.shape[1], int) and x.shape[1] == 1):
            x = _last_token(x)
        x = self.norm(x)
        head = self.embed_tokens if c.tie_word_embeddings else self.lm_head
        logits = head(x, "lm_head")
        if logits.dtype != "float32":
            logits = logits.astype("float32")
        return logits, new_cache

    def prefill(self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var):
        return self._forward(input_ids, kv_cache, total_len)

    def decode(self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var):
        return self._forward(input_ids, kv_cache, total_len)

    def cache_spec(self) -> list[spec.Tensor]:
        c = self.config
        shape = [self.context_window, c.num_key_value_heads, c.head_dim]
        return [spec.Tensor(shape, self.scheme.dtype) for _ in range(2 * c.num_hidden_layers)]

    def get_default_spec(self) -> spec.ModuleSpec:
        cache = self.cache_spec()
        mod_spec = {
            "prefill": {
                "input_ids": spec.Tensor([1, "n"], "int32"),
                "kv_cache": cache,
                "total_len": spec.Int(),
                "$": {"param_mode": "plain", "effect_mode": "none"},
            },
            "decode": {
                "input_ids": spec.Tensor([1, 1], "int32"),
                "kv_cache": cache,
                "total_len": spec.Int(),
                "$": {"param_mode": "plain", "effect_mode": "none"},
            },
        }
        return spec.ModuleSpec.from_raw(mod_spec, self)


def _last_token(x: Tensor) -> Tensor:
    from tvm import te

    def compute(xt: te.Tensor) -> te.Tensor:
        batch, seq, hidden = xt.shape
        return te.compute((batch, 1, hidden), lambda b, _, c: xt[b, seq - 1, c], name="last_token")

    return op.tensor_expr_op(compute, "last_token", [x])
