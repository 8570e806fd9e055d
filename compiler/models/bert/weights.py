"""A BERT checkpoint's tensors -> the network's weights (q, k and v fused where their formats
agree). The pooler (a dense layer over the first token, for next-sentence prediction) is not
part of a sentence embedding and is left out."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ...formats import SourceTensor
from ..common import concat_rows, required
from ..family import NetworkWeights
from .config import BertConfig

ATTENTION = ("query", "key", "value")


def network_weights(
    tensors: Mapping[str, SourceTensor],
    c: BertConfig,
    format_name: Callable[[SourceTensor, str], str],
    model_id: str,
) -> NetworkWeights:
    # BertModel checkpoints name tensors from the encoder down; task models put "bert." first.
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""
    found = required(tensors, model_id)

    def get(name: str) -> SourceTensor:
        return found(prefix + name)

    yield "embed_tokens", get("embeddings.word_embeddings.weight")
    yield "embed_positions", get("embeddings.position_embeddings.weight")
    yield "embed_types", get("embeddings.token_type_embeddings.weight")
    for part in ("weight", "bias"):
        yield f"embed_norm.{part}", get(f"embeddings.LayerNorm.{part}")
    for i in range(c.num_hidden_layers):
        layer, p = f"encoder.layer.{i}.", f"layers.{i}."
        attention = [get(f"{layer}attention.self.{n}.weight") for n in ATTENTION]
        biases = [get(f"{layer}attention.self.{n}.bias") for n in ATTENTION]
        if len({format_name(w, n) for w, n in zip(attention, ATTENTION, strict=True)}) == 1:
            yield p + "qkv_proj", concat_rows(attention)
            yield p + "qkv_proj.bias", np.concatenate([np.asarray(b) for b in biases])
        else:
            names = ("q_proj", "k_proj", "v_proj")
            for name, weight, bias in zip(names, attention, biases, strict=True):
                yield p + name, weight
                yield f"{p}{name}.bias", bias
        dense = {
            "o_proj": "attention.output.dense",
            "up_proj": "intermediate.dense",
            "down_proj": "output.dense",
        }
        for name, source in dense.items():
            yield p + name, get(f"{layer}{source}.weight")
            yield f"{p}{name}.bias", get(f"{layer}{source}.bias")
        norms = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
        for name, source in norms.items():
            for part in ("weight", "bias"):
                yield f"{p}{name}.{part}", get(f"{layer}{source}.{part}")
