"""The GGUF loader (blocks kept as stored, llama.cpp's Q/K row order undone) agrees exactly
with Hugging Face transformers' own GGUF loader on the default model."""

import numpy as np
from transformers import AutoModelForCausalLM

from compiler.formats import StoredBlocks
from compiler.loader import load, preset_gguf


def test_smollm2_tensors_match_transformers_gguf_loader():
    gguf = preset_gguf("smollm2-135m-instruct")
    expected = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).state_dict()
    source = load("smollm2-135m-instruct")
    assert source.config.num_hidden_layers == 30 and source.config.tie_word_embeddings
    assert set(source.tensors) == set(expected) - {"lm_head.weight"}
    for name, tensor in source.tensors.items():
        ours = tensor.dequantize() if isinstance(tensor, StoredBlocks) else tensor
        np.testing.assert_array_equal(ours, expected[name].float().numpy(), err_msg=name)
    # The quantized weights stay as the file stores them.
    assert source.tensors["model.layers.0.mlp.down_proj.weight"].type_name == "Q4_1"
    assert source.tensors["model.embed_tokens.weight"].type_name == "Q8_0"
