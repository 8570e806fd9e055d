"""Every GGUF tensor type the build keeps as stored, on tiny random llama models written as
GGUF files: built with the default (as-stored) scheme and run in Chromium, against Hugging
Face transformers loading the same file in float32 (its own reader, `gguf`'s dequantization).
A type the build cannot keep is refused with one line."""

from __future__ import annotations

import json

import pytest
import torch
from compare import assert_backends_close, transformers_logits_and_greedy
from gguf import GGMLQuantizationType as Q
from tiny_gguf import K_QUANT_SIZES, write_gguf
from tiny_model import make_llama
from transformers import AutoModelForCausalLM

from compiler.build import build
from compiler.cli import main

STEPS = 16
PROMPT = "The quick brown fox jumps."
# Mixed: v of another type than q and k (q and k one projection, v another), tied Q8_0
# embeddings as the output head, head_dim != hidden / heads.
MIXED = {
    "*": Q.Q4_1,
    "v_proj.weight": Q.Q8_0,
    "down_proj.weight": Q.Q5_0,
    "embed_tokens.weight": Q.Q8_0,
}
# As Q4_K_M files mix them: mostly Q4_K, Q6_K for the values and the MLP output, Q8_0 for
# the tied embeddings.
MIXED_K = {
    "*": Q.Q4_K,
    "v_proj.weight": Q.Q6_K,
    "down_proj.weight": Q.Q6_K,
    "embed_tokens.weight": Q.Q8_0,
}
BLOCKS_OF_32 = (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1)
K_QUANTS = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
CASES = {
    **{t.name: (t, {}) for t in BLOCKS_OF_32},
    **{t.name: (t, K_QUANT_SIZES) for t in K_QUANTS},
    "mixed": (MIXED, {"tie": True, "head_dim": 32}),
    "mixed-k": (MIXED_K, {**K_QUANT_SIZES, "tie": True}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_as_stored_build_matches_transformers(case, tmp_path, engine_page):
    tensor_type, sizes = CASES[case]
    hf = make_llama(tmp_path / "hf", seed=3, **sizes)
    path = write_gguf(hf, tmp_path / f"tiny-{case.lower()}.gguf", tensor_type)
    folder = build(str(path), None, tmp_path / "built", context_window=64, prefill_chunk=8)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["quantization"] == "as-stored"
    # The stored weights are the file's tensors regrouped, not converted: about the same bytes.
    weights = [p for p in manifest["params"] if not p["name"].startswith("rope_table")]
    stored = sum(p["bytes"] for p in weights)
    assert manifest["source_tensor_bytes"] <= stored <= 1.02 * manifest["source_tensor_bytes"]

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    with engine_page(folder) as page:
        prompt = page.evaluate("(t) => engine.tokenizer.encode(t)", PROMPT)
    expected = transformers_logits_and_greedy(model, prompt, STEPS)
    # Quantized weights: the CPU backend's decode rounds its inputs to int16 per group of 32
    # (then integer dot products), so these compare by logits, not exactly.
    assert_backends_close(engine_page, folder, prompt, expected, STEPS)


def test_types_not_kept_are_refused_with_one_line(tmp_path, capsys):
    hf = make_llama(tmp_path / "hf", **K_QUANT_SIZES)
    path = write_gguf(hf, tmp_path / "tiny-tq2.gguf", Q.TQ2_0)
    out = tmp_path / "out"
    assert main([str(path), "--output", str(out)]) == 1
    printed = capsys.readouterr().err
    err = [line for line in printed.splitlines() if "error" in line]
    assert len(err) == 1 and "TQ2_0" in err[0] and "--quantization q4f32" in err[0], err
    assert "Traceback" not in printed
    assert not out.exists()
