"""A decoder's weights by the network's names, from tensors by Hugging Face's: projections that
read one input (q/k/v, gate/up) fused into one matrix where their formats agree. A family whose
checkpoints name or lay out tensors otherwise lists its own (phi3/names.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ...formats import SourceTensor
from ..common import concat_rows, required, run_name
from ..family import NetworkWeights
from .config import DecoderConfig
from .norms import plus_one

FormatName = Callable[[SourceTensor, str], str]

# Each layer's norms, as their modules are named: before attention and MLP (PreNormLayer), or
# before and after both (SandwichNormLayer).
PRE_NORMS = ("input_layernorm", "post_attention_layernorm")
SANDWICH_NORMS = (*PRE_NORMS, "pre_feedforward_layernorm", "post_feedforward_layernorm")


def fused(
    get: Callable[[str], SourceTensor],
    format_name: FormatName,
    prefix: str,
    names: list[str],
    into: str,
    bias: bool = False,
) -> NetworkWeights:
    """Projections that read the same input, as one matmul when their weights share a format
    (always, when the scheme quantizes them all alike), else one per run of neighbours that
    share one (`run_name`: a GGUF file may store q and k alike and v apart); their biases
    alike."""
    parts = [get(f"model.{prefix}{n}.weight") for n in names]
    biases = [get(f"model.{prefix}{n}.bias") for n in names] if bias else []
    formats = [format_name(x, n) for x, n in zip(parts, names, strict=True)]
    start = 0
    for end in range(1, len(names) + 1):
        if end < len(names) and formats[end] == formats[start]:
            continue
        run = names[start:end]
        name = into if len(run) == len(names) else run[0] if len(run) == 1 else run_name(run)
        yield prefix + name, parts[start] if len(run) == 1 else concat_rows(parts[start:end])
        if bias:
            yield f"{prefix}{name}.bias", np.concatenate([np.asarray(b) for b in biases[start:end]])
        start = end


def network_weights(
    tensors: Mapping[str, SourceTensor],
    c: DecoderConfig,
    format_name: FormatName,
    model_id: str,
    layer_norms: tuple[str, ...] = PRE_NORMS,
    norm_weight: Callable[[SourceTensor], SourceTensor] | None = None,
) -> NetworkWeights:
    """The weights of layers with `layer_norms`, attention with the config's biases and q/k
    norms, and a gated MLP. `norm_weight`: what every norm's weight becomes (Gemma's 1 + w,
    norms.py); None: as it is."""
    found = required(tensors, model_id)

    def get(name: str) -> SourceTensor:
        tensor = found(name)
        return norm_weight(tensor) if norm_weight and name.endswith("norm.weight") else tensor

    yield "embed_tokens", get("model.embed_tokens.weight")
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        for norm in layer_norms:
            yield f"{p}{norm}.weight", get(f"model.{p}{norm}.weight")
        attn = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
        yield from fused(found, format_name, p, attn, "self_attn.qkv_proj", c.qkv_bias)
        if c.qk_norm:
            for norm in ("self_attn.q_norm.weight", "self_attn.k_norm.weight"):
                yield p + norm, get(f"model.{p}{norm}")
        yield p + "self_attn.o_proj", get(f"model.{p}self_attn.o_proj.weight")
        if c.o_bias:
            yield p + "self_attn.o_proj.bias", get(f"model.{p}self_attn.o_proj.bias")
        yield from fused(
            found, format_name, p, ["mlp.gate_proj", "mlp.up_proj"], "mlp.gate_up_proj"
        )
        yield p + "mlp.down_proj", get(f"model.{p}mlp.down_proj.weight")
    yield "norm.weight", get("model.norm.weight")
    if not c.tie_word_embeddings:
        yield "lm_head", get("lm_head.weight")


def sandwich_weights(
    tensors: Mapping[str, SourceTensor], c: DecoderConfig, format_name: FormatName, model_id: str
) -> NetworkWeights:
    """The weights of Gemma's layers: norms before and after both attention and MLP, each
    scaling by 1 + w (stored so, norms.py)."""
    return network_weights(tensors, c, format_name, model_id, SANDWICH_NORMS, plus_one)
