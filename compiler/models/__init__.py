"""Architecture families, one folder each (see compiler/models/family.py for what a family
provides), and the registry that maps architecture names to them. `decoder/` holds the blocks
and readers the decoder families compose; `kernels.py` and `common.py` the ops and linears
every family shares."""

from __future__ import annotations

from typing import Any

from ..errors import BuildError
from . import bert, gemma2, gemma3, llama, phi3, qwen2, qwen3
from .family import Family

# Families of different config types: each is checked against its own where it is defined.
FAMILIES: tuple[Family[Any], ...] = (
    llama.FAMILY,
    qwen2.FAMILY,
    qwen3.FAMILY,
    gemma2.FAMILY,
    gemma3.FAMILY,
    phi3.FAMILY,
    bert.FAMILY,
)


def for_hf_architecture(arch: str, where: str) -> Family[Any]:
    return _find(arch, "hf_architectures", "architecture", where)


def for_gguf_architecture(arch: str, where: str) -> Family[Any]:
    return _find(arch, "gguf_architectures", "GGUF architecture", where)


def _find(arch: str, field: str, what: str, where: str) -> Family[Any]:
    for family in FAMILIES:
        if arch in getattr(family, field):
            return family
    known = ", ".join(a for f in FAMILIES for a in getattr(f, field))
    raise BuildError(f"{where}: {what} {arch!r} is not supported; supported: {known}")
