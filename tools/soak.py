"""Soak: many sequential requests on one engine in headless Chromium, then one JSON line of
figures: the live GPU buffers (or, on the CPU backend, the WebAssembly memory), the JS heap
(after a forced garbage collection) and, from a heap snapshot, the bytes of everything in it
but V8's compiled code, after the 10th request, half-way and after the last one; and whether
every reply equals a fresh engine's reply.

    scripts/soak MODEL [--requests 1000] [--quantization q4f32] [--backend webgpu|wasm]

Requests cycle through chat (streamed and not), text completions and streams aborted after
their first chunk, with several prompts and lengths, all greedy: a reply that differs from the
same request's first reply, or from a fresh engine's, is a leak of state between requests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compiler.build import build

from .browser import CHROMIUM, CHROMIUM_ARGS, open_engine_page, serve_folder

# Counts the GPU buffers created and not yet destroyed, page-wide.
COUNT_BUFFERS = """(() => {
    const live = new Set();
    const create = GPUDevice.prototype.createBuffer;
    GPUDevice.prototype.createBuffer = function (...args) {
        const buffer = create.apply(this, args);
        live.add(buffer);
        const destroy = buffer.destroy.bind(buffer);
        buffer.destroy = () => { live.delete(buffer); destroy(); };
        return buffer;
    };
    Object.defineProperty(window, "__liveBuffers", {get: () => live.size});
})();"""

PROMPTS = ["Hello!", "Name three colors.", "Write a long story about a heron by a lake."]
LENGTHS = [1, 6, 16]
KINDS = ["chat", "chat-stream", "text", "chat-aborted"]

# One request in the page; returns what must be equal across repeats.
RUN = """async ([kind, prompt, maxTokens]) => {
    const messages = [{role: "user", content: prompt}];
    const common = {max_tokens: maxTokens, temperature: 0};
    if (kind === "chat") {
        const r = await engine.chat.completions.create({...common, messages});
        return r.choices[0].message.content;
    }
    if (kind === "text") {
        const r = await engine.completions.create({...common, prompt});
        return r.choices[0].text;
    }
    const controller = new AbortController();
    const stream = await engine.chat.completions.create(
        {...common, messages, stream: true, signal: controller.signal});
    let text = "";
    try {
        for await (const chunk of stream) {
            text += chunk.choices[0]?.delta?.content ?? "";
            if (kind === "chat-aborted") controller.abort();
        }
    } catch (e) {
        if (e.name !== "AbortError") throw e;
    }
    return kind === "chat-aborted" ? null : text;
}"""


def request(i: int) -> tuple[str, str, int]:
    return KINDS[i % len(KINDS)], PROMPTS[i // 4 % len(PROMPTS)], LENGTHS[i // 12 % len(LENGTHS)]


def object_bytes(cdp) -> int:
    """Bytes of everything a heap snapshot holds but V8's compiled code: the objects, strings,
    arrays and DOM the page keeps. (Code grows for a while as V8 optimizes the functions a
    request runs hot, to a ceiling set by the program's size; data that grows is a leak.)"""
    chunks: list[str] = []

    def add(event: dict) -> None:
        chunks.append(event["chunk"])

    cdp.on("HeapProfiler.addHeapSnapshotChunk", add)
    cdp.send("HeapProfiler.takeHeapSnapshot", {"reportProgress": False})
    cdp.remove_listener("HeapProfiler.addHeapSnapshotChunk", add)
    snapshot = json.loads("".join(chunks))
    meta = snapshot["snapshot"]["meta"]
    fields = meta["node_fields"]
    code = meta["node_types"][0].index("code")
    kind, size, width = fields.index("type"), fields.index("self_size"), len(fields)
    nodes = snapshot["nodes"]
    return sum(nodes[i + size] for i in range(0, len(nodes), width) if nodes[i + kind] != code)


def memory(page, cdp) -> dict:
    cdp.send("HeapProfiler.collectGarbage")
    heap = cdp.send("Runtime.getHeapUsage")["usedSize"]
    stats = page.evaluate("async () => await engine.runtimeStats()")
    wasm = stats["wasm_memory_bytes"]
    # The prefix cache's KV snapshots (a GPU buffer each on WebGPU, JS memory on the CPU
    # backend) come and go within its budget: reported apart, and left out of the counts below.
    prefixes = stats["prefix_cache"] or {"entries": 0, "bytes": 0}
    on_gpu = stats["backend"] == "webgpu"
    return {
        "gpu_buffers": page.evaluate("window.__liveBuffers")
        - (prefixes["entries"] if on_gpu else 0),
        "wasm_memory_bytes": wasm,
        "prefix_cache": prefixes,
        "heap_bytes": heap - (0 if on_gpu else prefixes["bytes"]),
        # the CPU backend's memory is in the snapshot too: reported apart, above
        "heap_object_bytes": object_bytes(cdp) - wasm - (0 if on_gpu else prefixes["bytes"]),
    }


def soak_folder(browser, folder: Path, requests: int, backend: str = "webgpu") -> dict:
    with serve_folder(folder) as url:
        context = browser.new_context()
        context.add_init_script(COUNT_BUFFERS)
        page = open_engine_page(context, url, backend=backend)
        cdp = context.new_cdp_session(page)
        first: dict[tuple, str | None] = {}
        differing = 0
        marks = {9: "after_10", requests // 2 - 1: "after_half"}
        figures = {}
        for i in range(requests):
            key = request(i)
            reply = page.evaluate(RUN, list(key))
            differing += first.setdefault(key, reply) != reply
            if i in marks:
                figures[marks[i]] = memory(page, cdp)
        after_last = memory(page, cdp)
        context.close()
        # A fresh engine, each distinct request once.
        fresh_page = open_engine_page(browser, url, backend=backend)
        fresh = sum(fresh_page.evaluate(RUN, list(key)) != reply for key, reply in first.items())
        fresh_page.close()
    return {
        "model": folder.name,
        "backend": backend,
        "requests": requests,
        **figures,
        "after_last": after_last,
        "replies_differing_from_the_first": int(differing),
        "replies_differing_from_a_fresh_engine": int(fresh),
    }


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a preset, a model folder or file, or a built folder")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--backend", choices=["webgpu", "wasm"], default="webgpu")
    parser.add_argument("--out-dir", type=Path, default=Path("dist/soak"))
    args = parser.parse_args(argv)
    folder = Path(args.model)
    if not (folder / "manifest.json").is_file():
        folder = build(args.model, args.quantization, args.out_dir / Path(args.model).name)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        print(json.dumps(soak_folder(browser, folder, args.requests, args.backend)), flush=True)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
