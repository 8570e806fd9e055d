"""The benchmark's peers, on the same model, prompt token ids and token counts as
`tools.bench`:
- transformers.js on ONNX Runtime Web's WebAssembly backend (fp32, one thread per core) in
  the same headless Chromium;
- llama.cpp, native (llama-cpp-python, one thread per core), on the preset's GGUF itself:
  the speed a browser engine is measured against (tools/peer/llama_cpp_run.py).

Everything they need is made on first use and kept in the user's cache (`peer/` in the folder
`compiler.resources.cache_dir` names):
- venv/: a Python venv from tools/peer/requirements.txt. Optimum's ONNX exporter, which
  transformers.js users run to make their models, needs transformers<4.58; the project's
  venv has 5.x, so the peer has its own.
- llama-cpp-venv/: a venv from tools/peer/llama-cpp.txt (compiles llama.cpp).
- models/NAME-GGUFHASH-EXPORTHASH/: the preset's GGUF as transformers.js loads it from a
  local folder (tools/peer/export.py), checked against transformers 5.x's logits.
and tools/peer/node_modules/ from tools/peer/package-lock.json (@huggingface/transformers,
pinned). The page never reaches a CDN or a hub: the model and onnxruntime-web's files are
served from a temporary folder by the project's own server (cross-origin isolated, which
ONNX Runtime's threads need).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.loader import PRESETS_DIR, load, preset_gguf
from compiler.resources import cache_dir

from .browser import serve_folder

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "tools" / "peer"
CACHE = cache_dir("peer")
VENV = CACHE / "venv"
LLAMA_VENV = CACHE / "llama-cpp-venv"
NODE_MODULES = SCRIPTS / "node_modules"
STAMP = ".kiln-stamp"
PEERS = ["transformers.js", "llama.cpp"]
# Largest difference between the export's logits and transformers 5.x's, relative to the
# largest logit.
LOGIT_TOLERANCE = 1e-4
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>transformers.js peer</title></head>
<body></body></html>
"""

LOAD = """async ({base, name, ortVersion, prompt}) => {
    const T = await import(base + "/transformers.js");
    window.T = T;
    const {env} = T;
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = "/models/";  // a path: transformers.js reads a full URL as remote
    env.useBrowserCache = false;
    const onnx = env.backends.onnx;
    if (onnx.versions.web !== ortVersion)
        throw new Error(`bundled onnxruntime-web ${onnx.versions.web}, served ${ortVersion}`);
    // At import, transformers.js points wasmPaths at its CDN: the same files, served here.
    const cdn = onnx.wasm.wasmPaths;
    const local = (url) => base + "/ort/" + String(url).split("/").pop();
    onnx.wasm.wasmPaths = {mjs: local(cdn.mjs), wasm: local(cdn.wasm)};
    onnx.wasm.numThreads = navigator.hardwareConcurrency;
    const files = {mjs: onnx.wasm.wasmPaths.mjs, wasm: onnx.wasm.wasmPaths.wasm};
    const start = performance.now();
    window.tokenizer = await T.AutoTokenizer.from_pretrained(name);
    window.model = await T.AutoModelForCausalLM.from_pretrained(
        name, {device: "wasm", dtype: "fp32"});
    const load = (performance.now() - start) / 1000;
    return {
        load, files,
        version: env.version,
        ortVersion: onnx.versions.web,
        numThreads: onnx.wasm.numThreads,
        hardwareConcurrency: navigator.hardwareConcurrency,
        crossOriginIsolated: self.crossOriginIsolated,
        ids: tokenizer.apply_chat_template([{role: "user", content: prompt}], {
            add_generation_prompt: true, tokenize: true, return_tensor: false, return_dict: false,
        }),
    };
}"""

