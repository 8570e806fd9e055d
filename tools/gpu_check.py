"""The check to run on a machine with a GPU: the "gpu" kernel set of each model on the GPU's
WebGPU adapter, its greedy tokens against the CPU backend's, and its figures.

    scripts/gpu-check [MODEL ...] [--runtime chromium|node] [--tokens 32] [--runs 2]

Per model (default: the three chat presets, as stored): the build (kernels cached), then on the
GPU, in Chromium (or in Node.js with the `webgpu` package, `--runtime node`): greedy tokens of
the benchmark's prompt, which must equal the CPU backend's (the two run the same network in
float32, so a token differs only at a near tie: the step's top-two margin is printed with any
difference); prefill and decode tok/s (median of `runs` after a warm-up); the launches of a
decode step and of a prefill chunk; the bytes read back per generated token. One JSON line per
model, then a last line saying whether every model's tokens agreed (exit status 1 where not).

Where WebGPU gives no adapter, or only a CPU fallback (SwiftShader), it stops at once with one
line and exit status 2: its figures would say nothing of a GPU.

Chromium on Linux reaches the GPU through Vulkan with the flags in GPU_ARGS."""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compiler.build import build

from .bench import DECODE_TOKENS, PROMPT, launches
from .browser import CHROMIUM, CHROMIUM_ARGS, open_engine_page, serve_folder
from .node import node_engine

PRESETS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m"]
# Chromium's switches for a real GPU when headless on Linux: Vulkan, no blocklist.
GPU_ARGS = ["--enable-features=Vulkan", "--use-angle=vulkan", "--ignore-gpu-blocklist"]


class NoGPU(Exception):
    """WebGPU gives no adapter here, or only a CPU fallback."""


GENERATE = """async ([prompt, n]) => {
    engine.resetChat();
    const before = (await engine.runtimeStats()).readback_bytes;
    const r = await engine.generate(prompt, {temperature: 0, max_tokens: n, ignore_eos: true});
    const bytes = (await engine.runtimeStats()).readback_bytes - before;
    return {tokens: r.tokens, stats: {...r.stats, readback_per_token: bytes / r.tokens.length}};
}"""
PROMPT_IDS = """(t) => {
    const tokenizer = engine.tokenizer;
    if (!tokenizer.template) return tokenizer.encodePrompt(t);
    return tokenizer.encode(tokenizer.applyChatTemplate([{role: 'user', content: t}]));
}"""
STATS = "async () => await engine.runtimeStats()"
# The top two logits after the prompt and the first `k` tokens of a reply (a tie's measure).
MARGIN = """async ([ids]) => {
    const logits = await engine.forwardLogits(ids);
    let [a, b] = [-Infinity, -Infinity];
    for (const x of logits) if (x > a) [a, b] = [x, a]; else if (x > b) b = x;
    return a - b;
}"""


@contextlib.contextmanager
def engines(runtime: str, folder: Path) -> Iterator[tuple[Any, Any]]:
    """The model's engine on the GPU ("gpu" kernels) and on the CPU backend, each with
    `evaluate` (a Playwright page, or tools/node.py's engine)."""
    if runtime == "node":
        with (
            node_engine(folder, backend="webgpu", variant="gpu") as gpu,
            node_engine(folder, backend="wasm") as cpu,
        ):
            yield gpu, cpu
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, serve_folder(folder) as url:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + GPU_ARGS)
        try:
            gpu = open_engine_page(browser, url, variant="gpu", backend="webgpu")
            cpu = open_engine_page(browser, url, backend="wasm")
            yield gpu, cpu
        finally:
            browser.close()


# The adapter WebGPU gives, as {vendor, architecture, fallback}, or null.
ADAPTER = """async () => {
    const adapter = await navigator.gpu?.requestAdapter({powerPreference: "high-performance"});
    if (!adapter) return null;
    const info = adapter.info ?? {};
    const fallback = info.isFallbackAdapter ?? adapter.isFallbackAdapter;
    return {vendor: info.vendor, architecture: info.architecture, fallback};
}"""
# The same in Node, through the optional `webgpu` package (Dawn) that the runtime uses there.
NODE_ADAPTER = (
    "import('webgpu').then(async ({create, globals}) => {"
    "Object.assign(globalThis, globals); globalThis.navigator = {gpu: create([])};"
    f"console.log(JSON.stringify(await ({ADAPTER})()));"
    "}, () => console.log(JSON.stringify('no webgpu package')));"
)
WEB = Path(__file__).resolve().parent.parent / "web"


