"""Gemma 2 (`Gemma2ForCausalLM`, and GGUF `gemma2`, whose files are laid out as gemma3's)."""

from ..decoder import LocalGlobalConfig
from ..family import Family
from .config import config_from_gguf, config_from_hf
from .names import gguf_tensor, network_weights
from .network import Gemma2ForCausalLM

FAMILY: Family[LocalGlobalConfig] = Family(
    name="gemma2",
    hf_architectures=("Gemma2ForCausalLM",),
    gguf_architectures=("gemma2",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=Gemma2ForCausalLM,
)
