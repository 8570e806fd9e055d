"""Architecture families, one folder each (see compiler/models/family.py for what a family
provides), and the registry that maps architecture names to them. `kernels.py` and
`common.py` hold what the families share."""

from __future__ import annotations

from ..errors import BuildError
from . import bert, gemma2, gemma3, llama, phi3, qwen2, qwen3
from .family import Family

FAMILIES: tuple[Family, ...] = (
    llama.FAMILY,
    qwen2.FAMILY,
    qwen3.FAMILY,
    gemma2.FAMILY,
    gemma3.FAMILY,
    phi3.FAMILY,
    bert.FAMILY,
)


def for_hf_architecture(arch: str, where: str) -> Family:
    return _find(arch, "hf_architectures", "architecture", where)


def for_gguf_architecture(arch: str, where: str) -> Family:
    return _find(arch, "gguf_architectures", "GGUF architecture", where)


def _find(arch: str, field: str, what: str, where: str) -> Family:
    for family in FAMILIES:
        if arch in getattr(family, field):
            return family
    known = ", ".join(a for f in FAMILIES for a in getattr(f, field))
    raise BuildError(f"{where}: {what} {arch!r} is not supported; supported: {known}")
