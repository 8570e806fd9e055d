"""Which backend runs a model: WebGPU on a real GPU, the CPU backend (WebAssembly) where the
browser has no WebGPU or only a fallback adapter; a clear error when WebGPU is asked for and
missing, or when the WebAssembly kernels are not the ones the manifest names."""

import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
from reference import ReferenceModel

from tools.browser import CHROMIUM, CHROMIUM_ARGS, serve_folder

PROMPT = [5, 17, 42, 100, 7, 8, 9, 10, 11]
BACKEND = "async () => (await engine.runtimeStats()).backend"


@pytest.fixture
def no_webgpu_page(playwright):
    args = [a for a in CHROMIUM_ARGS if a != "--enable-unsafe-webgpu"] + ["--disable-webgpu"]
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    try:
        yield browser.new_page()
    finally:
        browser.close()


def test_engine_runs_on_the_cpu_without_webgpu(no_webgpu_page, tiny_built):
    folder = tiny_built("q4f32")
    reference = ReferenceModel(folder)
    page = no_webgpu_page
    with serve_folder(folder) as url:
        page.goto(f"{url}/manifest.json")
        result = page.evaluate(
            """async ([url, ids]) => {
                const kiln = await import(url + "/kiln.js");
                const engine = await kiln.CreateEngine(url);
                const greedy = {temperature: 0, max_tokens: 8, ignore_eos: true};
                const run = await engine.generate(ids, greedy);
                return {backend: (await engine.runtimeStats()).backend, tokens: run.tokens,
                        logits: Array.from(await engine.forwardLogits(ids)),
                        stats: await engine.runtimeStatsText()};
            }""",
            [url, PROMPT],
        )
    assert result["backend"] == "wasm"
    assert "backend: wasm (CPU, " in result["stats"]
    expected = reference.forward(PROMPT)
    error = np.linalg.norm(np.array(result["logits"]) - expected) / np.linalg.norm(expected)
    assert error < 1e-3
    assert result["tokens"] == reference.greedy(PROMPT, 8)


def test_webgpu_asked_for_is_reported_missing(no_webgpu_page, tiny_built):
    page = no_webgpu_page
    with serve_folder(tiny_built("q0f32")) as url:
        page.goto(f"{url}/manifest.json")
        error = page.evaluate(
            """async (url) => {
                const kiln = await import(url + "/kiln.js");
                try { await kiln.CreateEngine(url, {backend: "webgpu"}); return null; }
                catch (e) { return {name: e.name, message: e.message}; }
            }""",
            url,
        )
    assert error["name"] == "WebGPUUnavailableError"
    assert "WebGPU is not available" in error["message"]


def test_a_browser_without_the_kernels_wasm_features(no_webgpu_page, tiny_built):
    """The manifest lists the WebAssembly features the CPU kernels use; a browser without them
    (simulated: WebAssembly.validate refuses the small probe modules of wasm-feature-detect)
    gets an error naming them when it asks for the CPU backend, and auto does not pick it."""
    folder = tiny_built("q0f32")
    features = json.loads((folder / "manifest.json").read_text())["variants"]["wasm"]["wasm"]
    assert "relaxed-simd" in features["features"]
    page = no_webgpu_page
    page.add_init_script(
        """const validate = WebAssembly.validate;
           WebAssembly.validate = (bytes) => bytes.byteLength > 256 && validate(bytes);"""
    )
    with serve_folder(folder) as url:
        page.goto(f"{url}/manifest.json")
        errors = page.evaluate(
            """async (url) => {
                const kiln = await import(url + "/kiln.js");
                const errors = [];
                for (const backend of ["wasm", "auto"]) {
                    try { await kiln.CreateEngine(url, {backend}); errors.push(null); }
                    catch (e) { errors.push({name: e.name, message: e.message}); }
                }
                return errors;
            }""",
            url,
        )
    assert errors[0]["name"] == "ModelLoadError"
    assert "relaxed-simd" in errors[0]["message"] and "lacks" in errors[0]["message"]
    assert errors[1]["name"] == "WebGPUUnavailableError"  # auto: neither backend here


def test_auto_takes_the_cpu_on_a_fallback_adapter(tiny_built, engine_page):
    folder = tiny_built("q4f32")
    with engine_page(folder) as page:
        fallback = page.evaluate(
            "async () => (await navigator.gpu.requestAdapter()).info.isFallbackAdapter"
        )
        assert page.evaluate(BACKEND) == ("wasm" if fallback else "webgpu")
    with engine_page(folder, variant="software") as page:  # WebGPU kernels asked for
        assert page.evaluate(BACKEND) == "webgpu"


