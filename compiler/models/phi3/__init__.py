"""Phi-3 and Phi-3.5 (`Phi3ForCausalLM`, GGUF `phi3`): a llama-style decoder whose checkpoints
fuse q/k/v and gate/up, with LongRoPE where the config has it and a sliding window."""

from ..decoder import DecoderConfig
from ..family import Family
from .config import config_from_gguf, config_from_hf
from .names import gguf_tensor, network_weights
from .network import Phi3ForCausalLM

FAMILY: Family[DecoderConfig] = Family(
    name="phi3",
    hf_architectures=("Phi3ForCausalLM",),
    gguf_architectures=("phi3",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=Phi3ForCausalLM,
)
