"""Reading decoders from GGUF files, as llama.cpp writes them: the `arch`.* metadata keys every
decoder has, llama.cpp's tensor names mapped to Hugging Face's (the base map, which a family
extends or overrides), its Q/K row order, and the tensor reading of decoders named by the base
map. A family's reader picks from these and adds what its files have of their own."""

from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import BuildError
from ...formats import SourceTensor, StoredBlocks
from ...gguf_metadata import GGUFMetadata
from .config import DecoderConfig, LocalGlobalConfig
from .norms import minus_one
from .rope import Rope, default_frequencies

ROPE_FREQS = "rope_freqs.weight"  # per-dimension rope divisors (Llama 3.1 scaling)

GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# llama.cpp's names of a layer's tensors -> Hugging Face's modules below model.layers.N
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
# The layer norms of llama.cpp's files whose layers have norms before and after both attention
# and MLP (Gemma 2 and 3), where ffn_norm is the one before the MLP.
GGUF_SANDWICH_NORMS = {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def hf_name(gguf_name: str, layer_names: dict[str, str] = GGUF_LAYER_NAMES) -> str | None:
    """The Hugging Face name of a GGUF tensor by the global names and `layer_names`, or None
    for one they do not name (a bias, rope_freqs, ...)."""
    if gguf_name in GGUF_NAMES:
        return GGUF_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) != 4 or parts[0] != "blk" or not parts[1].isdigit():
        return None
    kind = layer_names.get(parts[2])
    return f"model.layers.{parts[1]}.{kind}.{parts[3]}" if kind else None


def sandwich_tensor(name: str, tensor: SourceTensor, network: str) -> tuple[str, SourceTensor]:
    """A tensor of a file whose layers have norms before and after both attention and MLP, each
    scaling by 1 + w (Gemma's), by its Hugging Face name; Q/K rows as they are (llama.cpp runs
    Gemma's rope in HF's rotate-half layout). llama.cpp's converter stores such a norm as 1 + w:
    HF's w is given back (`sandwich_weights` adds the 1 again, as transformers' forward does).
    Anything else is refused, naming the `network`."""
    hf = hf_name(name, {**GGUF_LAYER_NAMES, **GGUF_SANDWICH_NORMS})
    if hf is None or not hf.endswith(".weight"):
        raise BuildError(f"GGUF tensor {name} is not part of the {network} network")
    if hf.endswith("norm.weight"):
        return hf, minus_one(tensor)
    return hf, tensor


def unpermute_rope_rows(tensor: SourceTensor, heads: int) -> SourceTensor:
    """Undoes llama.cpp's reordering of Q/K rows (interleaved RoPE pairs -> HF halves)."""
    rows = tensor.shape[0]
    order = np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(1, 2).reshape(rows)
    return tensor.take_rows(order) if isinstance(tensor, StoredBlocks) else tensor[order]


def decoder_tensor(
    name: str, tensor: SourceTensor, c: DecoderConfig, network: str, permuted: bool = False
) -> tuple[str, SourceTensor]:
    """A tensor of the base map by its Hugging Face name: weights, q/k head norms where the
    config has them, q/k/v biases where it has them; anything else is refused, naming the
    `network`. `permuted`: the file stores Q/K rows in llama.cpp's order, given back in HF's."""
    hf = hf_name(name) or ""
    head_norm = hf.endswith(("q_norm.weight", "k_norm.weight"))
    qkv_bias = hf.endswith((".q_proj.bias", ".k_proj.bias", ".v_proj.bias"))
    used = (
        (hf.endswith(".weight") and not head_norm)
        or (head_norm and c.qk_norm)
        or (qkv_bias and c.qkv_bias)
    )
    if not used:
        raise BuildError(f"GGUF tensor {name} is not part of the {network} network")
    if permuted and hf.endswith("q_proj.weight"):
        tensor = unpermute_rope_rows(tensor, c.num_attention_heads)
    elif permuted and hf.endswith("k_proj.weight"):
        tensor = unpermute_rope_rows(tensor, c.num_key_value_heads)
    return hf, tensor


def gguf_config(
    meta: GGUFMetadata, tensor_names: set[str], arch: str, partial_rotary: bool = False
) -> DecoderConfig:
    """The config from `arch`.* metadata; the head is tied when the file has no output.weight.
    `partial_rotary`: whether the family may rotate a part of each head (rope.dimension_count
    below head_dim); files that permute Q/K rows for all of it may not."""
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
    config = DecoderConfig(
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
    theta: float,
    rotated: int,
    factors: tuple[float, ...] | None = None,
    attention: float = 1.0,
    max_context: int | None = None,
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


def gguf_local_global_config(
    meta: GGUFMetadata,
    tensor_names: set[str],
    arch: str,
    global_every: int,
    local_theta: float | None,
    qk_norm: bool,
    wide_depth: int,
) -> LocalGlobalConfig:
    """The config from `arch`.* metadata, with what llama.cpp assumes of these files (they do
    not say): a global layer every `global_every`, the local layers' rope base (None: the
    global one). Nor do they carry query_pre_attn_scalar: like llama.cpp, it is head_dim,
    except for the model `wide_depth` layers deep (hidden/heads, the 27B models)."""
    base = gguf_config(meta, tensor_names, arch=arch)
    window = meta.number(f"{arch}.attention.sliding_window", int, 0)
    scalar = base.head_dim
    if base.num_hidden_layers == wide_depth:
        scalar = base.hidden_size // base.num_attention_heads
    local = None if local_theta is None else gguf_rope(local_theta, base.rope.rotary_dim)
    config = LocalGlobalConfig(
        **base.fields(),
        rope_local=local,
        sliding_layers=tuple((i + 1) % global_every != 0 for i in range(base.num_hidden_layers)),
        query_pre_attn_scalar=float(scalar),
        attn_logit_softcapping=meta.number(f"{arch}.attn_logit_softcapping", float, 0.0),
        final_logit_softcapping=meta.number(f"{arch}.final_logit_softcapping", float, 0.0),
    )
    return dataclasses.replace(config, sliding_window=window or None, qk_norm=qk_norm)