def test_a_corrupt_wasm_file_is_a_shard_integrity_error(tiny_built, browser, tmp_path):
    folder = shutil.copytree(tiny_built("q4f32"), tmp_path / "model")
    wasm = json.loads((folder / "manifest.json").read_text())["variants"]["wasm"]["wasm"]
    data = bytearray((folder / wasm["file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / wasm["file"]).write_bytes(bytes(data))
    page = browser.new_page()
    with serve_folder(folder) as url:
        page.goto(f"{url}/manifest.json")
        error = page.evaluate(
            """async (url) => {
                const kiln = await import(url + "/kiln.js");
                try { await kiln.CreateEngine(url, {backend: "wasm"}); return null; }
                catch (e) { return {name: e.name, message: e.message}; }
            }""",
            url,
        )
    page.close()
    assert error["name"] == "ShardIntegrityError", error
    assert f"The kernel module {wasm['file']} is corrupt" in error["message"]


def test_the_cpu_backend_runs_a_thread_per_core(tiny_built, engine_page):
    """The server isolates its pages, so the CPU backend starts worker threads that share
    its memory; the replies are the single-threaded ones (the numerical tests' reference)."""
    folder = tiny_built("q4f32")
    reference = ReferenceModel(folder)
    with engine_page(folder, backend="wasm") as page:
        cores, isolated, threads = page.evaluate(
            "async () => [navigator.hardwareConcurrency, crossOriginIsolated, "
            "(await engine.runtimeStats()).threads]"
        )
        assert isolated and threads == min(cores, 16)
        tokens = page.evaluate(
            """async (ids) => (await engine.generate(
                ids, {temperature: 0, max_tokens: 12, ignore_eos: true})).tokens""",
            PROMPT,
        )
        assert tokens == reference.greedy(PROMPT, 12)
        page.evaluate("engine.chat.completions.create({messages: [{role: 'user', content: 'Hi'}]})")
        stats = page.evaluate("engine.runtimeStatsText()")
        assert stats.endswith(
            f"backend: wasm (CPU, {threads} threads)" if threads > 1 else "1 thread)"
        )
        # `threads` caps them; a count that is not a whole number of threads is refused.
        result = page.evaluate(
            """async (ids) => {
                const url = location.href.replace(/manifest\\.json$/, "");
                await engine.reload(url, {backend: "wasm", threads: 1});
                const greedy = {temperature: 0, max_tokens: 12, ignore_eos: true};
                const run = await engine.generate(ids, greedy);
                const refused = [];
                for (const threads of [0, 1.5, "2"]) {
                    try { await engine.reload(url, {threads}); }
                    catch (e) { refused.push([e.name, e.param]); }
                }
                const {threads} = await engine.runtimeStats();
                return {threads, tokens: run.tokens, refused};
            }""",
            PROMPT,
        )
    assert result["threads"] == 1
    assert result["tokens"] == reference.greedy(PROMPT, 12)
    assert result["refused"] == [["InvalidRequestError", "threads"]] * 3


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass


def test_a_page_that_is_not_isolated_runs_one_thread(tiny_built, browser):
    """Served without cross-origin isolation (a plain static server), worker threads cannot
    share the memory: the CPU backend runs on one thread and says why."""
    folder = tiny_built("q4f32")
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    page = browser.new_page()
    try:
        page.goto(f"{url}/manifest.json")
        result = page.evaluate(
            """async ([url, ids]) => {
                const kiln = await import(url + "/kiln.js");
                const engine = await kiln.CreateEngine(url + "/", {backend: "wasm"});
                const run = await engine.generate(
                    ids, {temperature: 0, max_tokens: 8, ignore_eos: true});
                const {threads} = await engine.runtimeStats();
                return {isolated: crossOriginIsolated, threads,
                        tokens: run.tokens, stats: await engine.runtimeStatsText()};
            }""",
            [url, PROMPT],
        )
    finally:
        page.close()
        server.shutdown()
    assert not result["isolated"] and result["threads"] == 1
    assert result["stats"].endswith("1 thread: the page is not cross-origin isolated)")
    assert result["tokens"] == ReferenceModel(folder).greedy(PROMPT, 8)
