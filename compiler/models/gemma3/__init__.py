"""Gemma 3 (text-only checkpoints, `Gemma3ForCausalLM`, and GGUF `gemma3`)."""

from ..decoder import LocalGlobalConfig
from ..family import Family
from .config import config_from_gguf, config_from_hf
from .names import gguf_tensor, network_weights
from .network import Gemma3ForCausalLM

FAMILY: Family[LocalGlobalConfig] = Family(
    name="gemma3",
    hf_architectures=("Gemma3ForCausalLM",),
    gguf_architectures=("gemma3",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=Gemma3ForCausalLM,
)
