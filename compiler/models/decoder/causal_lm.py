"""The causal language model every decoder family composes: one forward pass, two entry points.

    prefill(input_ids[1, n], kv_cache, total_len) -> logits of the last token [1, 1, vocab]
    decode(input_ids[1, 1],  kv_cache, total_len) -> logits [1, 1, vocab]
    verify(input_ids[1, v],  kv_cache, total_len) -> logits of every token [1, v, vocab]

`verify` is prefill that keeps every position's logits, for speculative decoding: the runtime
runs a token and the draft tokens guessed to follow it in one step, and keeps the draft while
it agrees with what the model picks. Its v is at most VERIFY_TOKENS, which keeps its logits
buffer small (v * vocab floats) where prefill's n goes to the build's prefill chunk.

`total_len` counts the tokens in the cache after this call; the n new tokens sit at positions
total_len - n .. total_len - 1. The cache is 2 tensors per layer (keys, values), each of
shape [context_window, kv_heads, head_dim], updated in place.

Token embedding, the layers, a final RMSNorm, the output head (the embedding when tied) and
the logits' finish. A family says which layer each index is (`layer`), and may change how
tokens are embedded (`embed`), how the layers hand on to each other and to the final norm
(`hidden_states`), and how logits are finished (`finish_logits`).
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, spec

from ...errors import BuildError
from ...targets import Target
from ...targets.base import VERIFY_TOKENS, VERIFY_VAR
from .. import kernels
from ..common import Formats, QuantizedLinear, last_token
from .config import DecoderConfig
from .norms import rms_norm

# The positions of the hidden states whose logits a step needs: all of them, or the last.
Keep = Callable[[Tensor], Tensor]


class CausalLM(nn.Module):
    """`formats` maps each weight's network name (`layers.0.self_attn.qkv_proj`, ...) to its
    storage format; `dtype` is the activations' (float32, or float16 with shader-f16)."""

    def __init__(
        self,
        config: DecoderConfig,
        formats: dict[str, str],
        dtype: str,
        context_window: int,
        target: Target,
    ):
        self.config = config
        self.dtype = dtype
        self.context_window = context_window
        self.target = target
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
            [self.layer(i, lookup.below(f"layers.{i}.")) for i in range(config.num_hidden_layers)]
        )
        self.norm = self.hidden_norm()
        if not config.tie_word_embeddings:
            self.lm_head = QuantizedLinear(
                config.hidden_size, config.vocab_size, lookup("lm_head"), target
            )

    def layer(self, index: int, formats: Formats) -> nn.Module:
        """Decoder layer `index`, its weights' formats in `formats`: the family's composition.
        Called with `forward(x, k_cache, v_cache, total_len, rope_table)`, it returns the new
        x and cache tensors."""
        raise NotImplementedError

    def hidden_norm(self) -> nn.Module:
        """An RMSNorm over the hidden size (the final norm; layers may make theirs with it)."""
        return rms_norm(self.config.hidden_size, self.config.rms_norm_eps, self.dtype)

    def embed(self, input_ids: Tensor, scale: float = 1.0) -> Tensor:
        """The tokens' embeddings, times `scale` (in the same kernel) where it is not 1."""
        embed = self.embed_tokens
        return kernels.embedding(
            input_ids, embed.parts(), embed.format, self.config.hidden_size, self.dtype, scale
        )

    def finish_logits(self, logits: Tensor) -> Tensor:
        """The output head's float32 logits as the model gives them; a family that caps or
        scales them overrides this."""
        return logits

    def hidden_states(
        self, x: Tensor, kv_cache: list[Tensor], total_len: tirx.Var, keep: Keep
    ) -> tuple[Tensor, list[Tensor]]:
        """The layers over the embeddings x, then the final norm, of the positions `keep` keeps
        (what the output head reads), and the new cache tensors."""
        new_cache = []
        for i, layer in enumerate(self.layers):
            table = getattr(self, self.config.layer_rope(i))
            x, k, v = layer(x, kv_cache[2 * i], kv_cache[2 * i + 1], total_len, table)
            new_cache += [k, v]
        return self.norm(keep(x)), new_cache

    def _forward(
        self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var, every: bool = False
    ):
        c = self.config

        def keep(x: Tensor) -> Tensor:
            if every or (isinstance(x.shape[1], int) and x.shape[1] == 1):
                return x
            return last_token(x)

        x, new_cache = self.hidden_states(self.embed(input_ids), kv_cache, total_len, keep)
        head = self.embed_tokens if c.tie_word_embeddings else self.lm_head
        logits = head(x, "lm_head")
        if logits.dtype != "float32":
            logits = logits.astype("float32")
        return self.finish_logits(logits), new_cache

    def prefill(self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var):
        return self._forward(input_ids, kv_cache, total_len)

    def decode(self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var):
        return self._forward(input_ids, kv_cache, total_len)

    def verify(self, input_ids: Tensor, kv_cache: list[Tensor], total_len: tirx.Var):
        return self._forward(input_ids, kv_cache, total_len, every=True)

    def upper_bounds(self, prefill_chunk: int) -> dict[str, int]:
        """The largest value of each symbolic size, which sizes the activation buffers."""
        return {"n": prefill_chunk, VERIFY_VAR: VERIFY_TOKENS, "total_len": self.context_window}

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
            "verify": {
                "input_ids": spec.Tensor([1, VERIFY_VAR], "int32"),
                "kv_cache": cache,
                "total_len": spec.Int(),
                "$": {"param_mode": "plain", "effect_mode": "none"},
            },
        }
        return spec.ModuleSpec.from_raw(mod_spec, self)
