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

from ...errors import BuildError
from ...targets import Target
from .. import kernels
from ..common import Formats, QuantizedLinear, add_projections, last_token, project
from .config import LlamaConfig


class Attention(nn.Module):
    """Self-attention with rope over a KV cache, its cos and sin read from a table (the
    `rope_table` parameter of the model, see rope.py). `window` and `scale` (of the scores)
    default to the config's and 1 / sqrt(head_dim); families whose layers differ (Gemma's
    local and global layers) give them per layer. `softcap`: scores become
    softcap * tanh(score / softcap) (Gemma 2); 0: as they are."""

    def __init__(
        self,
        config: LlamaConfig,
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
        if config.qk_norm:  # Qwen3: RMSNorm over each query and key head
            eps = config.rms_norm_eps
            self.q_norm = nn.RMSNorm(d, -1, eps, bias=False, dtype=dtype)
            self.k_norm = nn.RMSNorm(d, -1, eps, bias=False, dtype=dtype)

    def forward(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, total_len: tirx.Var, rope_table: Tensor
    ):
        c = self.config
        h, kvh, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        seq = x.shape[1]
        qkv = op.reshape(project(self, self.qkv, x), (1, seq, h + 2 * kvh, d))
        if c.qk_norm:
            q, k, v = op.split(qkv, [h, h + kvh], axis=2)
            qkv = op.concat([self.q_norm(q), self.k_norm(k), v], dim=2)
        qkv = kernels.rotary(qkv, rope_table, total_len, h + kvh)
        dtype = x.dtype
        k_cache, v_cache = op.tensor_ir_inplace_op(
            kernels.kv_append_func(h, kvh, d, self.capacity, dtype),
            "kv_append",
            [k_cache, v_cache, qkv, total_len],
            [0, 1],
            [Tensor.placeholder(k_cache.shape, dtype), Tensor.placeholder(v_cache.shape, dtype)],
        )
        out = op.tensor_ir_op(
            kernels.attention_func(
                h, kvh, d, self.capacity, dtype, self.target, self.window, self.scale, self.softcap
            ),
            "attention",
            [qkv, k_cache, v_cache, total_len],
            Tensor.placeholder([1, seq, h * d], dtype),
        )
        return self.o_proj(out, "o_proj"), k_cache, v_cache


class MLP(nn.Module):
    """down(act(gate(x)) * up(x)), `act` SiLU or Gemma's tanh-approximated GELU."""

    def __init__(
        self, config: LlamaConfig, formats: Formats, target: Target, activation: str = "silu"
    ):
        self.activation = activation
        self.inter = config.intermediate_size
        sizes = {"gate_proj": self.inter, "up_proj": self.inter}
        self.gate_up = add_projections(
            self, config.hidden_size, sizes, "gate_up_proj", formats, target
        )
        self.down_proj = QuantizedLinear(
            self.inter, config.hidden_size, formats("down_proj"), target
        )

    def forward(self, x: Tensor) -> Tensor:
        gate, up = op.split(project(self, self.gate_up, x), 2, axis=-1)
        act = op.silu(gate) if self.activation == "silu" else op.gelu(gate, approximate="tanh")
        return self.down_proj(act * up, "down_proj")


class DecoderLayer(nn.Module):
    def __init__(
        self, config: LlamaConfig, formats: Formats, dtype: str, capacity: int, target: Target
    ):
        eps = config.rms_norm_eps
        self.input_layernorm = nn.RMSNorm(config.hidden_size, -1, eps, bias=False, dtype=dtype)
        self.self_attn = Attention(config, formats.below("self_attn."), dtype, capacity, target)
        self.post_attention_layernorm = nn.RMSNorm(
            config.hidden_size, -1, eps, bias=False, dtype=dtype
        )
        self.mlp = MLP(config, formats.below("mlp."), target)

    def forward(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, total_len: tirx.Var, rope_table: Tensor
    ):
        attn, k_cache, v_cache = self.self_attn(
            self.input_layernorm(x), k_cache, v_cache, total_len, rope_table
        )
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, k_cache, v_cache


class LlamaForCausalLM(nn.Module):
    """`formats` maps each weight's network name (`layers.0.self_attn.qkv_proj`, ...) to its
    storage format; `dtype` is the activations' (float32, or float16 with shader-f16)."""

    def __init__(
        self,
        config: LlamaConfig,
        formats: dict[str, str],
        dtype: str,
        context_window: int,
        target: Target,
    ):
        self.config = config
        self.dtype = dtype
        self.context_window = context_window
        lookup = Formats(formats)
        # The tables of cos and sin per position (one per rope the layers use), computed by
        # the build (rope.py) and stored with the weights.
        for name, rope in config.rope_tables().items():
            if rope.max_context is not None and context_window > rope.max_context:
                # Past its original context LongRoPE switches to its long factors mid-sequence.
                raise BuildError(
                    f"LongRoPE with a context window above the original {rope.max_context} is "
                    f"not implemented: build with --context-window {rope.max_context} or less"
                )
            setattr(self, name, nn.Parameter((context_window, rope.rotary_dim), dtype))
        self.embed_tokens = QuantizedLinear(
            config.hidden_size, config.vocab_size, lookup("embed_tokens"), target
        )
        self.layers = nn.ModuleList(
            [
                self.layer(config, lookup.below(f"layers.{i}."), dtype, context_window, target, i)
                for i in range(config.num_hidden_layers)
            ]
        )
        self.norm = nn.RMSNorm(config.hidden_size, -1, config.rms_norm_eps, bias=False, dtype=dtype)
        if not config.tie_word_embeddings:
            self.lm_head = QuantizedLinear(
                config.hidden_size, config.vocab_size, lookup("lm_head"), target
            )

    @staticmethod
    def layer(
        config: LlamaConfig,
        formats: Formats,
        dtype: str,
        capacity: int,
        target: Target,
        index: int,
    ):
        """Decoder layer `index`; a family whose layers differ overrides this."""
        return DecoderLayer(config, formats, dtype, capacity, target)

    def embed(self, input_ids: Tensor) -> Tensor:
        embed = self.embed_tokens
        return kernels.embedding(
            input_ids, embed.parts(), embed.format, self.config.hidden_size, self.dtype
        )

    def _forward(self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var):
        c = self.config
        x = self.embed(input_ids)
        new_cache = []
        for i, layer in enumerate(self.layers):
            table = getattr(self, c.layer_rope(i))
            x, k, v = layer(x, kv_cache[2 * i], kv_cache[2 * i + 1], total_len, table)
            new_cache += [k, v]
        if not (isinstance(x.shape[1], int) and x.shape[1] == 1):
            x = last_token(x)
        x = self.norm(x)
        head = self.embed_tokens if c.tie_word_embeddings else self.lm_head
        logits = head(x, "lm_head")
        if logits.dtype != "float32":
            logits = logits.astype("float32")
        return self.finish_logits(logits), new_cache

    def finish_logits(self, logits: Tensor) -> Tensor:
        """The output head's float32 logits as the model gives them; a family that caps or
        scales them overrides this."""
        return logits

    def prefill(self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var):
        return self._forward(input_ids, kv_cache, total_len)

    def decode(self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var):
        return self._forward(input_ids, kv_cache, total_len)

    def upper_bounds(self, prefill_chunk: int) -> dict[str, int]:
        """The largest value of each symbolic size, which sizes the activation buffers."""
        return {"n": prefill_chunk, "total_len": self.context_window}

    def cache_spec(self) -> list[spec.Tensor]:
        c = self.config
        shape = [self.context_window, c.num_key_value_heads, c.head_dim]
        return [spec.Tensor(shape, self.dtype) for _ in range(2 * c.num_hidden_layers)]

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
