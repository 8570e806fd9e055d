"""The llama family's tensor names: GGUF -> Hugging Face by the decoder's base map, Q/K rows
given back in Hugging Face's order (llama.cpp permutes them for its interleaved rope);
Hugging Face -> the network's as any decoder's (decoder/weights.py)."""

from __future__ import annotations

from ...formats import SourceTensor
from ..decoder import DecoderConfig
from ..decoder.gguf import ROPE_FREQS, decoder_tensor
from ..decoder.weights import network_weights

__all__ = ["gguf_tensor", "network_weights"]


def gguf_tensor(
    name: str, tensor: SourceTensor, c: DecoderConfig
) -> tuple[str, SourceTensor] | None:
    if name == ROPE_FREQS:
        return None  # in the config's rope
    return decoder_tensor(name, tensor, c, "llama", permuted=True)
