"""The llama family: Llama, SmolLM, Mistral (its sliding window included)."""

from ..decoder import DecoderConfig
from ..family import Family
from .config import config_from_gguf, config_from_hf
from .names import gguf_tensor, network_weights
from .network import LlamaForCausalLM

FAMILY: Family[DecoderConfig] = Family(
    name="llama",
    hf_architectures=("LlamaForCausalLM", "MistralForCausalLM"),
    gguf_architectures=("llama",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=LlamaForCausalLM,
)
