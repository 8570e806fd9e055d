"""The numpy reference itself agrees with Hugging Face transformers (no browser)."""

import numpy as np
import torch
from reference import ReferenceModel
from transformers import LlamaForCausalLM

PROMPT = [5, 17, 42, 100, 7, 8, 9, 10, 11, 12, 13]


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def test_reference_matches_transformers(tiny_hf, tiny_built):
    hf = LlamaForCausalLM.from_pretrained(tiny_hf).eval()
    with torch.no_grad():
        expected = hf(torch.tensor([PROMPT])).logits[0, -1].numpy()
    ref = ReferenceModel(tiny_built("q0f32"))
    assert rel_err(ref.forward(PROMPT), expected) < 1e-5
    # Incremental decoding through the reference's KV cache matches a full forward pass.
    ref.reset()
    ref.forward(PROMPT[:6])
    for token in PROMPT[6:-1]:
        ref.forward([token])
    assert rel_err(ref.forward(PROMPT[-1:]), expected) < 1e-5
