"""The llama family's weights: Hugging Face names -> the network's (q/k/v and gate/up fused
where their formats agree), and GGUF files -> Hugging Face names, layout and config."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ...errors import BuildError
from ...formats import SourceTensor, StoredBlocks
from ...gguf_metadata import GGUFMetadata
from ..common import concat_rows, required
from ..family import NetworkWeights
from ..rope import Rope, default_frequencies
from .config import LlamaConfig


def network_weights(
    tensors: Mapping[str, SourceTensor],
    c: LlamaConfig,
    format_name: Callable[[SourceTensor, str], str],
    model_id: str,
) -> NetworkWeights:
    get = required(tensors, model_id)

    def fused(prefix: str, names: list[str], into: str, bias: bool = False) -> NetworkWeights:
        """Projections that read the same input, as one matmul when their weights share a
        format (always, when the scheme quantizes them all alike); their biases alike."""
        parts = [get(f"model.{prefix}{n}.weight") for n in names]
        biases = [get(f"model.{prefix}{n}.bias") for n in names] if bias else []
        if len({format_name(x, n) for x, n in zip(parts, names, strict=True)}) == 1:
            yield prefix + into, concat_rows(parts)
            if bias:
                yield f"{prefix}{into}.bias", np.concatenate([np.asarray(b) for b in biases])
            return
        for i, name in enumerate(names):
            yield prefix + name, parts[i]
            if bias:
                yield f"{prefix}{name}.bias", biases[i]

    yield "embed_tokens", get("model.embed_tokens.weight")
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        for norm in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            yield p + norm, get(f"model.{p}{norm}")
        attn = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
        yield from fused(p, attn, "self_attn.qkv_proj", c.qkv_bias)
        if c.qk_norm:
            for norm in ("self_attn.q_norm.weight", "self_attn.k_norm.weight"):
                yield p + norm, get(f"model.{p}{norm}")
        yield p + "self_attn.o_proj", get(f"model.{p}self_attn.o_proj.weight")
        if c.o_bias:
            yield p + "self_attn.o_proj.bias", get(f"model.{p}self_attn.o_proj.bias")
        yield from fused(p, ["mlp.gate_proj", "mlp.up_proj"], "mlp.gate_up_proj")
        yield p + "mlp.down_proj", get(f"model.{p}mlp.down_proj.weight")
    yield "norm.weight", get("model.norm.weight")
    if not c.tie_word_embeddings:
        yield "lm_head", get("lm_head.weight")


# ---------------------------------------------------------------------------------------------
# GGUF files (llama.cpp's names and layout)

ROPE_FREQS = "rope_freqs.weight"  # per-dimension rope divisors (Llama 3.1 scaling)

GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
GGUF_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm",  # Qwen3
    "attn_k_norm": "self_attn.k_norm",
}


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor, or None for one the network has no use for
    (a bias, rope_freqs, ...)."""
    if gguf_name in GGUF_NAMES:
        return GGUF_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) != 4 or parts[0] != "blk" or not parts[1].isdigit():
        return None
    kind = GGUF_LAYER_NAMES.get(parts[2])
    return f"model.layers.{parts[1]}.{kind}.{parts[3]}" if kind else None


def unpermute_rope_rows(tensor: SourceTensor, heads: int) -> SourceTensor:
    """Undoes llama.cpp's reordering of Q/K rows (interleaved RoPE pairs -> HF halves)."""
    rows = tensor.shape[0]
    order = np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(1, 2).reshape(rows)
    return tensor.take_rows(order) if isinstance(tensor, StoredBlocks) else tensor[order]


def gguf_tensor(name: str, tensor: SourceTensor, c: LlamaConfig) -> tuple[str, SourceTensor] | None:
    if name == ROPE_FREQS:
        return None  # in the config's rope
    hf = hf_name(name)
    head_norm = hf is not None and hf.endswith(("q_norm.weight", "k_norm.weight"))
    if hf is None or not hf.endswith(".weight") or (head_norm and not c.qk_norm):
        raise BuildError(f"GGUF tensor {name} is not part of the llama network")
    if hf.endswith("q_proj.weight"):
        tensor = unpermute_rope_rows(tensor, c.num_attention_heads)
    elif hf.endswith("k_proj.weight"):
        tensor = unpermute_rope_rows(tensor, c.num_key_value_heads)
    return hf, tensor


def gguf_config(
    meta: GGUFMetadata, tensor_names: set[str], arch: str = "llama", partial_rotary: bool = False
) -> LlamaConfig:
    """The config from `arch`.* metadata; the head is tied when the file has no output.weight.
    `partial_rotary`: whether the family may rotate a part of each head (rope.dimension_count
    below head_dim); llama's files permute Q/K rows for all of it, so it may not."""
    where = str(meta.path)
    scaling = meta.field(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise BuildError(
            f"{where}: GGUF metadata {arch}.rope.scaling.type={scaling!r} is not implemented"
        )
    heads = meta.number(f"{arch}.attention.head_count")
    kv_heads = meta.number(f"{arch}.attention.head_count_kv", int, heads)
    hidden = meta.number(f"{arch}.embedding_length")
    head_dim = meta.number(f"{arch}.attention.key_length", int, hidden // max(heads, 1))
    rotated = meta.number(f"{arch}.rope.dimension_count", int, head_dim)
    if rotated != head_dim and not (partial_rotary and 0 < rotated < head_dim and rotated % 2 == 0):
        raise BuildError(
            f"{where}: GGUF metadata {arch}.rope.dimension_count={rotated} (partial rotary, "
            f"head_dim {head_dim}) is not implemented"
        )
    vocab = len(meta.field("tokenizer.ggml.tokens") or [])
    factors = meta.vector(ROPE_FREQS, rotated // 2) if ROPE_FREQS in tensor_names else None
    theta = meta.number(f"{arch}.rope.freq_base", float, 10000.0)
    config = LlamaConfig(
        vocab_size=meta.number(f"{arch}.vocab_size", int, vocab),
        hidden_size=hidden,
        intermediate_size=meta.number(f"{arch}.feed_forward_length"),
        num_hidden_layers=meta.number(f"{arch}.block_count"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=meta.number(f"{arch}.attention.layer_norm_rms_epsilon", float, 1e-5),
        rope=gguf_rope(theta, rotated, factors),
        tie_word_embeddings="output.weight" not in tensor_names,
        max_position_embeddings=meta.number(f"{arch}.context_length", int, 2048),
    )
    config.validate(where)
    return config


def gguf_rope(
    theta: float, rotated: int, factors=None, attention: float = 1.0, max_context=None
) -> Rope:
    """A GGUF file's rope: its base, rotated dimensions and per-pair divisors of the inverse
    frequencies (rope_freqs, LongRoPE's factors), which llama.cpp applies as 1 / (factor *
    base^(2i/d)), as transformers does LongRoPE's."""
    inverse = default_frequencies(theta, rotated, factors)
    return Rope(
        theta=theta,
        rotary_dim=rotated,
        inverse_frequencies=tuple(float(f) for f in inverse),
        attention=attention,
        max_context=max_context,
    )
