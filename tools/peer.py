"""The benchmark's peers, on the same model, prompt token ids and token counts as
`tools.bench`, each run as its users run it:
- transformers.js on ONNX Runtime Web's WebAssembly backend (one thread per core) in the same
  headless Chromium, at each dtype of DTYPES: q8, its default on the `wasm` device, q4 (the
  4-bit file its docs suggest for small downloads) and fp32;
- wllama (llama.cpp compiled to WebAssembly) on the preset's GGUF itself, in the same
  Chromium, on the CPU (no WebGPU), one thread per core;
- llama.cpp, native (llama-cpp-python, one thread per core), on the preset's GGUF itself:
  the speed a browser engine is measured against (tools/peer/llama_cpp_run.py).

Everything they need is made on first use and kept in the user's cache (`peer/` in the folder
`compiler.resources.cache_dir` names):
- venv/: a Python venv from tools/peer/requirements.txt. Optimum's ONNX exporter, which
  transformers.js users run to make their models, needs transformers<4.58; the project's
  venv has 5.x, so the peer has its own.
- llama-cpp-venv/: a venv from tools/peer/llama-cpp.txt (compiles llama.cpp).
- models/NAME-GGUFHASH-EXPORTHASH/: the preset's GGUF as transformers.js loads it from a
  local folder (tools/peer/export.py): the fp32 export, checked against transformers 5.x's
  logits, and the q8 and q4 files quantized from it, each checked against the fp32 export's
  greedy tokens (check-DTYPE.json).
and tools/peer/node_modules/ from tools/peer/package-lock.json (@huggingface/transformers and
@wllama/wllama, pinned). The page never reaches a CDN or a hub: the model and the peer's
files are served from a temporary folder by the project's own server (cross-origin isolated,
which the peers' threads need).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
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
WLLAMA = NODE_MODULES / "@wllama/wllama"
STAMP = ".kiln-stamp"
PEERS = ["transformers.js", "wllama", "llama.cpp"]
# transformers.js's dtypes that the benchmark runs, its default on the wasm device first, and
# the file it loads for each (tools/peer/export.py makes them).
DTYPES = ["q8", "q4", "fp32"]
DEFAULT_DTYPE = "q8"
ONNX_FILES = {"fp32": "model.onnx", "q8": "model_quantized.onnx", "q4": "model_q4.onnx"}
# Largest difference between the fp32 export's logits and transformers 5.x's, relative to the
# largest logit.
LOGIT_TOLERANCE = 1e-4
# A quantized file is checked against the fp32 export on the benchmark's prompt: over the
# fp32 file's first AGREEMENT_TOKENS greedy tokens, fed back as the context (teacher
# forcing), fp32's token must be among the quantized file's 5 highest logits at MIN_TOP5 of
# the positions or more. Not the greedy tokens themselves: q8 is ONNX Runtime's dynamic
# quantization, which quantizes each MatMul's activations per tensor as it runs, and that is
# coarse on SmolLM2 (per-channel weights do no better): its greedy reply leaves fp32's at the
# first token (fp32's is its 5th choice there) and it picks fp32's token at about half the
# positions, yet ranks it in its top 5 at over 90% of them. A broken file (a wrong scale or
# block layout) ranks it nowhere near. check-DTYPE.json keeps each file's ranks, argmax
# agreement and mean KL divergence from fp32.
AGREEMENT_TOKENS = 32
MIN_TOP5 = 0.8
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>benchmark peer</title></head>
<body></body></html>
"""

