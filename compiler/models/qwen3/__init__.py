"""Qwen3 (dense): a llama-style decoder with an RMSNorm over each query and key head before
rope, and no biases. GGUF `qwen3` keeps Q/K rows in rotate-half order, as `qwen2` does."""

from ..decoder import DecoderConfig
from ..family import Family
from .config import config_from_gguf, config_from_hf
from .names import gguf_tensor, network_weights
from .network import Qwen3ForCausalLM

FAMILY: Family[DecoderConfig] = Family(
    name="qwen3",
    hf_architectures=("Qwen3ForCausalLM",),
    gguf_architectures=("qwen3",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    gguf_tensor=gguf_tensor,
    network_weights=network_weights,
    network=Qwen3ForCausalLM,
)