GENERATE = """async ([ids, n]) => {
    const times = [];
    const tokens = [];
    // generate() puts the prompt first, then each new token as soon as it is chosen.
    class Clock extends T.BaseStreamer {
        put(value) { times.push(performance.now()); tokens.push(Number(value[0].at(-1))); }
        end() {}
    }
    const tensor = (data) => new T.Tensor("int64", BigInt64Array.from(data, BigInt),
        [1, data.length]);
    const start = performance.now();
    await model.generate({
        input_ids: tensor(ids), attention_mask: tensor(ids.map(() => 1)),
        max_new_tokens: n, min_new_tokens: n, do_sample: false, streamer: new Clock(),
    });
    return {
        time_to_first_token_s: (times[1] - start) / 1000,
        after_first_s: (times.at(-1) - times[1]) / 1000,
        tokens: tokens.slice(1),
    };
}"""


class PeerError(Exception):
    """The peer could not be installed, exported, checked or run as asked."""


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _stamp(folder: Path) -> str | None:
    try:
        return (folder / STAMP).read_text()
    except OSError:
        return None


def _run(command: Sequence[str | Path], cwd: Path | None = None) -> None:
    """Runs a command with its output on stderr (stdout carries the benchmark's JSON)."""
    try:
        subprocess.run([str(c) for c in command], cwd=cwd, check=True, stdout=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as err:
        raise PeerError(f"{' '.join(map(str, command))}: {err}") from None


def _python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def _venv(folder: Path, requirements: Path) -> None:
    """Makes (or updates) the venv `folder` from `requirements` unless its stamp (the file's
    hash) is current."""
    stamp = _digest(requirements)
    if _stamp(folder) == stamp:
        return
    print(f"peer: installing {requirements.name} into {folder}", file=sys.stderr)
    if not _python(folder).exists():
        _run([sys.executable, "-m", "venv", folder])
    pip = ["-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([_python(folder), *pip, "-r", requirements])
    (folder / STAMP).write_text(stamp)


def install(name: str) -> None:
    """Makes what the peer `name` needs where it is not current; else only checks: for
    transformers.js the peer venv and tools/peer/node_modules (stamped with the hash of
    requirements.txt, of package-lock.json), for llama.cpp its venv."""
    if name == "llama.cpp":
        _venv(LLAMA_VENV, SCRIPTS / "llama-cpp.txt")
        return
    _venv(VENV, SCRIPTS / "requirements.txt")
    stamp = _digest(SCRIPTS / "package-lock.json")
    if _stamp(NODE_MODULES) != stamp:
        print("peer: installing tools/peer/node_modules", file=sys.stderr)
        # --ignore-scripts: the install steps of onnxruntime-node and sharp fetch native
        # binaries that only Node uses; the page needs the web bundle and onnxruntime-web.
        npm = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        _run(npm, cwd=SCRIPTS)
        (NODE_MODULES / STAMP).write_text(stamp)


def gguf_file(model: str) -> Path:
    """The GGUF file of a preset, or MODEL itself where it is a .gguf path."""
    if model.endswith(".gguf"):
        return Path(model)
    preset = PRESETS_DIR / f"{model}.json"
    if not preset.is_file():
        raise PeerError(f"the peer runs GGUF presets and .gguf files, not {model!r}")
    if "parts" not in json.loads(preset.read_text()):
        raise PeerError(f"the peer runs GGUF presets and .gguf files, not {model!r}")
    return preset_gguf(model)


def reference_logits(gguf: Path, ids: list[int]) -> np.ndarray:
    """transformers' (the project venv's, 5.x) float32 logits of the GGUF for one prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def check_export(gguf: Path, folder: Path, ids: list[int], scratch: Path) -> dict[str, Any]:
    """Compares ONNX Runtime's logits of the export with transformers 5.x's on the GGUF."""
    import transformers

    (scratch / "ids.json").write_text(json.dumps(ids))
    export_py = SCRIPTS / "export.py"
    _run([_python(), export_py, "logits", folder, scratch / "ids.json", scratch / "onnx.npy"])
    exported = np.load(scratch / "onnx.npy")
    reference = reference_logits(gguf, ids)
    diff = float(np.abs(exported - reference).max())
    scale = float(np.abs(reference).max())
    check = {
        "reference": f"transformers {transformers.__version__}",
        "tokens": len(ids),
        "max_abs_diff": diff,
        "max_abs_logit": scale,
        "relative": diff / scale,
        "argmax_agreement": float((exported.argmax(-1) == reference.argmax(-1)).mean()),
    }
    print(f"peer: ONNX export vs {check['reference']}: {json.dumps(check)}", file=sys.stderr)
    if not diff <= LOGIT_TOLERANCE * scale:
        raise PeerError(f"the ONNX export's logits differ from transformers': {check}")
    return check


def export(model: str, ids: list[int]) -> Path:
    """The model folder transformers.js loads, made and checked (on `ids`) the first time;
    keyed by the GGUF's sha256 and the hash of the peer venv's requirements and export script,
    older exports of the same model are removed."""
    gguf = gguf_file(model)
    key = (
        _digest(gguf)[:16] + "-" + _digest(SCRIPTS / "requirements.txt", SCRIPTS / "export.py")[:16]
    )
    stem = Path(model).stem
    folder = CACHE / "models" / f"{stem}-{key}"
    if (folder / "check.json").is_file():
        return folder
    print(f"peer: exporting {gguf.name} to ONNX", file=sys.stderr)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for old in folder.parent.iterdir():
        if re.fullmatch(re.escape(stem) + r"-[0-9a-f]{16}-[0-9a-f]{16}", old.name):
            shutil.rmtree(old)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".export-") as tmp:
        stage = Path(tmp) / folder.name
        _run([_python(), SCRIPTS / "export.py", "export", gguf, stage])
        # Kiln's tokenizer, built from the GGUF's metadata: transformers' GGUF tokenizer has the
        # wrong end token, adds a BOS and loses SmolLM2's digit split.
        source = load(model)
        (stage / "tokenizer.json").write_text(json.dumps(source.tokenizer, ensure_ascii=False))
        (stage / "tokenizer_config.json").write_text(json.dumps(source.tokenizer_config, indent=1))
        check = check_export(gguf, stage, ids, Path(tmp))
        (stage / "check.json").write_text(json.dumps(check, indent=1))
        stage.rename(folder)
    return folder


def _place(source: Path, target: Path) -> None:
    """A hard link where the file system allows one (the server refuses symlinks that lead
    out of the served folder), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _lay_out(root: Path, model_folder: Path) -> None:
    (root / "index.html").write_text(PAGE)
    _place(
        NODE_MODULES / "@huggingface/transformers/dist/transformers.js", root / "transformers.js"
    )
    for file in (NODE_MODULES / "onnxruntime-web/dist").glob("ort-wasm-*"):
        _place(file, root / "ort" / file.name)
    for file in model_folder.rglob("*"):
        if file.is_file() and file.name != "check.json":
            _place(file, root / "models" / model_folder.name / file.relative_to(model_folder))


def _speeds(measured: list[dict], prompt_tokens: int, decode_tokens: int) -> dict[str, Any]:
    """A peer row's speeds, the medians over runs that each give their time to the first
    token and from it to the last."""
    return {
        "prompt_tokens": prompt_tokens,
        "decode_tokens": decode_tokens,
        "prefill_tok_s": round(
            statistics.median(prompt_tokens / r["time_to_first_token_s"] for r in measured), 2
        ),
        "decode_tok_s": round(
            statistics.median((decode_tokens - 1) / r["after_first_s"] for r in measured), 2
        ),
        "time_to_first_token_s": round(
            statistics.median(r["time_to_first_token_s"] for r in measured), 2
        ),
    }


def bench_transformers_js(
    browser, model: str, ids: list[int], prompt: str, runs: int, decode_tokens: int
) -> dict[str, Any]:
    """One benchmark row for transformers.js: `prompt` through the model's chat template must
    give `ids` (what Kiln fed), then `decode_tokens` greedy tokens with EOS held off; the
    median of `runs` runs after one warm-up run."""
    folder = export(model, ids)
    ort_version = json.loads((NODE_MODULES / "onnxruntime-web/package.json").read_text())["version"]
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="serve-") as tmp:
        _lay_out(Path(tmp), folder)
        with serve_folder(Path(tmp)) as url:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: (
                    print("[browser]", m.text, file=sys.stderr)
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.goto(url + "/")
            info = page.evaluate(
                LOAD,
                {"base": url, "name": folder.name, "ortVersion": ort_version, "prompt": prompt},
            )
            if info["ids"] != ids:
                raise PeerError(
                    f"transformers.js tokenizes the prompt to {info['ids']}, not to the "
                    f"{len(ids)} tokens Kiln fed: {ids}"
                )
            if not info["crossOriginIsolated"] or info["numThreads"] != info["hardwareConcurrency"]:
                raise PeerError(f"ONNX Runtime Web would not run one thread per core: {info}")
            results = [page.evaluate(GENERATE, [ids, decode_tokens]) for _ in range(runs + 1)]
            reply = page.evaluate("(t) => tokenizer.decode(t)", results[-1]["tokens"][:20])
            workers = len(page.workers)
            page.close()
    print(
        f"peer: transformers.js {info['version']}, onnxruntime-web {info['ortVersion']} "
        f"({info['files']['wasm'].rsplit('/', 1)[-1]}), crossOriginIsolated "
        f"{info['crossOriginIsolated']}, numThreads {info['numThreads']} of "
        f"hardwareConcurrency {info['hardwareConcurrency']}, {workers} web workers",
        file=sys.stderr,
    )
    print(f"peer: transformers.js reply, first 20 tokens: {reply!r}", file=sys.stderr)
    measured = results[1:]
    if any(len(r["tokens"]) != decode_tokens for r in results):
        raise PeerError(
            f"transformers.js made {len(results[-1]['tokens'])} tokens, not {decode_tokens}"
        )
    return {
        "model": model,
        "peer": "transformers.js",
        "peer_version": info["version"],
        "onnxruntime_web_version": info["ortVersion"],
        "backend": "wasm",
        "dtype": "fp32",
        "threads": info["numThreads"],
        **_speeds(measured, len(ids), decode_tokens),
        "load_s": round(info["load"], 2),
        "model_bytes": sum(f.stat().st_size for f in (folder / "onnx").iterdir()),
        "runs": runs,
    }


def bench_llama_cpp(model: str, ids: list[int], runs: int, decode_tokens: int) -> dict[str, Any]:
    """One benchmark row for native llama.cpp on the model's GGUF: the same prompt ids, then
    `decode_tokens` greedy tokens with EOS held off; the median of `runs` runs after one
    warm-up run, one thread per core."""
    gguf = gguf_file(model)
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="llama-cpp-") as tmp:
        ids_path = Path(tmp) / "ids.json"
        ids_path.write_text(json.dumps(ids))
        script = SCRIPTS / "llama_cpp_run.py"
        command = [_python(LLAMA_VENV), script, gguf, ids_path, decode_tokens, runs, threads]
        try:
            done = subprocess.run(
                [str(c) for c in command], check=True, stdout=subprocess.PIPE, text=True
            )
        except (OSError, subprocess.CalledProcessError) as err:
            raise PeerError(f"llama.cpp: {err}") from None
    info, *results = [json.loads(line) for line in done.stdout.splitlines()]
    print(
        f"peer: llama.cpp {info['version']}, {threads} threads, {info['system']}", file=sys.stderr
    )
    if len(results) != runs + 1 or any(len(r["tokens"]) != decode_tokens for r in results):
        raise PeerError(f"llama.cpp did not make {runs + 1} runs of {decode_tokens} tokens")
    print(f"peer: llama.cpp reply, first 20 tokens: {results[-1]['reply']!r}", file=sys.stderr)
    measured = results[1:]
    return {
        "model": model,
        "peer": "llama.cpp",
        "peer_version": info["version"],
        "backend": "native",
        "dtype": "as stored (" + gguf.name + ")",
        "threads": threads,
        **_speeds(measured, len(ids), decode_tokens),
        "model_bytes": gguf.stat().st_size,
        "runs": runs,
    }


def bench(
    name: str, browser, model: str, ids: list[int], prompt: str, runs: int, decode_tokens: int
) -> dict[str, Any]:
    """One benchmark row for the peer `name` (one of PEERS)."""
    if name == "transformers.js":
        return bench_transformers_js(browser, model, ids, prompt, runs, decode_tokens)
    if name == "llama.cpp":
        return bench_llama_cpp(model, ids, runs, decode_tokens)
    raise PeerError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
