"""Qwen2 and Qwen2.5: a llama-style decoder with biases on the q, k and v projections. Their
GGUF files (`qwen2`) keep the Q/K rows in Hugging Face's rotate-half order."""

from ..decoder import DecoderConfig
from ..family import Family
from .config import config_from_gguf, config_from_hf
from .names import gguf_tensor, network_weights
from .network import Qwen2ForCausalLM

FAMILY: Family[DecoderConfig] = Family(
    name="qwen2",
    hf_architectures=("Qwen2ForCausalLM",),
    gguf_architectures=("qwen2",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=Qwen2ForCausalLM,
)
