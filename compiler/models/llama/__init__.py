"""The llama family: Llama, SmolLM, Mistral (its sliding window included)."""

from ..family import Family
from .config import LlamaConfig
from .network import LlamaForCausalLM
from .weights import gguf_config, gguf_tensor, network_weights

__all__ = ["FAMILY", "LlamaConfig", "LlamaForCausalLM", "network_weights"]

FAMILY = Family(
    name="llama",
    hf_architectures=("LlamaForCausalLM", "MistralForCausalLM"),
    gguf_architectures=("llama",),
    config_from_hf=LlamaConfig.from_hf,
    config_from_gguf=gguf_config,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=LlamaForCausalLM,
)
