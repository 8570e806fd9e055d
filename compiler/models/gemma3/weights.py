"""Gemma 3's weights: llama's names plus the norms after attention and around the MLP. Every
norm weight w is stored as 1 + w in float32 (Gemma scales by 1 + w, as transformers computes
it), so the network's RMSNorm is llama's."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ...formats import SourceTensor
from ..common import required
from ..family import NetworkWeights
from ..llama.weights import network_weights as llama_weights
from .config import Gemma3Config


def network_weights(
    tensors: Mapping[str, SourceTensor],
    c: Gemma3Config,
    format_name: Callable[[SourceTensor, str], str],
    model_id: str,
) -> NetworkWeights:
    def plus_one(name: str, tensor: SourceTensor) -> tuple[str, SourceTensor]:
        if name.endswith("norm.weight"):
            return name, np.asarray(tensor, dtype=np.float32) + np.float32(1.0)
        return name, tensor

    for name, tensor in llama_weights(tensors, c, format_name, model_id):
        yield plus_one(name, tensor)
    get = required(tensors, model_id)
    for i in range(c.num_hidden_layers):
        for norm in ("pre_feedforward_layernorm", "post_feedforward_layernorm"):
            yield plus_one(f"layers.{i}.{norm}.weight", get(f"model.layers.{i}.{norm}.weight"))
