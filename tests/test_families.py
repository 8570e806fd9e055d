"""Each architecture family on a tiny random model made with its transformers classes (configs
saved as transformers 5 saves them: rope settings in `rope_parameters`), every distinctive
feature switched on, built q0f32 and run in Chromium: last-position log-probabilities within
1e-4 of transformers, greedy tokens equal; a q4f32 build equal to the numpy reference of its
quantized weights. Rope settings transformers does not apply to a family are refused. Then
GGUF files of the families whose GGUF reading has something of its own, and positions past
2,000."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from as_distributed import assert_config_equal
from compare import (
    assert_backends_close,
    assert_close,
    page_logits_and_greedy,
    transformers_logits_and_greedy,
)
from gguf import GGMLQuantizationType as Q
from reference import ReferenceModel
from tiny_gguf import write_gguf
from tiny_model import make_llama
from transformers import AutoModelForCausalLM

from compiler.build import build
from compiler.cli import main
from compiler.loader import load
from compiler.models.decoder.rope import default_frequencies

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
    # YaRN: some frequencies kept, some divided by the factor, a ramp between; cos and sin
    # scaled by its attention factor.
    "llama-yarn": (
        "llama",
        {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
    ),
    "qwen2": ("qwen2", {}),
    "qwen2-linear-rope": (
        "qwen2",
        {"rope_parameters": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2.0}},
    ),
    "qwen2-tied": ("qwen2", {"tie": True, "use_sliding_window": False, "sliding_window": 4}),
    "qwen3": ("qwen3", {}),
    # A local layer (window shorter than the prompt, its own rope base) then a global one
    # with linear rope scaling (as Gemma 3 4B has); scores scaled by query_pre_attn_scalar
    # (not head_dim).
    "gemma3": (
        "gemma3",
        {
            "tie": True,
            "sliding_window": 6,
            "layer_types": ["sliding_attention", "full_attention"],
            "query_pre_attn_scalar": 24,
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
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
    # sin) on 3/4 of each head as Phi-4-mini has it, and a sliding window shorter than the
    # prompt. Written with the older `rope_scaling` and a top-level partial_rotary_factor,
    # which transformers 5 moves into `rope_parameters`.
    "phi3-longrope": (
        "phi3",
        {
            "sliding_window": 7,
            "pad_token_id": 0,
            "max_position_embeddings": 256,
            "original_max_position_embeddings": 64,
            "partial_rotary_factor": 0.75,
            "rope_scaling": {
                "rope_type": "longrope",
                "short_factor": [1.0, 1.3, 1.9, 2.5, 3.2, 4.0],
                "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
            },
        },
    ),
    # Phi-4-mini's shape: a quarter of each head passes unrotated.
    "phi3-partial-rotary": (
        "phi3",
        {
            "pad_token_id": 0,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.75,
            },
        },
    ),
    # A window shorter than the prompt: positions before it must not be attended to. Dynamic
    # NTK scaling changes nothing within max_position_embeddings.
    "mistral-sliding-window": (
        "mistral",
        {
            "sliding_window": 6,
            "rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
        },
    ),
}
# Cases that differ from another only in their rope: the quantized build adds nothing.
ROPE_ONLY = {"llama-yarn", "qwen2-linear-rope", "phi3-partial-rotary"}


@pytest.mark.parametrize("case", list(CASES))
def test_family_matches_transformers(case, tmp_path, engine_page):
    architecture, settings = CASES[case]
    hf = make_llama(tmp_path / "hf", seed=7, architecture=architecture, **settings)
    folder = build(str(hf), "q0f32", tmp_path / "q0f32", context_window=64, prefill_chunk=8)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["architecture"] == FAMILY.get(architecture, architecture)

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    expected = transformers_logits_and_greedy(model, PROMPT, STEPS)
    assert_backends_close(engine_page, folder, PROMPT, expected, STEPS, exact=True)
    if case in ROPE_ONLY:
        return

    quantized = build(str(hf), "q4f32", tmp_path / "q4f32", context_window=64, prefill_chunk=8)
    reference = ReferenceModel(quantized)
    expected = reference.forward(PROMPT), reference.greedy(PROMPT, STEPS)
    assert_backends_close(engine_page, quantized, PROMPT, expected, STEPS)


@pytest.mark.parametrize(
    ("case", "hidden_size"),
    [("gemma3", 96), ("gemma3", 128), ("qwen2", 64)],
    ids=["gemma3", "gemma3-in-projections", "qwen2"],
)
def test_layers_on_the_gpu_kernel_set(case, hidden_size, tmp_path, engine_page):
    """Layers on the "gpu" kernel set (forced; the adapter here picks the software one),
    against transformers. Gemma's sandwich layers, whose kernel of an add and the next norm
    shares each token row among a workgroup's invocations (models/add_norm.py), at a hidden
    size (96) that is not a multiple of the 64 invocations, and at one that is (128), where
    decode's projections compute the add and the norm as they read them (`AddNormed`) and no
    add_norm kernel is left but the last; Qwen2's, whose decode q/k/v projection norms its
    input and adds its bias in one kernel (webgpu_gpu/rules.py `Gemv`)."""
    architecture, settings = CASES[case]
    settings = {**settings, "hidden_size": hidden_size}
    hf = make_llama(tmp_path / "hf", seed=7, architecture=architecture, **settings)
    folder = build(str(hf), "q0f32", tmp_path / "q0f32", context_window=64, prefill_chunk=8)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    expected = transformers_logits_and_greedy(model, PROMPT, STEPS)
    if hidden_size == 128:
        manifest = json.loads((folder / "manifest.json").read_text())
        steps = manifest["variants"]["gpu"]["functions"]["decode"]["launches"]
        kernels = [launch["kernel"] for launch in steps]
        assert sum("add_norm" in k for k in kernels) == 1, kernels
    with engine_page(folder, variant="gpu", backend="webgpu") as page:
        assert page.evaluate("async () => (await engine.runtimeStats()).variant") == "gpu"
        assert_close(page_logits_and_greedy(page, PROMPT, STEPS), expected, "gpu", exact=True)


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


PARTIAL = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}


@pytest.mark.parametrize(
    "architecture, settings",
    [
        ("llama", {"rope_parameters": PARTIAL}),
        ("mistral", {"rope_parameters": PARTIAL}),
        ("qwen2", {"rope_parameters": PARTIAL}),
        ("qwen3", {"rope_parameters": PARTIAL}),
        ("gemma2", {"rope_parameters": PARTIAL}),
        (
            "gemma3",
            {
                "layer_types": ["sliding_attention", "full_attention"],
                "rope_parameters": {"sliding_attention": PARTIAL, "full_attention": PARTIAL},
            },
        ),
    ],
)
def test_partial_rotary_is_refused_where_transformers_rotates_whole_heads(
    architecture, settings, tmp_path, capsys
):
    """Only Phi-3's transformers code rotates a part of each head; the others ignore the
    setting (or fail), so a config that has it says something the model does not do."""
    hf = make_llama(tmp_path / "hf", architecture=architecture, **settings)
    assert "partial_rotary_factor" in (hf / "config.json").read_text()
    out = tmp_path / "out"
    assert main([str(hf), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "partial_rotary_factor=0.5 is not implemented" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "rope, message",
    [
        ({"rope_type": "proportional", "rope_theta": 10000.0, "factor": 2.0}, "proportional"),
        ({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0}, "malformed"),
    ],
)
def test_rope_types_not_built_are_refused(rope, message, tmp_path, capsys):
    hf = make_llama(tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "rope_parameters": rope}))
    out = tmp_path / "out"
    assert main([str(hf), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "rope_parameters" in err and message in err and "Traceback" not in err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# GGUF files of the families, written as llama.cpp's converter writes them


def assert_gguf_matches_folder(hf, path, tmp_path, engine_page) -> None:
    """The as-stored build of GGUF file `path`, written from the Hugging Face folder `hf` with
    float32 tensors, against transformers on that folder."""
    folder = build(str(path), None, tmp_path / "out", context_window=64, prefill_chunk=8)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    expected = transformers_logits_and_greedy(model, PROMPT, STEPS)
    assert_backends_close(engine_page, folder, PROMPT, expected, STEPS, exact=True)


def test_llama3_rope_freqs_gguf_matches_transformers(tmp_path, engine_page):
    """Llama 3.1's scaling in a GGUF file is a rope_freqs tensor (one divisor per rotated pair),
    which transformers' GGUF reader ignores: the file is checked against transformers on the
    Hugging Face folder it was written from, whose config has the scaling."""
    _, settings = CASES["llama3-rope-scaling"]
    hf = make_llama(tmp_path / "hf", seed=7, **settings)
    path = write_gguf(hf, tmp_path / "tiny-llama3.gguf", Q.F32)
    rope = load(str(path)).config.rope
    assert rope.inverse_frequencies != tuple(default_frequencies(rope.theta, rope.rotary_dim))
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
    """Phi-3's file keeps q/k/v and gate/up fused and carries LongRoPE's factors as tensors,
    the window and the rotated part of a head in its metadata, none of which transformers'
    GGUF reader reads: checked against transformers on the Hugging Face folder it was written
    from."""
    _, settings = CASES["phi3-longrope"]
    hf = make_llama(tmp_path / "hf", seed=7, architecture="phi3", **settings)
    path = write_gguf(hf, tmp_path / "tiny-phi3.gguf", Q.F32)
    config = load(str(path)).config
    assert config.rope.max_context == 64 and config.rope.attention > 1
    assert config.rope.rotary_dim == 12 and config.sliding_window == 7
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


def test_positions_past_2000_match_transformers(tmp_path, engine_page):
    """Position x frequency reaches thousands of radians in long contexts, where a GPU's own
    sin and cos are least exact: a prompt of 2,100 tokens and greedy steps past it. The
    reference runs in float64: at this length transformers' own float32 run is 6.6e-5 off its
    float64 one, most of the bound, where ours is 2.6e-5 (CPU) and 3.6e-5 (WebGPU) off."""
    hf = make_llama(tmp_path / "hf", seed=7, max_position_embeddings=4096)
    folder = build(str(hf), "q0f32", tmp_path / "q0f32", context_window=2176, prefill_chunk=128)
    prompt = np.random.default_rng(0).integers(3, 300, 2100).tolist()
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float64).eval()
    expected = transformers_logits_and_greedy(model, prompt, 8)
    assert_backends_close(engine_page, folder, prompt, expected, 8, exact=True)
