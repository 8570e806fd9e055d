"""Gemma 3's weights: llama's names plus the norms after attention and around the MLP. Every
norm weight w is stored as 1 + w in float32 (Gemma scales by 1 + w, as transformers computes
it), so the network's RMSNorm is llama's."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ...errors import BuildError
from ...formats import SourceTensor
from ..common import required
from ..family import NetworkWeights
from ..llama.weights import hf_name
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


# gemma3 GGUF layer tensors whose names differ from llama's
GGUF_NORMS = {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def gguf_tensor(name: str, tensor: SourceTensor, c: Gemma3Config) -> tuple[str, SourceTensor]:
    """Hugging Face names; Q/K rows stay as they are (llama.cpp runs Gemma's rope in HF's
    rotate-half layout). llama.cpp's converter stores every norm as 1 + w: HF's w is given back
    (network_weights adds the 1 again, as transformers' forward does)."""
    parts = name.split(".")
    layer_tensor = len(parts) == 4 and parts[0] == "blk"
    if layer_tensor and parts[2] in GGUF_NORMS:
        hf: str | None = f"model.layers.{parts[1]}.{GGUF_NORMS[parts[2]]}.{parts[3]}"
    else:
        hf = hf_name(name)
    if hf is None or not hf.endswith(".weight"):
        raise BuildError(f"GGUF tensor {name} is not part of the Gemma network")
    if hf.endswith("norm.weight"):
        return hf, np.asarray(tensor, dtype=np.float32) - np.float32(1.0)
    return hf, tensor
