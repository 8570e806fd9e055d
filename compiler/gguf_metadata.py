"""A GGUF file's key-value metadata, read with one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import BuildError

_REQUIRED = object()


class GGUFMetadata:
    def __init__(self, reader: Any, path: Path):
        self.reader = reader
        self.path = path

    def field(self, key: str, default: Any = None) -> Any:
        f = self.reader.fields.get(key)
        return default if f is None else f.contents()

    def number(self, key: str, kind: type = int, default: Any = _REQUIRED) -> Any:
        """The value of `key` as `kind`; `default` where it is absent (required without one)."""
        value = self.field(key)
        if value is None:
            if default is _REQUIRED:
                raise BuildError(f"{self.path}: the GGUF metadata lacks {key}")
            return default
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise BuildError(f"{self.path}: GGUF metadata {key}={value!r} is malformed") from None

    def vector(self, tensor_name: str, length: int) -> tuple[float, ...]:
        """The values of a 1-D tensor that holds settings rather than weights (rope factors),
        which must number `length`."""
        (tensor,) = (t for t in self.reader.tensors if t.name == tensor_name)
        values = tuple(float(v) for v in np.asarray(tensor.data, dtype=np.float32).ravel())
        if len(values) != length:
            raise BuildError(
                f"{self.path}: {tensor_name} has {len(values)} values, not {length} (one per "
                "rotated pair of dimensions)"
            )
        return values
