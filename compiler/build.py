"""`build-web`: load -> quantize -> compile -> write, each stage a plain function."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from . import manifest as contract
from . import progress, resources
from .compile import VARIANTS, Compiled, compile_model
from .errors import BuildError
from .loader import ModelSource, load
from .models.family import Family
from .quantization import Scheme, get_scheme
from .staging import staged_folder
from .targets.wasm import link as wasm
from .targets.webgpu import storage_buffers
from .tool_format import tool_call_format
from .weights import write_shards

RUNTIME_DIR = resources.shipped("runtime")


def quantize(source: ModelSource, scheme: Scheme) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All stored parameters keyed by the network's parameter names, and each weight's format."""
    params: dict[str, np.ndarray] = {}
    formats: dict[str, str] = {}
    weights = source.family.network_weights(
        source.tensors, source.config, lambda t, n: scheme.format_for(t, n).name, source.model_id
    )
    for name, tensor in weights:
        if len(tensor.shape) == 1:  # norm weights and biases, named in full, stay floats
            params[name] = np.asarray(tensor).astype(scheme.dtype)
            continue
        fmt = scheme.format_for(tensor, name)
        rows, cols = tensor.shape
        fmt.check_shape(rows, cols, name)
        formats[name] = fmt.name
        for part, value in fmt.encode(tensor).items():
            params[f"{name}.{part}"] = value
    return params, formats


# What compiling runs (`compile_model` and everything it imports), the cache's key: editing
# any other module keeps the cached kernels. tests/test_build_cache.py checks that every
# module `compiler.compile` imports is in it.
COMPILING = (
    "__init__.py",
    "compile.py",
    "plan.py",
    "sampling.py",
    "logit_edits.py",
    "top_logprobs.py",
    "errors.py",
    "gguf_metadata.py",
    "formats",
    "models",
    "targets",
)


