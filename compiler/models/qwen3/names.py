"""The qwen3 family's tensor names: GGUF -> Hugging Face by the decoder's base map (its q/k
head norms included), Q/K rows as the file stores them (rotate-half order); Hugging Face ->
the network's as any decoder's."""

from __future__ import annotations

from ...formats import SourceTensor
from ..decoder import DecoderConfig
from ..decoder.gguf import decoder_tensor
from ..decoder.weights import network_weights

__all__ = ["gguf_tensor", "network_weights"]


def gguf_tensor(name: str, tensor: SourceTensor, c: DecoderConfig) -> tuple[str, SourceTensor]:
    return decoder_tensor(name, tensor, c, "Qwen")
