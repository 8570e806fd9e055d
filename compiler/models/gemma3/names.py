"""The gemma3 family's tensor names: the decoder's, with norms before and after both attention
and MLP. Every norm scales by 1 + w (decoder/norms.py): the network's weight is 1 + w, and
llama.cpp's converter stores 1 + w too, given back here as HF's w."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ...errors import BuildError
from ...formats import SourceTensor
from ..decoder import LocalGlobalConfig
from ..decoder.gguf import GGUF_LAYER_NAMES, GGUF_SANDWICH_NORMS, hf_name
from ..decoder.norms import minus_one, plus_one
from ..decoder.weights import SANDWICH_NORMS
from ..decoder.weights import network_weights as decoder_weights
from ..family import NetworkWeights

GGUF_NAMES = {**GGUF_LAYER_NAMES, **GGUF_SANDWICH_NORMS}


def network_weights(
    tensors: Mapping[str, SourceTensor],
    c: LocalGlobalConfig,
    format_name: Callable[[SourceTensor, str], str],
    model_id: str,
) -> NetworkWeights:
    return decoder_weights(tensors, c, format_name, model_id, SANDWICH_NORMS, plus_one)


def gguf_tensor(name: str, tensor: SourceTensor, c: LocalGlobalConfig) -> tuple[str, SourceTensor]:
    """Hugging Face names; Q/K rows stay as they are (llama.cpp runs Gemma's rope in HF's
    rotate-half layout)."""
    hf = hf_name(name, GGUF_NAMES)
    if hf is None or not hf.endswith(".weight"):
        raise BuildError(f"GGUF tensor {name} is not part of the Gemma network")
    if hf.endswith("norm.weight"):
        return hf, minus_one(tensor)
    return hf, tensor
