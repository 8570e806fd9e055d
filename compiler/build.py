"""`build-web`: load -> quantize -> compile -> write, each stage a plain function."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from . import progress
from .compile import VARIANTS, Compiled, compile_model
from .config import LlamaConfig
from .errors import BuildError
from .loader import ModelSource, Q4Codes, Tensor, load
from .quantization import Scheme, get_scheme
from .staging import staged_folder
from .weights import write_shards

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIR = ROOT / "web" / "build"
CACHE_DIR = ROOT / ".cache" / "kernels"


def concat_rows(parts: list[Tensor]) -> Tensor:
    if all(isinstance(p, Q4Codes) for p in parts):
        return Q4Codes(
            np.concatenate([p.codes for p in parts]),
            np.concatenate([p.scale for p in parts]),
            np.concatenate([p.minimum for p in parts]),
        )
    return np.concatenate([p.dequantize() if isinstance(p, Q4Codes) else p for p in parts])


def network_weights(source: ModelSource) -> Iterator[tuple[str, Tensor]]:
    """Source tensors (Hugging Face names) -> the network's weights, q/k/v and gate/up fused."""
    t, c = source.tensors, source.config

    def get(name: str) -> Tensor:
        if name not in t:
            raise BuildError(f"{source.model_id}: weight {name} is missing")
        return t[name]

    yield "embed_tokens", get("model.embed_tokens.weight")
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        yield f"layers.{i}.input_layernorm", get(p + "input_layernorm.weight")
        yield (
            f"layers.{i}.self_attn.qkv_proj",
            concat_rows([get(p + f"self_attn.{x}_proj.weight") for x in "qkv"]),
        )
        yield f"layers.{i}.self_attn.o_proj", get(p + "self_attn.o_proj.weight")
        yield f"layers.{i}.post_attention_layernorm", get(p + "post_attention_layernorm.weight")
        yield (
            f"layers.{i}.mlp.gate_up_proj",
            concat_rows([get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")]),
        )
        yield f"layers.{i}.mlp.down_proj", get(p + "mlp.down_proj.weight")
    yield "norm", get("model.norm.weight")
    if not c.tie_word_embeddings:
        yield "lm_head", get("lm_head.weight")


def quantize(source: ModelSource, scheme: Scheme) -> dict[str, np.ndarray]:
    """All stored parameters, keyed by the network's parameter names."""
    out: dict[str, np.ndarray] = {}
    for name, tensor in network_weights(source):
        if isinstance(tensor, np.ndarray) and tensor.ndim == 1:  # norm weights stay floats
            out[f"{name}.weight"] = tensor.astype(scheme.dtype)
            continue
        for part, value in scheme.quantize(tensor).items():
            out[f"{name}.{part}"] = value
    return out


def _compiler_hash() -> str:
    digest = hashlib.sha256(tvm.__version__.encode())
    for path in sorted((ROOT / "compiler").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def compile_cached(
    config: LlamaConfig, scheme: Scheme, context_window: int, prefill_chunk: int, variant: str
) -> tuple[Compiled, bool]:
    """Compiles, or reuses the kernels of an earlier build with the same key."""
    key_text = json.dumps(
        [config.to_json(), scheme.name, context_window, prefill_chunk, variant, _compiler_hash()]
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
    path = CACHE_DIR / f"{key}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes()), True
    compiled = compile_model(config, scheme, context_window, prefill_chunk, variant)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(compiled))
    tmp.replace(path)
    return compiled, False


def build(
    model: str,
    quantization: str,
    output: Path | None,
    context_window: int | None = None,
    prefill_chunk: int = 128,
) -> Path:
    scheme = get_scheme(quantization)
    if not RUNTIME_DIR.joinpath("kiln.js").is_file():
        raise BuildError("the web runtime is not built: run scripts/setup")
    with progress.step("load model"):
        source = load(model)
    config = source.config
    window = context_window or min(config.max_position_embeddings, 4096)
    if window <= 0 or prefill_chunk <= 0:
        raise BuildError("--context-window and --prefill-chunk must be positive")
    if window > config.max_position_embeddings:
        raise BuildError(
            f"--context-window {window} exceeds the model's {config.max_position_embeddings}"
        )
    prefill_chunk = min(prefill_chunk, window)
    model_id = f"{source.model_id}-{scheme.name}"
    output = output or Path("dist") / model_id

    with progress.step("quantize weights"):
        params = quantize(source, scheme)
    variants: dict[str, Compiled] = {}
    for variant in VARIANTS:
        with progress.step(f"compile {variant} kernels") as note:
            variants[variant], cached = compile_cached(
                config, scheme, window, prefill_chunk, variant
            )
            note("reused cached kernels" if cached else f"{len(variants[variant].kernels)} kernels")
    compiled = variants["software"]
    missing = [n for n in compiled.param_names if n not in params]
    if missing:
        raise BuildError(f"internal: no weights for {missing[:3]}")

    with staged_folder(output) as staging:
        total = sum(params[n].nbytes for n in compiled.param_names)
        with progress.bar("write weights", total) as advance:
            shards, tensors = write_shards(
                ((n, params[n]) for n in compiled.param_names), staging, advance
            )
        _write_folder(
            staging, model_id, source, scheme, variants, window, prefill_chunk, shards, tensors
        )
    write_site(output.parent)
    return output


def write_site(folder: Path) -> None:
    """Refreshes the chat site in `folder`, the parent of model folders: the runtime and page,
    and models.json listing every model folder in it (the page's model picker)."""
    models = []
    for manifest_path in sorted(folder.glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue  # not a build-web folder
        if manifest.get("format") != 1 or manifest_path.parent.name.startswith("."):
            continue
        models.append(
            {
                "model_id": manifest["model_id"],
                "path": f"{manifest_path.parent.name}/",
                "quantization": manifest["quantization"],
                "context_window": manifest["context_window"],
                "bytes": sum(s["bytes"] for s in manifest["shards"]),
            }
        )
    for item in RUNTIME_DIR.iterdir():
        if item.is_file():
            shutil.copy2(item, folder / item.name)
    listing = folder / ".models.json.tmp"
    listing.write_text(json.dumps({"models": models}, indent=1))
    listing.replace(folder / "models.json")


def _write_folder(
    out: Path,
    model_id: str,
    source: ModelSource,
    scheme: Scheme,
    variants: dict[str, Compiled],
    window: int,
    prefill_chunk: int,
    shards: list[dict[str, Any]],
    tensors: list[dict[str, Any]],
) -> None:
    for name, compiled in variants.items():
        (out / f"kernels-{name}.json").write_text(json.dumps(compiled.kernels))
    (out / "tokenizer.json").write_text(json.dumps(source.tokenizer, ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(
        json.dumps(source.tokenizer_config, ensure_ascii=False, indent=1)
    )
    manifest = {
        "format": 1,
        "model_id": model_id,
        "architecture": "llama",
        "quantization": scheme.name,
        "dtype": scheme.dtype,
        "required_features": ["shader-f16"] if scheme.needs_f16 else [],
        "config": source.config.to_json(),
        "context_window": window,
        "prefill_chunk": prefill_chunk,
        "eos_token_ids": source.eos_token_ids,
        "tokenizer": "tokenizer.json",
        "tokenizer_config": "tokenizer_config.json",
        "shards": shards,
        "params": tensors,
        # "software" suits adapters that run shaders on the CPU (isFallbackAdapter),
        # "gpu" suits real GPUs; the runtime picks one.
        "variants": {
            name: {"kernels": f"kernels-{name}.json", "functions": compiled.functions}
            for name, compiled in variants.items()
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for item in RUNTIME_DIR.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
