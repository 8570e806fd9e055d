"""Gemma 3 (text-only checkpoints, `Gemma3ForCausalLM`, and GGUF `gemma3`)."""

from __future__ import annotations

from ..family import Family
from .config import Gemma3Config
from .network import Gemma3ForCausalLM
from .weights import gguf_tensor, network_weights

FAMILY = Family(
    name="gemma3",
    hf_architectures=("Gemma3ForCausalLM",),
    gguf_architectures=("gemma3",),
    config_from_hf=Gemma3Config.from_hf,
    config_from_gguf=Gemma3Config.from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=Gemma3ForCausalLM,
)
