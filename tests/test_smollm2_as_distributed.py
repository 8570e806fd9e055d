"""SmolLM2-135M-Instruct as distributed: the default (as-stored) build in Chromium against
Hugging Face transformers running the same GGUF file in float32 (see as_distributed.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from as_distributed import assert_config_equal, assert_greedy_equal
from transformers import AutoModelForCausalLM

from compiler.loader import load, preset_gguf

TOKENS = 24
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain in one sentence what a GPU does.",
    "List three fruits that are red.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish.",
]


@pytest.fixture(scope="module")
def gguf_file() -> Path:
    return preset_gguf("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def transformers_model(gguf_file):
    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    return model.eval()


def test_config_fields_equal_transformers(gguf_file, transformers_model):
    assert_config_equal(load(str(gguf_file)).config, transformers_model.config)


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
def test_greedy_replies_equal_transformers(smollm2, transformers_model, engine_page, backend):
    with engine_page(smollm2, backend=backend) as page:
        manifest = page.evaluate("engine.manifest")
        assert manifest["quantization"] == "as-stored"
        assert {p["format"] for p in manifest["params"]} == {"q4_1", "q8_0", "f32"}
        assert_greedy_equal(page, transformers_model, PROMPTS, TOKENS)
