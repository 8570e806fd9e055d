"""Qwen2.5-Coder-0.5B-Instruct as distributed (a Q4_K_M GGUF mixing Q5_0, Q8_0, Q4_K and Q6_K
tensors, fetched from its PyPI wheels by the preset): the as-stored build in Chromium against
transformers running the same file in float32 (see as_distributed.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from as_distributed import assert_config_equal, assert_greedy_equal, transformers_from_preset

from compiler.loader import load

PRESET = "qwen2.5-coder-0.5b-instruct"
TOKENS = 24
PROMPTS = [
    "Write a Python function that reverses a string.",
    "What does the HTTP status code 404 mean?",
    "Explain what a JavaScript promise is in one sentence.",
    "How do I list the files of a folder in bash?",
]


@pytest.fixture(scope="module")
def source():
    return load(PRESET)


@pytest.fixture(scope="module")
def built(qwen) -> Path:
    return qwen


@pytest.fixture(scope="module")
def transformers_model():
    return transformers_from_preset(PRESET)


def test_config_fields_equal_transformers(source, transformers_model):
    assert source.family.name == "qwen2"
    assert_config_equal(source.config, transformers_model.config)


def test_greedy_replies_and_streaming(built, transformers_model, engine_page):
    with engine_page(built) as page:
        manifest = page.evaluate("engine.manifest")
        assert manifest["quantization"] == "as-stored"
        formats = {p["format"] for p in manifest["params"]}
        assert {"q4_k", "q6_k", "q5_0", "q8_0"} <= formats, formats
        assert_greedy_equal(page, transformers_model, PROMPTS, TOKENS)
        streamed = page.evaluate(
            """async () => {
                const request = {messages: [{role: "user", content: "Say hello."}],
                                 max_tokens: 8, temperature: 0};
                let text = "";
                for await (const chunk of await engine.chat.completions.create(
                    {...request, stream: true})) {
                    text += chunk.choices[0]?.delta?.content ?? "";
                }
                const whole = await engine.chat.completions.create(request);
                return [text, whole.choices[0].message.content];
            }"""
        )
    assert streamed[0] and streamed[0] == streamed[1], streamed
