"""Gemma 3 (text-only checkpoints, `Gemma3ForCausalLM`)."""

from __future__ import annotations

from ..family import Family, no_gguf
from .config import Gemma3Config
from .network import Gemma3ForCausalLM
from .weights import network_weights

FAMILY = Family(
    name="gemma3",
    hf_architectures=("Gemma3ForCausalLM",),
    gguf_architectures=(),
    config_from_hf=Gemma3Config.from_hf,
    config_from_gguf=no_gguf("gemma3"),
    gguf_tensor=no_gguf("gemma3"),
    network_weights=network_weights,
    network=Gemma3ForCausalLM,
)
