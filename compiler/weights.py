"""Stage 4, write: quantized parameters -> shard files with a manifest entry per tensor."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

SHARD_BYTES = 32 * 1024 * 1024
ALIGN = 256  # every tensor starts at a multiple of 256 bytes within its shard


class _Shard:
    """One shard file being written, hashed as it goes; renamed to carry its hash when done."""

    def __init__(self, out_dir: Path, index: int):
        self.out_dir, self.index = out_dir, index
        self.partial = out_dir / f"params_shard_{index}.partial"
        self.file = self.partial.open("wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: memoryview | bytes) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)

    def close(self) -> dict[str, Any]:
        self.file.close()
        digest = self.digest.hexdigest()
        # The name carries the content's hash, so servers may cache a shard as immutable
        # (compiler/serve.py, HASHED_NAME) and a rebuild with new weights gets new URLs.
        name = f"params_shard_{self.index}.{digest[:16]}.bin"
        self.partial.replace(self.out_dir / name)
        return {"file": name, "bytes": self.size, "sha256": digest}


def write_shards(
    params: Iterable[tuple[str, np.ndarray]], out_dir: Path, progress: Any = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Packs tensors into shards of about SHARD_BYTES; returns (shards, tensors) records. Each
    tensor's memory goes straight to its shard file, uncopied (a 0.5B model's embedding is
    hundreds of MB)."""
    shards: list[dict[str, Any]] = []
    tensors: list[dict[str, Any]] = []
    shard: _Shard | None = None
    for name, array in params:
        data = np.ascontiguousarray(array).data.cast("B")
        if shard is not None and shard.size + len(data) > SHARD_BYTES:
            shards.append(shard.close())
            shard = None
        if shard is None:
            shard = _Shard(out_dir, len(shards))
        shard.write(b"\0" * (-shard.size % ALIGN))
        tensors.append(
            {
                "name": name,
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "shard": len(shards),
                "offset": shard.size,
                "bytes": len(data),
            }
        )
        shard.write(data)
        if progress:
            progress(len(data))
    if shard is not None:
        shards.append(shard.close())
    return shards, tensors