def probe(runtime: str) -> None:
    """NoGPU unless WebGPU gives an adapter of a GPU here (before any model is built)."""
    if runtime == "node":
        found = json.loads(
            subprocess.run(
                ["node", "--input-type=module", "-e", NODE_ADAPTER],
                cwd=WEB,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        if found == "no webgpu package":
            raise NoGPU('Node has no WebGPU: the optional "webgpu" package is not installed')
    else:
        from playwright.sync_api import sync_playwright

        with (
            tempfile.TemporaryDirectory() as empty,
            serve_folder(Path(empty)) as url,
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + GPU_ARGS)
            page = browser.new_page()
            page.goto(url)
            found = page.evaluate(ADAPTER)
            browser.close()
    if not found:
        raise NoGPU("WebGPU gives no adapter here")
    if found.get("fallback"):
        name = " ".join(filter(None, [found.get("vendor"), found.get("architecture")]))
        raise NoGPU(f"WebGPU's only adapter is a CPU fallback ({name or 'SwiftShader'})")


def check_adapter(stats: dict) -> dict:
    """The adapter the engine runs on; NoGPU where it is none or a CPU fallback."""
    adapter = stats.get("adapter")
    if stats.get("backend") != "webgpu" or not adapter:
        raise NoGPU("WebGPU gives no adapter here")
    if adapter.get("is_fallback_adapter"):
        name = " ".join(filter(None, [adapter.get("vendor"), adapter.get("architecture")]))
        raise NoGPU(f"WebGPU's only adapter is a CPU fallback ({name or 'SwiftShader'})")
    return adapter


def check_model(folder: Path, runtime: str, tokens: int, runs: int) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    with engines(runtime, folder) as (gpu, cpu):
        adapter = check_adapter(gpu.evaluate(STATS))
        prompt = gpu.evaluate(PROMPT_IDS, PROMPT)
        measured = [gpu.evaluate(GENERATE, [prompt, DECODE_TOKENS]) for _ in range(runs + 1)][1:]
        ours = gpu.evaluate(GENERATE, [prompt, tokens])["tokens"]
        reference = cpu.evaluate(GENERATE, [prompt, tokens])["tokens"]
        pairs = enumerate(zip(ours, reference, strict=True))
        first = next((i for i, (a, b) in pairs if a != b), None)
        margin = None
        if first is not None:  # how close the CPU backend's own choice was there
            margin = cpu.evaluate(MARGIN, [prompt + reference[:first]])
    stats = [m["stats"] for m in measured]
    return {
        "model": manifest["model_id"],
        "adapter": adapter,
        "runtime": runtime,
        "tokens_equal": first is None,
        "first_difference": first,
        "cpu_top2_margin_there": margin,
        "prefill_tok_s": round(statistics.median(s["prefill_tokens_per_s"] for s in stats), 2),
        "decode_tok_s": round(statistics.median(s["decode_tokens_per_s"] for s in stats), 2),
        **launches(manifest, "gpu"),
        # What a greedy request read back from the GPU a token (the picked token, and a share
        # of the prefill's), as `scripts/bench` measures it.
        "readback_bytes_per_token": round(
            statistics.median(s["readback_per_token"] for s in stats), 1
        ),
        # The most storage buffers one of the gpu set's kernels binds (the adapter must allow
        # as many: maxStorageBuffersPerShaderStage).
        "storage_buffers": manifest["variants"]["gpu"].get("storage_buffers"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=PRESETS)
    parser.add_argument("--runtime", choices=["chromium", "node"], default="chromium")
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens compared")
    parser.add_argument("--runs", type=int, default=2, help="timed runs after a warm-up")
    parser.add_argument("--out-dir", type=Path, default=Path("dist/gpu-check"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    agreed = True
    try:
        probe(args.runtime)
        for model in args.models:
            folder = build(model, "as-stored", args.out_dir / Path(model).stem)
            row = check_model(folder, args.runtime, args.tokens, args.runs)
            agreed &= row["tokens_equal"]
            print(json.dumps(row), flush=True)
    except NoGPU as err:
        print(f"gpu-check: {err}; run it on a machine with a GPU", file=sys.stderr)
        return 2
    elapsed = round(time.monotonic() - started)
    verdict = "agree" if agreed else "DIFFER"
    print(f"gpu-check: greedy tokens on the GPU and the CPU backend {verdict}; {elapsed} s")
    return 0 if agreed else 1


if __name__ == "__main__":
    sys.exit(main())
