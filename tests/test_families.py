"""Each architecture family on a tiny random model made with its transformers classes, every
distinctive feature switched on, built q0f32 and run in Chromium: last-position logits within
1e-3 of transformers, greedy tokens equal; a q4f32 build equal to the numpy reference of its
quantized weights. Then GGUF files of the families whose GGUF reading has something of its
own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from as_distributed import assert_config_equal
from compare import assert_backends_close, transformers_logits_and_greedy
from gguf import GGMLQuantizationType as Q
from reference import ReferenceModel
from tiny_gguf import write_gguf
from tiny_model import make_llama
from transformers import AutoModelForCausalLM

from compiler.build import build
from compiler.cli import main
from compiler.loader import load

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
    # Local and global layers alternating (the local window shorter than the prompt), soft
    # caps low enough to bend the tiny model's scores and logits.
    "gemma2-softcapping": (
        "gemma2",
        {
            "tie": True,
            "num_hidden_layers": 3,
            "sliding_window": 5,
            "query_pre_attn_scalar": 24,
            "attn_logit_softcapping": 2.0,
            "final_logit_softcapping": 10.0,
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
    assert_backends_close(engine_page, folder, PROMPT, expected, STEPS)

    quantized = build(str(hf), "q4f32", tmp_path / "q4f32", context_window=64, prefill_chunk=8)
    reference = ReferenceModel(quantized)
    expected = reference.forward(PROMPT), reference.greedy(PROMPT, STEPS)
    assert_backends_close(engine_page, quantized, PROMPT, expected, STEPS)


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


# ---------------------------------------------------------------------------------------------
# GGUF files of the families, written as llama.cpp's converter writes them


def assert_gguf_matches_folder(hf, path, tmp_path, engine_page) -> None:
    """The as-stored build of GGUF file `path`, written from the Hugging Face folder `hf` with
    float32 tensors, against transformers on that folder."""
    folder = build(str(path), None, tmp_path / "out", context_window=64, prefill_chunk=8)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    expected = transformers_logits_and_greedy(model, PROMPT, STEPS)
    assert_backends_close(engine_page, folder, PROMPT, expected, STEPS)


def test_llama3_rope_freqs_gguf_matches_transformers(tmp_path, engine_page):
    """Llama 3.1's scaling in a GGUF file is a rope_freqs tensor (one divisor per rotated pair),
    which transformers' GGUF reader ignores: the file is checked against transformers on the
    Hugging Face folder it was written from, whose config has the scaling."""
    _, settings = CASES["llama3-rope-scaling"]
    hf = make_llama(tmp_path / "hf", seed=7, **settings)
    path = write_gguf(hf, tmp_path / "tiny-llama3.gguf", Q.F32)
    assert load(str(path)).config.rope_freq_factors is not None
    # The scaling matters here: without it the logits are others.
    plain = make_llama(tmp_path / "plain", seed=7)
    unscaled = AutoModelForCausalLM.from_pretrained(plain, dtype=torch.float32).eval()
    scaled = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    assert not np.allclose(
        transformers_logits_and_greedy(unscaled, PROMPT, 1)[0],
        transformers_logits_and_greedy(scaled, PROMPT, 1)[0],
    )
    assert_gguf_matches_folder(hf, path, tmp_path, engine_page)


def test_phi3_gguf_matches_transformers(tmp_path, engine_page):
    """Phi-3's file keeps q/k/v and gate/up fused and carries LongRoPE's factors as tensors and
    the window in its metadata, none of which transformers' GGUF reader reads: checked against
    transformers on the Hugging Face folder it was written from."""
    _, settings = CASES["phi3-longrope"]
    hf = make_llama(tmp_path / "hf", seed=7, architecture="phi3", **settings)
    path = write_gguf(hf, tmp_path / "tiny-phi3.gguf", Q.F32)
    config = load(str(path)).config
    assert config.rope_longrope and config.sliding_window == 7
    assert_gguf_matches_folder(hf, path, tmp_path, engine_page)


def test_gemma2_gguf_matches_transformers(tmp_path, engine_page):
    """A gemma2 file (norms stored as 1 + w, window and soft caps in the metadata, which layers
    slide left to the reader) built as stored, against transformers reading the same file.
    head_dim is 256 as in every Gemma 2: the file does not carry query_pre_attn_scalar, which
    both readers then take to be 256."""
    hf = make_llama(
        tmp_path / "hf",
        seed=7,
        architecture="gemma2",
        tie=True,
        num_hidden_layers=3,
        head_dim=256,
        sliding_window=5,
        query_pre_attn_scalar=256,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
    )
    path = write_gguf(hf, tmp_path / "tiny-gemma2.gguf", Q.Q8_0)
    folder = build(str(path), None, tmp_path / "out", context_window=64, prefill_chunk=8)
    assert json.loads((folder / "manifest.json").read_text())["architecture"] == "gemma2"
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    ours = load(str(path)).config
    assert_config_equal(ours, model.config)
    assert ours.sliding_layers == tuple(t == "sliding_attention" for t in model.config.layer_types)
    assert (ours.attn_logit_softcapping, ours.final_logit_softcapping) == (
        model.config.attn_logit_softcapping,
        model.config.final_logit_softcapping,
    )
    expected = transformers_logits_and_greedy(model, PROMPT, STEPS)
    assert_backends_close(engine_page, folder, PROMPT, expected, STEPS)