LOAD = """async ({base, name, ortVersion, prompt, dtype, externalData}) => {
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
    // No dtype: what a user who names none gets (q8 on wasm).
    const options = {device: "wasm", ...(dtype && {dtype}),
                     ...(externalData && {use_external_data_format: externalData})};
    const start = performance.now();
    window.tokenizer = await T.AutoTokenizer.from_pretrained(name);
    window.model = await T.AutoModelForCausalLM.from_pretrained(name, options);
    const load = (performance.now() - start) / 1000;
    return {
        load, files,
        version: env.version,
        ortVersion: onnx.versions.web,
        numThreads: onnx.wasm.numThreads,
        hardwareConcurrency: navigator.hardwareConcurrency,
        crossOriginIsolated: self.crossOriginIsolated,
        // a base model without a chat template reads the plain text, as Kiln's does
        ids: tokenizer.chat_template
            ? tokenizer.apply_chat_template([{role: "user", content: prompt}], {
                add_generation_prompt: true, tokenize: true, return_tensor: false,
                return_dict: false})
            : tokenizer.encode(prompt),
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

# wllama 3.x wraps llama.cpp's server: its completions take the prompt as text (tokenized by
# llama.cpp with the model's special tokens parsed and its BOS added where the GGUF says so),
# not as token ids. The page is given the text that Kiln tokenized to the benchmark's ids,
# and the run checks that llama.cpp counted as many prompt tokens.
WLLAMA_LOAD = """async ({base, nCtx}) => {
    const W = await import(base + "/wllama/index.js");
    window.wllama = new W.Wllama({default: base + "/wllama/wllama.wasm"},
                                 {logger: W.LoggerWithoutDebug});
    const threads = navigator.hardwareConcurrency;
    const start = performance.now();
    // n_gpu_layers 0: the CPU only (wllama then hides WebGPU from its worker); wllama's own
    // default is half the cores, the benchmark gives every peer one thread per core.
    await wllama.loadModelFromUrl(base + "/model.gguf", {
        n_threads: threads, n_ctx: nCtx, n_gpu_layers: 0, useCache: false});
    const load = (performance.now() - start) / 1000;
    return {
        load,
        libllama: W.Wllama.getLibllamaVersion(),
        multithread: wllama.isMultithread(),
        threads: wllama.getNumThreads(),
        hardwareConcurrency: threads,
        crossOriginIsolated: self.crossOriginIsolated,
    };
}"""

WLLAMA_GENERATE = """async ([text, n]) => {
    const start = performance.now();
    // temperature 0: greedy; ignore_eos holds the end tokens off, as for Kiln; no cached
    // prompt, so that each run prefills it anew.
    const r = await wllama.createCompletion({
        prompt: text, max_tokens: n, temperature: 0, ignore_eos: true, cache_prompt: false});
    return {
        timings: r.timings, usage: r.usage, text: r.choices[0].text,
        wall_s: (performance.now() - start) / 1000,
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


def _run(
    command: Sequence[object], cwd: Path | None = None, what: str = "", capture: bool = False
) -> str:
    """Runs a command with its error output passed on to stderr as it comes, and its output
    too unless `capture` (stdout carries the benchmark's JSON), which returns it instead. A
    failure raises PeerError naming `what` (else the command) and the last line the command
    wrote to stderr (its reason, where the command gives one)."""
    args = [str(c) for c in command]
    what = what or " ".join(Path(a).name for a in args[:3])
    try:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            stdout=subprocess.PIPE if capture else sys.stderr,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except OSError as err:
        raise PeerError(f"{what}: {err}") from None
    last: list[str] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            sys.stderr.write(line)
            if line.strip():
                last[:] = [line.strip()]

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    out = process.stdout.read() if process.stdout else ""
    code = process.wait()
    thread.join()
    if code < 0:
        name = signal.Signals(-code).name
        raise PeerError(f"{what}: killed by {name}" + (f" (last said: {last[0]})" if last else ""))
    if code:
        raise PeerError(f"{what}: " + (last[0] if last else f"exit status {code}"))
    return out


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
        _run([sys.executable, "-m", "venv", folder], what="python -m venv")
    pip = ["-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([_python(folder), *pip, "-r", requirements], what=f"pip install -r {requirements.name}")
    (folder / STAMP).write_text(stamp)


def _node_modules() -> None:
    """tools/peer/node_modules from package-lock.json, unless its stamp (the lock's hash) is
    current."""
    stamp = _digest(SCRIPTS / "package-lock.json")
    if _stamp(NODE_MODULES) == stamp:
        return
    print("peer: installing tools/peer/node_modules", file=sys.stderr)
    # --ignore-scripts: the install steps of onnxruntime-node and sharp fetch native
    # binaries that only Node uses; the page needs the web bundles and their WebAssembly.
    npm = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    _run(npm, cwd=SCRIPTS, what="npm ci in tools/peer")
    (NODE_MODULES / STAMP).write_text(stamp)


def install(name: str) -> None:
    """Makes what the peer `name` needs where it is not current; else only checks: for
    transformers.js the peer venv and tools/peer/node_modules (stamped with the hash of
    requirements.txt, of package-lock.json), for wllama the node_modules, for llama.cpp its
    venv."""
    if name == "llama.cpp":
        _venv(LLAMA_VENV, SCRIPTS / "llama-cpp.txt")
        return
    if name == "transformers.js":
        _venv(VENV, SCRIPTS / "requirements.txt")
    _node_modules()


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
    _run(
        [_python(), export_py, "logits", folder, scratch / "ids.json", scratch / "onnx.npy"],
        what="checking the ONNX export",
    )
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


def check_quantized(folder: Path, dtypes: list[str], ids: list[int]) -> dict[str, dict]:
    """Each quantized file's agreement with the fp32 export's greedy tokens after `ids`."""
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="check-") as tmp:
        (Path(tmp) / "ids.json").write_text(json.dumps(ids))
        command = [_python(), SCRIPTS / "export.py", "agreement", folder, Path(tmp) / "ids.json"]
        out = _run(
            [*command, AGREEMENT_TOKENS, *dtypes], what="checking the quantized files", capture=True
        )
    checks = {}
    for line in out.splitlines():
        check = json.loads(line)
        dtype = check["dtype"]
        keys = ("tokens", "argmax_agreement", "top5_agreement", "greedy_prefix_agrees")
        summary = {k: check[k] for k in keys} | {"mean_kl_nats": round(check["mean_kl_nats"], 3)}
        print(f"peer: {dtype} vs the fp32 export's greedy tokens: {summary}", file=sys.stderr)
        if check["top5_agreement"] < MIN_TOP5:
            raise PeerError(
                f"the {dtype} file does not follow the fp32 export: fp32's greedy token is in "
                f"its top 5 at {check['top5_agreement']:.0%} of {check['tokens']} positions, "
                f"{MIN_TOP5:.0%} needed ({summary})"
            )
        checks[dtype] = check
    return checks


def export(model: str, ids: list[int], dtypes: Sequence[str] = ("fp32",)) -> Path:
    """The model folder transformers.js loads, with the file of each of `dtypes`, made and
    checked (on `ids`) the first time; keyed by the GGUF's sha256 and the hash of the peer
    venv's requirements and export script, older exports of the same model are removed."""
    gguf = gguf_file(model)
    key = (
        _digest(gguf)[:16] + "-" + _digest(SCRIPTS / "requirements.txt", SCRIPTS / "export.py")[:16]
    )
    stem = Path(model).stem
    folder = CACHE / "models" / f"{stem}-{key}"
    if not (folder / "check.json").is_file():
        print(f"peer: exporting {gguf.name} to ONNX", file=sys.stderr)
        folder.parent.mkdir(parents=True, exist_ok=True)
        for old in folder.parent.iterdir():
            if re.fullmatch(re.escape(stem) + r"-[0-9a-f]{16}-[0-9a-f]{16}", old.name):
                shutil.rmtree(old)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".export-") as tmp:
            stage = Path(tmp) / folder.name
            _run(
                [_python(), SCRIPTS / "export.py", "export", gguf, stage],
                what=f"exporting {gguf.name} to ONNX",
            )
            # Kiln's tokenizer, built from the GGUF's metadata: transformers' GGUF tokenizer has
            # the wrong end token, adds a BOS and loses SmolLM2's digit split.
            source = load(model)
            (stage / "tokenizer.json").write_text(json.dumps(source.tokenizer, ensure_ascii=False))
            (stage / "tokenizer_config.json").write_text(
                json.dumps(source.tokenizer_config, indent=1)
            )
            check = check_export(gguf, stage, ids, Path(tmp))
            (stage / "check.json").write_text(json.dumps(check, indent=1))
            stage.rename(folder)
    missing = [d for d in dtypes if d != "fp32" and not (folder / f"check-{d}.json").is_file()]
    for dtype in missing:  # written in place: a file without its check is made again
        print(f"peer: quantizing {gguf.name}'s ONNX export to {dtype}", file=sys.stderr)
        _run(
            [_python(), SCRIPTS / "export.py", "quantize", folder, dtype],
            what=f"quantizing {gguf.name}'s ONNX export to {dtype}",
        )
    if missing:
        for dtype, check in check_quantized(folder, missing, ids).items():
            (folder / f"check-{dtype}.json").write_text(json.dumps(check, indent=1))
    return folder


def _onnx_files(folder: Path, dtype: str) -> list[Path]:
    """The file transformers.js loads for `dtype`, then its chunks of external data, where it
    has some (NAME_data, NAME_data_1, ...)."""
    path = folder / "onnx" / ONNX_FILES[dtype]
    chunks = [path.with_name(path.name + "_data")]
    while chunks[-1].is_file():
        chunks.append(path.with_name(f"{path.name}_data_{len(chunks)}"))
    return [path, *chunks[:-1]]


def _place(source: Path, target: Path) -> None:
    """A hard link where the file system allows one (the server refuses symlinks that lead
    out of the served folder), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _lay_out(root: Path, model_folder: Path, dtype: str) -> None:
    (root / "index.html").write_text(PAGE)
    _place(
        NODE_MODULES / "@huggingface/transformers/dist/transformers.js", root / "transformers.js"
    )
    for file in (NODE_MODULES / "onnxruntime-web/dist").glob("ort-wasm-*"):
        _place(file, root / "ort" / file.name)
    served = root / "models" / model_folder.name
    for file in model_folder.iterdir():  # config and tokenizer files
        if file.is_file() and not file.name.startswith("check"):
            _place(file, served / file.name)
    for file in _onnx_files(model_folder, dtype):
        _place(file, served / "onnx" / file.name)


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


def _page(browser, url: str):
    """A page of the peer's folder, with its console's errors and warnings on stderr (their
    first lines: the peers log the page's stacks after them)."""

    def show(message) -> None:
        if message.type in ("error", "warning"):
            lines = message.text.strip().splitlines() or [""]
            more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
            print("[browser]", lines[0] + more, file=sys.stderr)

    page = browser.new_page()
    page.on("console", show)
    page.goto(url + "/")
    return page


def _first_line(err: Exception) -> str:
    """An error's message in one line: Playwright's carry the page's stack after it."""
    text = str(err).strip().splitlines()
    return re.sub(r"^(Page|Frame)\.evaluate: ", "", text[0]) if text else type(err).__name__


def bench_transformers_js(
    browser,
    model: str,
    ids: list[int],
    prompt: str,
    runs: int,
    decode_tokens: int,
    dtypes: Sequence[str] = DTYPES,
) -> Iterator[dict[str, Any]]:
    """A benchmark row for transformers.js at each of `dtypes`, each as soon as it is measured:
    `prompt` through the model's chat template (or alone, for a model without one) must give
    `ids` (what Kiln fed), then `decode_tokens` greedy tokens with EOS held off; the median of
    `runs` runs after one warm-up run. The default dtype is loaded as a user who names none
    loads it, and the file fetched is checked to be its."""
    folder = export(model, ids, dtypes)
    for dtype in dtypes:
        try:
            yield _bench_transformers_js(
                browser, folder, model, ids, prompt, runs, decode_tokens, dtype
            )
        except PeerError:
            raise
        except Exception as err:  # the page's (or Playwright's) error, in one line
            others = [d for d in dtypes if d != dtype]
            hint = f" (--peer-dtype {' '.join(others)} leaves it out)" if others else ""
            raise PeerError(f"transformers.js ({dtype}): {_first_line(err)}{hint}") from None


def _bench_transformers_js(
    browser,
    folder: Path,
    model: str,
    ids: list[int],
    prompt: str,
    runs: int,
    decode_tokens: int,
    dtype: str,
) -> dict[str, Any]:
    ort_version = json.loads((NODE_MODULES / "onnxruntime-web/package.json").read_text())["version"]
    files = _onnx_files(folder, dtype)
    fetched: list[str] = []
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="serve-") as tmp:
        _lay_out(Path(tmp), folder, dtype)
        with serve_folder(Path(tmp)) as url:
            page = _page(browser, url)
            page.on("request", lambda r: fetched.append(r.url.rsplit("/", 1)[-1]))
            try:
                info = page.evaluate(
                    LOAD,
                    {
                        "base": url,
                        "name": folder.name,
                        "ortVersion": ort_version,
                        "prompt": prompt,
                        "dtype": None if dtype == DEFAULT_DTYPE else dtype,
                        "externalData": len(files) - 1,  # chunks of external data
                    },
                )
                loaded = sorted(f for f in fetched if re.search(r"\.onnx(_data(_\d+)?)?$", f))
                if loaded != sorted(f.name for f in files):
                    raise PeerError(
                        f"transformers.js ({dtype}) loaded {loaded}, not {[f.name for f in files]}"
                    )
                if info["ids"] != ids:
                    raise PeerError(
                        f"transformers.js tokenizes the prompt to {info['ids']}, not to the "
                        f"{len(ids)} tokens Kiln fed: {ids}"
                    )
                threads = info["numThreads"]
                if not info["crossOriginIsolated"] or threads != info["hardwareConcurrency"]:
                    raise PeerError(f"ONNX Runtime Web would not run one thread per core: {info}")
                results = [page.evaluate(GENERATE, [ids, decode_tokens]) for _ in range(runs + 1)]
                reply = page.evaluate("(t) => tokenizer.decode(t)", results[-1]["tokens"][:20])
                workers = len(page.workers)
            finally:
                page.close()
    print(
        f"peer: transformers.js {info['version']} {dtype} ({loaded[0]}), onnxruntime-web "
        f"{info['ortVersion']} ({info['files']['wasm'].rsplit('/', 1)[-1]}), crossOriginIsolated "
        f"{info['crossOriginIsolated']}, numThreads {threads} of "
        f"hardwareConcurrency {info['hardwareConcurrency']}, {workers} web workers",
        file=sys.stderr,
    )
    print(f"peer: transformers.js {dtype} reply, first 20 tokens: {reply!r}", file=sys.stderr)
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
        "dtype": dtype,
        "dtype_is_default": dtype == DEFAULT_DTYPE,
        "threads": threads,
        **_speeds(measured, len(ids), decode_tokens),
        "load_s": round(info["load"], 2),
        "model_bytes": sum(f.stat().st_size for f in files),
        "runs": runs,
    }


