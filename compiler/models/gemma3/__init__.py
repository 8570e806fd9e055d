"""Gemma 3 (text-only checkpoints, `Gemma3ForCausalLM`)."""

from __future__ import annotations

from ...errors import BuildError
from ..family import Family
from .config import Gemma3Config
from .network import Gemma3ForCausalLM
from .weights import network_weights


def _no_gguf(*_):
    raise BuildError("GGUF gemma3 files are not supported yet; build the Hugging Face folder")


FAMILY = Family(
    name="gemma3",
    hf_architectures=("Gemma3ForCausalLM",),
    gguf_architectures=(),
    config_from_hf=Gemma3Config.from_hf,
    config_from_gguf=_no_gguf,
    gguf_tensor=_no_gguf,
    network_weights=network_weights,
    network=Gemma3ForCausalLM,
)
