"""What the build asks of an architecture family. Each family folder defines one `Family`;
the registry (compiler/models/__init__.py) maps architecture names to it, and nothing else
outside the folder names a family."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from tvm.relax.frontend import nn

from ..formats import SourceTensor
from ..gguf_metadata import GGUFMetadata
from ..targets import Target

# (network name, source tensor) pairs: a matrix by its module's name (its parts are stored
# below it), a vector (norm weight, bias) by its parameter's full name
NetworkWeights = Iterator[tuple[str, SourceTensor]]


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    hf_architectures: tuple[str, ...]  # config.json "architectures"
    gguf_architectures: tuple[str, ...]  # GGUF general.architecture
    # config.json dict, where (for errors) -> the family's config (a frozen dataclass with
    # `to_json`, `vocab_size`, `max_position_embeddings`, `tie_word_embeddings` and
    # `rope_tables()`, the tables of cos and sin its network reads, see rope.py)
    config_from_hf: Callable[[dict[str, Any], str], Any]
    # GGUF metadata, the file's tensor names -> the config
    config_from_gguf: Callable[[GGUFMetadata, set[str]], Any]
    # GGUF tensor name, its tensor, the config -> (Hugging Face name, tensor in HF layout), or
    # None for one the config carries (rope_freqs); raises BuildError for a tensor the network
    # has no use for
    gguf_tensor: Callable[[str, SourceTensor, Any], tuple[str, SourceTensor] | None]
    # HF-named tensors, config, picks a weight's format name, model id -> the network's
    # weights (fusing projections whose formats agree)
    network_weights: Callable[
        [Mapping[str, SourceTensor], Any, Callable[[SourceTensor, str], str], str],
        NetworkWeights,
    ]
    # config, each weight's format, activation dtype, context window, the compile target -> the
    # network, whose `get_default_spec()` gives its entry points (prefill and decode, or
    # embed), `upper_bounds()` the largest value of each symbolic size and `cache_spec()` the
    # KV-cache tensors
    network: Callable[[Any, dict[str, str], str, int, Target], nn.Module]
    # "chat": a decoder with prefill and decode over a KV cache (its context window the
    # largest cache); "embedding": an encoder with `embed` (its window the longest input)
    task: str = "chat"