def bench_wllama(
    browser, model: str, ids: list[int], text: str, runs: int, decode_tokens: int
) -> dict[str, Any]:
    """One benchmark row for wllama on the model's GGUF in the page, on the CPU, one thread
    per core: `text` (what Kiln tokenized to `ids`), then `decode_tokens` greedy tokens with
    the end tokens held off; the median of `runs` runs after one warm-up run, from
    llama.cpp's own timings of each (the prompt's decode and first pick, then the rest)."""
    gguf = gguf_file(model)
    wasm = WLLAMA / "esm/wasm/wllama.wasm"
    if not wasm.is_file():
        raise PeerError(f"wllama: no {wasm.relative_to(NODE_MODULES)} in tools/peer/node_modules")
    version = json.loads((WLLAMA / "package.json").read_text())["version"]
    try:
        with tempfile.TemporaryDirectory(dir=CACHE, prefix="serve-") as tmp:
            root = Path(tmp)
            (root / "index.html").write_text(PAGE)
            _place(WLLAMA / "esm/index.js", root / "wllama/index.js")
            _place(wasm, root / "wllama/wllama.wasm")
            _place(gguf, root / "model.gguf")
            with serve_folder(root) as url:
                page = _page(browser, url)
                try:
                    n_ctx = max(1024, len(ids) + decode_tokens + 8)  # 1024: wllama's default
                    info = page.evaluate(WLLAMA_LOAD, {"base": url, "nCtx": n_ctx})
                    if (
                        not info["crossOriginIsolated"]
                        or info["threads"] != info["hardwareConcurrency"]
                        or (info["hardwareConcurrency"] > 1 and not info["multithread"])
                    ):
                        raise PeerError(f"wllama would not run one thread per core: {info}")
                    results = [
                        page.evaluate(WLLAMA_GENERATE, [text, decode_tokens])
                        for _ in range(runs + 1)
                    ]
                    page.evaluate("async () => await wllama.exit()")  # its threads spin idle
                finally:
                    page.close()
    except PeerError:
        raise
    except Exception as err:  # the page's (or Playwright's) error, in one line
        raise PeerError(f"wllama: {_first_line(err)}") from None
    print(
        f"peer: wllama {version} (llama.cpp {info['libllama']}), crossOriginIsolated "
        f"{info['crossOriginIsolated']}, {info['threads']} threads of hardwareConcurrency "
        f"{info['hardwareConcurrency']}, CPU only",
        file=sys.stderr,
    )
    for r in results:
        timings = r["timings"]
        if timings["prompt_n"] + timings["cache_n"] != len(ids) or timings["cache_n"]:
            raise PeerError(
                f"wllama's llama.cpp read Kiln's prompt text as {timings['prompt_n']} tokens "
                f"({timings['cache_n']} cached), not the {len(ids)} Kiln fed"
            )
        if timings["predicted_n"] != decode_tokens:
            raise PeerError(f"wllama made {timings['predicted_n']} tokens, not {decode_tokens}")
    print(
        f"peer: wllama reply, first 120 characters: {results[-1]['text'][:120]!r}", file=sys.stderr
    )
    # llama.cpp's prompt time runs to the first token's pick, its predicted time from there
    # to the last pick: the two spans the other rows time.
    measured = [
        {
            "time_to_first_token_s": r["timings"]["prompt_ms"] / 1000,
            "after_first_s": r["timings"]["predicted_ms"] / 1000,
        }
        for r in results[1:]
    ]
    overhead = statistics.median(
        r["wall_s"] - (r["timings"]["prompt_ms"] + r["timings"]["predicted_ms"]) / 1000
        for r in results[1:]
    )
    print(f"peer: wllama's calls took {overhead:.3f} s beyond llama.cpp's timings", file=sys.stderr)
    return {
        "model": model,
        "peer": "wllama",
        "peer_version": version,
        "llama_cpp_build": info["libllama"],
        "backend": "wasm",
        "dtype": "as stored (" + gguf.name + ")",
        "threads": info["threads"],
        **_speeds(measured, len(ids), decode_tokens),
        "load_s": round(info["load"], 2),
        "model_bytes": gguf.stat().st_size,
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
        out = _run(command, what="llama.cpp", capture=True)
    info, *results = [json.loads(line) for line in out.splitlines()]
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
    name: str,
    browser,
    model: str,
    ids: list[int],
    prompt: str,
    text: str,
    runs: int,
    decode_tokens: int,
    dtypes: Sequence[str] = DTYPES,
) -> Iterator[dict[str, Any]]:
    """The benchmark rows of the peer `name` (one of PEERS), each as soon as it is measured:
    `ids` are the prompt's ids as Kiln fed them, `text` what Kiln tokenized to them (the chat
    template applied to `prompt`, or `prompt` itself for a model without one); `dtypes` are
    transformers.js's."""
    if name == "transformers.js":
        yield from bench_transformers_js(browser, model, ids, prompt, runs, decode_tokens, dtypes)
    elif name == "wllama":
        yield bench_wllama(browser, model, ids, text, runs, decode_tokens)
    elif name == "llama.cpp":
        yield bench_llama_cpp(model, ids, runs, decode_tokens)
    else:
        raise PeerError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
