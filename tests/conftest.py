"""Shared fixtures: tiny models built once per session, a real Chromium with WebGPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import make_llama

from compiler.build import build
from tools.browser import CHROMIUM, CHROMIUM_ARGS, engine_page_for


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory, tiny_hf):
    """build-web output for the tiny model, by quantization (prefill chunks of 8 tokens, so
    that the test prompts take several chunks)."""
    out = tmp_path_factory.mktemp("built")
    cache: dict[str, Path] = {}

    def get(quantization: str) -> Path:
        if quantization not in cache:
            cache[quantization] = build(
                str(tiny_hf), quantization, out / quantization, context_window=128, prefill_chunk=8
            )
        return cache[quantization]

    return get


@pytest.fixture(scope="session")
def smollm2_q4(tmp_path_factory) -> Path:
    return build("smollm2-135m-instruct", "q4f32", tmp_path_factory.mktemp("smol") / "q4f32")


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """The default build of the default model: its GGUF tensors kept as stored."""
    return build("smollm2-135m-instruct", None, tmp_path_factory.mktemp("smol") / "as-stored")


@pytest.fixture(scope="session")
def qwen(tmp_path_factory) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct as stored, with room for a prompt listing ten tools."""
    return build(
        "qwen2.5-coder-0.5b-instruct",
        None,
        tmp_path_factory.mktemp("qwen") / "as-stored",
        context_window=2048,
    )


@pytest.fixture
def engine_page(browser):
    """Opens a page with `window.engine` loaded from a built folder."""
    return lambda folder, variant=None, backend=None, options=None: engine_page_for(
        browser, folder, variant, backend, options
    )
