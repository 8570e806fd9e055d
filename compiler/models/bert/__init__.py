"""BERT encoders for sentence embeddings (`BertModel` checkpoints such as all-MiniLM-L6-v2,
with their sentence-transformers pooling). Hugging Face folders only: a GGUF BERT is refused
as an unsupported architecture."""

from __future__ import annotations

from typing import NoReturn

from ..family import Family
from .config import BertConfig
from .network import BertEncoder
from .weights import network_weights

__all__ = ["FAMILY", "BertConfig", "BertEncoder"]


def _no_gguf(*_args: object) -> NoReturn:
    raise AssertionError("the bert family lists no GGUF architecture")


FAMILY: Family[BertConfig] = Family(
    name="bert",
    hf_architectures=("BertModel",),
    gguf_architectures=(),
    config_from_hf=BertConfig.from_hf,
    config_from_gguf=_no_gguf,
    gguf_tensor=_no_gguf,
    network_weights=network_weights,
    network=BertEncoder,
    task="embedding",
)
