"""Each architecture family on a tiny random model made with its transformers classes, every
distinctive feature switched on, built q0f32 and run in Chromium: last-position logits within
1e-3 of transformers, greedy tokens equal; a q4f32 build equal to the numpy reference of its
quantized weights."""

from __future__ import annotations

import json

import pytest
import torch
from compare import assert_close, page_logits_and_greedy, transformers_logits_and_greedy
from reference import ReferenceModel
from tiny_model import make_llama
from transformers import AutoModelForCausalLM

from compiler.build import build
from compiler.cli import main

PROMPT = [5, 17, 42, 100, 7, 8, 9, 10, 11, 12, 13, 60, 61, 62]
STEPS = 16
FAMILY = {"mistral": "llama"}  # transformers architectures our families cover
CASES = {
    "llama-attention-bias": ("llama", {"attention_bias": True}),
    # Llama 3.1's rope scaling, with an original context so short that the tiny model's
    # frequencies fall in all three bands (kept, interpolated, divided by the factor).
    "llama3-rope-scaling": (
        "llama",
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            }
        },
    ),
    "qwen2": ("qwen2", {}),
    "qwen2-tied": ("qwen2", {"tie": True, "use_sliding_window": False, "sliding_window": 4}),
    "qwen3": ("qwen3", {}),
    # A local layer (window shorter than the prompt, its own rope base) then a global one;
    # scores scaled by query_pre_attn_scalar (not head_dim).
    "gemma3": (
        "gemma3",
        {
            "tie": True,
            "sliding_window": 6,
            "layer_types": ["sliding_attention", "full_attention"],
            "query_pre_attn_scalar": 24,
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            },
        },
    ),
    # Fused q/k/v and gate/up checkpoints, LongRoPE (per-dimension factors, scaled cos and
    # sin) and a sliding window shorter than the prompt.
    "phi3-longrope": (
        "phi3",
        {
            "sliding_window": 7,
            "pad_token_id": 0,
            "max_position_embeddings": 256,
            "original_max_position_embeddings": 64,
            "rope_scaling": {
                "rope_type": "longrope",
                "short_factor": [1.0, 1.3, 1.9, 2.5, 3.2, 4.0, 5.1, 6.0],
                "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            },
        },
    ),
    # A window shorter than the prompt: positions before it must not be attended to.
    "mistral-sliding-window": ("mistral", {"sliding_window": 6}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_family_matches_transformers(case, tmp_path, engine_page):
    architecture, settings = CASES[case]
    hf = make_llama(tmp_path / "hf", seed=7, architecture=architecture, **settings)
    folder = build(str(hf), "q0f32", tmp_path / "q0f32", context_window=64, prefill_chunk=8)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["architecture"] == FAMILY.get(architecture, architecture)

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    expected = transformers_logits_and_greedy(model, PROMPT, STEPS)
    with engine_page(folder) as page:
        assert_close(page_logits_and_greedy(page, PROMPT, STEPS), expected)

    quantized = build(str(hf), "q4f32", tmp_path / "q4f32", context_window=64, prefill_chunk=8)
    reference = ReferenceModel(quantized)
    expected = reference.forward(PROMPT), reference.greedy(PROMPT, STEPS)
    with engine_page(quantized) as page:
        assert_close(page_logits_and_greedy(page, PROMPT, STEPS), expected)


def test_qwen2_sliding_window_layers_are_refused(tmp_path, capsys):
    hf = make_llama(tmp_path / "hf", architecture="qwen2", use_sliding_window=True)
    out = tmp_path / "out"
    assert main([str(hf), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "use_sliding_window=True is not implemented" in err and "Traceback" not in err
    assert not out.exists()


def test_longrope_past_its_original_context_is_refused(tmp_path, capsys):
    _, settings = CASES["phi3-longrope"]
    hf = make_llama(tmp_path / "hf", architecture="phi3", **settings)
    out = tmp_path / "out"
    assert main([str(hf), "--output", str(out), "--context-window", "128"]) == 1
    err = capsys.readouterr().err
    assert "--context-window 64 or less" in err and "Traceback" not in err
    assert not out.exists()
