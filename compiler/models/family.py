"""What the build asks of an architecture family. Each family folder defines one `Family`;
the registry (compiler/models/__init__.py) maps architecture names to it, and nothing else
outside the folder names a family.

A family is its config reader (config.json and GGUF metadata -> its config), its tensor-name
map (GGUF names -> Hugging Face names -> the network's) and its network, composed of the
shared blocks (decoder/ for causal LMs). `Family` is generic in the family's config type, so
that its readers and its network are checked to agree on one; `Config` and `Network` say what
the build itself reads of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from ..formats import SourceTensor
from ..gguf_metadata import GGUFMetadata
from ..targets import Target

# (network name, source tensor) pairs: a matrix by its module's name (its parts are stored
# below it), a vector (norm weight, bias) by its parameter's full name
NetworkWeights = Iterator[tuple[str, SourceTensor]]


class CosSinTable(Protocol):
    """A rotary embedding, which the build stores as a table of cos and sin per position."""

    def table(self, positions: int, dtype: str) -> np.ndarray: ...


class Config(Protocol):
    """A family's config (a frozen dataclass), as the build reads it."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_position_embeddings(self) -> int: ...

    @property
    def tie_word_embeddings(self) -> bool: ...  # no lm_head: the embedding is the head

    def rope_tables(self) -> Mapping[str, CosSinTable]:
        """The tables of cos and sin the network reads, by parameter name (none: {})."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The manifest's `config` (the numpy reference and the runtime read it), and part of
        the kernel cache's key."""
        ...


class Network(Protocol):
    """A family's network (a `tvm.relax.frontend.nn.Module`), as compile.py uses it."""

    def get_default_spec(self) -> Any:
        """Its entry points (prefill and decode, or embed), a `nn.spec.ModuleSpec`."""
        ...

    def export_tvm(self, spec: Any) -> Any: ...

    def upper_bounds(self, prefill_chunk: int) -> dict[str, int]:
        """The largest value of each symbolic size, which sizes the activation buffers."""
        ...

    def cache_spec(self) -> list[Any]:
        """The KV-cache tensors (`nn.spec.Tensor`s) the entry points take and return."""
        ...


ConfigT = TypeVar("ConfigT", bound=Config)


@dataclasses.dataclass(frozen=True)
class Family(Generic[ConfigT]):
    name: str
    hf_architectures: tuple[str, ...]  # config.json "architectures"
    gguf_architectures: tuple[str, ...]  # GGUF general.architecture
    # config.json dict, where (for errors) -> the family's config; raises BuildError naming
    # the field it cannot read or does not implement
    config_from_hf: Callable[[dict[str, Any], str], ConfigT]
    # GGUF metadata, the file's tensor names -> the config
    config_from_gguf: Callable[[GGUFMetadata, set[str]], ConfigT]
    # GGUF tensor name, its tensor, the config -> (Hugging Face name, tensor in HF layout), or
    # None for one the config carries (rope_freqs); raises BuildError for a tensor the network
    # has no use for
    gguf_tensor: Callable[[str, SourceTensor, ConfigT], tuple[str, SourceTensor] | None]
    # HF-named tensors, config, picks a weight's format name, model id -> the network's
    # weights (fusing projections whose formats agree)
    network_weights: Callable[
        [Mapping[str, SourceTensor], ConfigT, Callable[[SourceTensor, str], str], str],
        NetworkWeights,
    ]
    # config, each weight's format, activation dtype, context window, the compile target ->
    # the network
    network: Callable[[ConfigT, dict[str, str], str, int, Target], Network]
    # "chat": a decoder with prefill and decode over a KV cache (its context window the
    # largest cache); "embedding": an encoder with `embed` (its window the longest input)
    task: str = "chat"