def _compiler_hash() -> str:
    digest = hashlib.sha256(tvm.__version__.encode())
    package = resources.PACKAGE
    for name in COMPILING:
        path = package / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.suffix in (".py", ".c"):
                digest.update(file.relative_to(package).as_posix().encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()


def compile_cached(
    family: Family,
    config: Any,
    formats: dict[str, str],
    dtype: str,
    context_window: int,
    prefill_chunk: int,
    variant: str,
) -> tuple[Compiled, bool]:
    """Compiles, or reuses the kernels of an earlier build with the same key."""
    key_text = json.dumps(
        [
            family.name,
            config.to_json(),
            formats,
            dtype,
            context_window,
            prefill_chunk,
            variant,
            _compiler_hash(),
        ],
        sort_keys=True,
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
    cache = resources.cache_dir("kernels")
    path = cache / f"{key}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes()), True
    compiled = compile_model(family, config, formats, dtype, context_window, prefill_chunk, variant)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(compiled))
    tmp.replace(path)
    return compiled, False


def _context_window(source: ModelSource, asked: int | None, prefill_chunk: int) -> int:
    """The KV-cache capacity to build: the one asked for, else the model's (at most 4096). An
    encoder's is the longest input it takes (its sentence-transformers limit by default)."""
    config = source.config
    if source.family.task == "embedding":
        window = asked or config.max_length
        if window <= 0 or window > config.max_position_embeddings:
            raise BuildError(
                f"--context-window {window} must be between 1 and the model's "
                f"{config.max_position_embeddings} positions"
            )
        return window
    window = asked or min(config.max_position_embeddings, 4096)
    if window <= 0 or prefill_chunk <= 0:
        raise BuildError("--context-window and --prefill-chunk must be positive")
    if window > config.max_position_embeddings:
        raise BuildError(
            f"--context-window {window} exceeds the model's {config.max_position_embeddings}"
        )
    return window


def build(
    model: str,
    quantization: str | None,
    output: Path | None,
    context_window: int | None = None,
    prefill_chunk: int = 128,
    runtime: bool = True,
) -> Path:
    """Builds MODEL into `output`. `quantization` None keeps a GGUF file's tensors (and an
    encoder's) as they are stored and quantizes a Hugging Face folder's to q4f32. With
    `runtime`, the runtime and chat page are copied into the folder and the chat site beside
    it is refreshed; without, the folder holds the model alone (for an app that has the
    runtime from npm)."""
    if quantization is not None:
        get_scheme(quantization)  # an unknown name fails before the model loads
    if runtime and not RUNTIME_DIR.joinpath("kiln.js").is_file():
        raise BuildError("the web runtime is not built: run scripts/setup")
    with progress.step("load model"):
        source = load(model)
        window = _context_window(source, context_window, prefill_chunk)
    # An encoder's floats are kept: its embeddings are compared by cosine, where 4 bits show.
    kept = source.from_gguf or source.family.task == "embedding"
    scheme = get_scheme(quantization or ("as-stored" if kept else "q4f32"))
    config = source.config
    prefill_chunk = min(prefill_chunk, window)
    model_id = f"{source.model_id}-{scheme.name}"
    output = output or Path("dist") / model_id

    title = (
        "keep weights as stored" if not scheme.requantizes else f"quantize weights to {scheme.name}"
    )
    with progress.step(title) as note:
        params, formats = quantize(source, scheme)
        kinds = sorted(set(formats.values()))
        note(f"formats {', '.join(kinds)}")
        stored = sum(p.nbytes for p in params.values())
        note(f"{stored / 1e6:.1f} MB, the source's tensors {source.tensor_bytes / 1e6:.1f} MB")
        for name, rope in config.rope_tables().items():  # cos and sin per position
            params[name] = rope.table(window, scheme.dtype)
    variants: dict[str, Compiled] = {}
    for variant in VARIANTS:
        with progress.step(f"compile {variant} kernels") as note:
            variants[variant], cached = compile_cached(
                source.family, config, formats, scheme.dtype, window, prefill_chunk, variant
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
        for tensor in tensors:
            owner = tensor["name"].rsplit(".", 1)[0]
            tensor["format"] = formats.get(
                owner, "f32" if scheme.dtype == "float32" else "f16-native"
            )
        _write_folder(
            staging, model_id, source, scheme, variants, window, prefill_chunk, shards, tensors
        )
        if runtime:
            _copy_runtime(staging)
    if runtime:
        write_site(output.parent)
    return output


def _copy_runtime(folder: Path) -> None:
    """The bundled runtime, its worker scripts and the chat page, into `folder`."""
    for item in RUNTIME_DIR.iterdir():
        if item.is_file():
            shutil.copy2(item, folder / item.name)


def write_site(folder: Path) -> None:
    """Refreshes the chat site in `folder`, the parent of model folders: the runtime and page,
    and models.json listing every model folder in it (the page's model picker)."""
    models = []
    for manifest_path in sorted(folder.glob("*/manifest.json")):
        if manifest_path.parent.name.startswith("."):
            continue  # a build being written
        try:
            manifest = contract.read(manifest_path.parent)
        except BuildError:
            continue  # not a folder of this build-web
        models.append(
            {
                "model_id": manifest["model_id"],
                "path": f"{manifest_path.parent.name}/",
                "quantization": manifest["quantization"],
                "task": manifest["task"],
                "context_window": manifest["context_window"],
                "bytes": sum(s["bytes"] for s in manifest["shards"]),
            }
        )
    _copy_runtime(folder)
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
    entries: dict[str, dict[str, Any]] = {}
    for name, compiled in variants.items():
        kind = "webgpuKernels" if compiled.wasm is None else "wasmKernels"
        _check(compiled.kernels, kind, f"the {name} kernels")
        (out / f"kernels-{name}.json").write_text(json.dumps(compiled.kernels))
        entries[name] = {"kernels": f"kernels-{name}.json", "functions": compiled.functions}
        if compiled.wasm is None:  # what the adapter must allow (the runtime checks it)
            most = max(storage_buffers(k["wgsl"]) for k in compiled.kernels.values())
            entries[name]["storage_buffers"] = most
        if compiled.wasm is not None:
            (out / "kernels.wasm").write_bytes(compiled.wasm)
            entries[name]["wasm"] = {
                "file": "kernels.wasm",
                "bytes": len(compiled.wasm),
                "sha256": hashlib.sha256(compiled.wasm).hexdigest(),
                # The shared memory the module imports, in 64 KiB pages.
                "memory": {"initial": wasm.INITIAL_PAGES, "maximum": wasm.MAXIMUM_PAGES},
                # WebAssembly features the kernels use, which the runtime checks for.
                "features": [feature[1:] for feature in wasm.FEATURES],
            }
    tokenizer = source.tokenizer
    if source.family.task == "embedding":
        # The runtime pads a batch itself (and masks the padding) and refuses inputs past the
        # longest; a tokenizer.json that pads or truncates (all-MiniLM-L6-v2's pads every
        # input to 128 tokens and cuts longer ones) would do either behind its back.
        tokenizer = {**tokenizer, "padding": None, "truncation": None}
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(
        json.dumps(source.tokenizer_config, ensure_ascii=False, indent=1)
    )
    manifest = {
        "format": contract.MANIFEST_FORMAT,
        "model_id": model_id,
        "architecture": source.family.name,
        "quantization": scheme.name,
        "dtype": scheme.dtype,
        "source_tensor_bytes": source.tensor_bytes,
        "required_features": ["shader-f16"] if scheme.needs_f16 else [],
        "config": source.config.to_json(),
        # "chat" (prefill and decode over a KV cache) or "embedding" (embed over a batch)
        "task": source.family.task,
        # the KV cache's capacity; for an encoder, the longest input in tokens
        "context_window": window,
        "prefill_chunk": prefill_chunk,
        # the largest value of each symbolic size of the plans (for an encoder, "b" is the
        # most inputs one call takes)
        "bounds": next(iter(variants.values())).bounds,
        # The KV-cache tensors the plans' "cache" references index, allocated by the runtime.
        "kv_cache": next(iter(variants.values())).kv_cache,
        "eos_token_ids": source.eos_token_ids,
        # how the chat template asks for a tool call (web/src/text/tool_formats.js), or null
        "tool_call_format": tool_call_format(source.tokenizer_config.get("chat_template")),
        "tokenizer": "tokenizer.json",
        "tokenizer_config": "tokenizer_config.json",
        "shards": shards,
        "params": tensors,
        # "software" suits adapters that run shaders on the CPU (isFallbackAdapter),
        # "gpu" suits real GPUs, "wasm" runs on the CPU without WebGPU; the runtime picks one.
        "variants": entries,
    }
    _check(manifest, "manifest", "the manifest")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _check(document: Any, part: str, what: str) -> None:
    """What the build writes keeps to the contract the runtime checks (a network or pass that
    emits anything else is a defect of the compiler, reported before a file is written)."""
    where = contract.problem(document, part)
    if where:
        raise BuildError(f"internal: {what} ({part}) breaks {contract.SCHEMA_PATH.name} {where}")
