"""BERT encoder configuration: config.json, plus what sentence-transformers keeps beside it
(modules.json, the pooling module's config, sentence_bert_config.json), which says how token
states become one embedding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Never

from ...errors import BuildError

# config.json fields that change what a BERT encoder computes, with the values implemented.
IMPLEMENTED_VALUES: dict[str, tuple[Any, ...]] = {
    "hidden_act": ("gelu",),
    "position_embedding_type": (None, "absolute"),
    "is_decoder": (None, False),
    "add_cross_attention": (None, False),
}
POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
NORMALIZE = "sentence_transformers.models.Normalize"
POOLING = "sentence_transformers.models.Pooling"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pooling: str  # "mean" (over the input's tokens) or "cls" (the first token's state)
    normalize: bool  # scaled to unit length after pooling
    max_length: int  # the longest input in tokens, special tokens included
    tie_word_embeddings: bool = False  # no output head: part of every family's config

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str) -> BertConfig:
        """config.json's dict; `where` is the folder, whose sentence-transformers files (if
        any) give the pooling (else mean pooling, not normalized, as sentence-transformers
        wraps a plain checkpoint)."""
        for name, values in IMPLEMENTED_VALUES.items():
            if raw.get(name) not in values:
                raise BuildError(f"{where}: config field {name}={raw[name]!r} is not implemented")
        pooling, normalize, max_length = _sentence_transformers(Path(where))
        try:
            heads = int(raw["num_attention_heads"])
            positions = int(raw["max_position_embeddings"])
            config = cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                intermediate_size=int(raw["intermediate_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=heads,
                max_position_embeddings=positions,
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
                pooling=pooling,
                normalize=normalize,
                max_length=min(max_length or positions, positions),
            )
        except KeyError as err:
            raise BuildError(f"{where}: config.json lacks the field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise BuildError(f"{where}: config.json has a malformed value ({err})") from None
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"):
            value = getattr(config, name)
            if value <= 0:
                raise BuildError(f"{where}: config value {name}={value} must be > 0")
        if heads <= 0 or config.hidden_size % heads:
            raise BuildError(
                f"{where}: hidden_size ({config.hidden_size}) must be a multiple of "
                f"num_attention_heads ({heads})"
            )
        return config

    def rope_tables(self) -> dict[str, Never]:
        return {}  # absolute position embeddings: no rotary tables

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BuildError(f"{path}: not readable JSON ({err})") from None


def _sentence_transformers(folder: Path) -> tuple[str, bool, int | None]:
    """(pooling, normalize, max_seq_length) from a sentence-transformers folder; mean pooling,
    not normalized, the model's own limit where the folder has no such files."""
    if not (folder / "modules.json").is_file():
        return "mean", False, None
    modules = _read(folder / "modules.json")
    kinds = [m.get("type") for m in modules if isinstance(m, dict)]
    pooling = "mean"
    for module in modules:
        if isinstance(module, dict) and module.get("type") == POOLING:
            settings = _read(folder / module.get("path", "") / "config.json")
            modes = [k for k, v in settings.items() if k.startswith("pooling_mode_") and v]
            if len(modes) != 1 or modes[0] not in POOLING_MODES:
                raise BuildError(
                    f"{folder}: pooling {', '.join(modes) or 'none'} is not implemented "
                    f"(implemented: {', '.join(POOLING_MODES)})"
                )
            pooling = POOLING_MODES[modes[0]]
    known = {"sentence_transformers.models.Transformer", POOLING, NORMALIZE}
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise BuildError(f"{folder}: modules.json module {unknown[0]} is not implemented")
    max_length = None
    if (folder / "sentence_bert_config.json").is_file():
        max_length = _read(folder / "sentence_bert_config.json").get("max_seq_length")
    return pooling, NORMALIZE in kinds, int(max_length) if max_length else None
