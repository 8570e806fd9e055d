"""Stage 4, write: quantized parameters -> shard files with a manifest entry per tensor."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

SHARD_BYTES = 32 * 1024 * 1024
ALIGN = 256  # every tensor starts at a multiple of 256 bytes within its shard


def write_shards(
    params: Iterable[tuple[str, np.ndarray]], out_dir: Path, progress: Any = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Packs tensors into shards of about SHARD_BYTES; returns (shards, tensors) records."""
    shards: list[dict[str, Any]] = []
    tensors: list[dict[str, Any]] = []
    buffer = bytearray()

    def flush() -> None:
        if not buffer:
            return
        digest = hashlib.sha256(buffer).hexdigest()
        # The name carries the content's hash, so servers may cache a shard as immutable
        # (compiler/serve.py, HASHED_NAME) and a rebuild with new weights gets new URLs.
        name = f"params_shard_{len(shards)}.{digest[:16]}.bin"
        (out_dir / name).write_bytes(buffer)
        shards.append({"file": name, "bytes": len(buffer), "sha256": digest})
        buffer.clear()

    for name, array in params:
        data = np.ascontiguousarray(array).tobytes()
        if buffer and len(buffer) + len(data) > SHARD_BYTES:
            flush()
        buffer.extend(b"\0" * (-len(buffer) % ALIGN))
        tensors.append(
            {
                "name": name,
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "shard": len(shards),
                "offset": len(buffer),
                "bytes": len(data),
            }
        )
        buffer.extend(data)
        if progress:
            progress(len(data))
    flush()
    return shards, tensors
