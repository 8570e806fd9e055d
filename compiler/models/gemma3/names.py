"""The gemma3 family's tensor names: those of Gemma's layers, norms before and after both
attention and MLP, each scaling by 1 + w (decoder/gguf.py's `sandwich_tensor`, decoder/weights.py's
`sandwich_weights`)."""

from __future__ import annotations

from ...formats import SourceTensor
from ..decoder import LocalGlobalConfig
from ..decoder.gguf import sandwich_tensor
from ..decoder.weights import sandwich_weights as network_weights

__all__ = ["gguf_tensor", "network_weights"]


def gguf_tensor(name: str, tensor: SourceTensor, c: LocalGlobalConfig) -> tuple[str, SourceTensor]:
    return sandwich_tensor(name, tensor, "Gemma")
