"""Without WebGPU the runtime runs on the CPU backend (WebAssembly), and says clearly that
WebGPU is missing when the caller asks for it."""

import numpy as np
import pytest
from reference import ReferenceModel

from compiler.browser import CHROMIUM, CHROMIUM_ARGS, serve_folder

PROMPT = [5, 17, 42, 100, 7, 8, 9, 10, 11]


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
                return {backend: engine.backend, tokens: run.tokens,
                        logits: Array.from(await engine.forwardLogits(ids)),
                        stats: await engine.runtimeStatsText()};
            }""",
            [url, PROMPT],
        )
    assert result["backend"] == "wasm"
    assert "backend: wasm" in result["stats"]
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
