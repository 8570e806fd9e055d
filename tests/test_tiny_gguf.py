"""tests/tiny_gguf.py writes GGUF files that Hugging Face transformers reads as llama.cpp's
own conversions, for every weight type it supports, and our loader reads them exactly as
transformers does: the files are a sound reference for the GGUF tests that use them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from as_distributed import assert_config_equal
from gguf import GGMLQuantizationType as Q
from tiny_gguf import BLOCKS_OF_256, K_QUANT_SIZES, SUPPORTED_TYPES, TensorTypes, write_gguf
from tiny_model import CORPUS, make_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from compiler.loader import load

# A mixed file shaped like llama.cpp's Q4_K_M: most weights Q4_K, some kept at more bits.
MIXED: dict[str, Q] = {
    "*": Q.Q4_K,
    "embed_tokens.weight": Q.Q6_K,
    "mlp.down_proj.weight": Q.Q6_K,
    "self_attn.v_proj.weight": Q.Q8_0,
    "lm_head.weight": Q.Q6_K,
}
# case name -> (make_llama variant, tensor types)
CASES: dict[str, tuple[str, TensorTypes]] = {
    **{t.name: ("kquant" if t in BLOCKS_OF_256 else "small", t) for t in SUPPORTED_TYPES},
    "mixed": ("kquant", MIXED),
    "tied-F16": ("tied", Q.F16),
}
# How far each type's dequantized weights may be from the safetensors ones: the rounding of
# weights with standard deviation 0.3, far below what misplaced rows (about 1) would give.
ROUNDING = {
    Q.F32: 0.0,
    Q.F16: 1e-3,
    Q.BF16: 1e-2,
    Q.Q8_0: 2e-2,
    Q.Q5_0: 0.1,
    Q.Q5_1: 0.1,
    Q.Q4_0: 0.2,
    Q.Q4_1: 0.2,
}
# The cases whose weights come from the safetensors file (K-quant weights are random).
QUANTIZED_FROM_SAFETENSORS = [
    case for case, (_, types) in CASES.items() if isinstance(types, Q) and types in ROUNDING
]


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-gguf-hf")
    return {
        "small": make_llama(root / "small"),
        "kquant": make_llama(root / "kquant", **K_QUANT_SIZES),
        "tied": make_llama(root / "tied", tie=True),
    }


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory, hf_models) -> Callable[[str], Path]:
    """The GGUF file of a case, written once per module."""
    root = tmp_path_factory.mktemp("tiny-gguf")
    written: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in written:
            variant, types = CASES[case]
            written[case] = write_gguf(hf_models[variant], root / f"tiny-{case}.gguf", types)
        return written[case]

    return get


def transformers_model(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()


def float_array(tensor) -> np.ndarray:
    """Our loader's tensors as float32, whichever container it keeps GGUF blocks in."""
    return np.asarray(tensor.dequantize() if hasattr(tensor, "dequantize") else tensor)


@pytest.mark.parametrize("case", CASES)
def test_config_matches_transformers(gguf_file, case):
    path = gguf_file(case)
    ours = load(str(path)).config
    assert_config_equal(ours, transformers_model(path).config)
    assert ours.tie_word_embeddings == (case == "tied-F16")


@pytest.mark.parametrize("case", CASES)
def test_tensors_match_transformers(gguf_file, case):
    path = gguf_file(case)
    expected = transformers_model(path).state_dict()
    ours = load(str(path)).tensors
    tied = "lm_head.weight" not in ours
    assert set(ours) == set(expected) - ({"lm_head.weight"} if tied else set())
    for name, tensor in ours.items():
        np.testing.assert_allclose(
            float_array(tensor), expected[name].numpy(), rtol=0, atol=0, err_msg=name
        )


@pytest.mark.parametrize("case", QUANTIZED_FROM_SAFETENSORS)
def test_weights_are_the_safetensors_ones(gguf_file, hf_models, case):
    """Independent of both loaders' un-permutation: the Q/K rows land where they belong."""
    variant, qtype = CASES[case]
    source = load(str(hf_models[variant])).tensors
    for name, tensor in load(str(gguf_file(case))).tensors.items():
        values = float_array(tensor)
        atol = ROUNDING[qtype] if values.ndim == 2 else 0.0
        np.testing.assert_allclose(values, source[name], rtol=0, atol=atol, err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_transformers_generates(gguf_file, case):
    path = gguf_file(case)
    model = transformers_model(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    prompt = tokenizer("The quick brown fox", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **prompt,
            do_sample=False,
            min_new_tokens=8,
            max_new_tokens=8,
            output_logits=True,
            return_dict_in_generate=True,
        )
    assert out.sequences.shape[1] == prompt["input_ids"].shape[1] + 8
    logits = torch.stack(out.logits)
    assert torch.isfinite(logits).all()
    assert logits.std() > 0.1  # weights that do something, not all-zero blocks


def test_tokenizer_matches_source(gguf_file, hf_models):
    """Both transformers and our loader rebuild the tiny tokenizer from the GGUF metadata."""
    from tokenizers import Tokenizer

    path = gguf_file("F32")
    source = Tokenizer.from_file(str(hf_models["small"] / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = load(str(path))
    ours = Tokenizer.from_str(json.dumps(loaded.tokenizer))
    texts = [*CORPUS, "<|im_start|>user\nhi there<|im_end|>\n", "  spaces\tand 12345 digits"]
    for text in texts:
        expected = source.encode(text).ids
        assert theirs(text)["input_ids"] == expected, text
        assert ours.encode(text).ids == expected, text
    assert theirs.bos_token == loaded.tokenizer_config["bos_token"] == "<|im_start|>"
    assert theirs.eos_token == loaded.tokenizer_config["eos_token"] == "<|im_end|>"
    # <|im_end|>, then <|endoftext|>: a control token that ends a turn, as llama.cpp reads it
    assert loaded.eos_token_ids == [2, 0]
    assert theirs.chat_template == loaded.tokenizer_config["chat_template"]
    assert loaded.tokenizer_config["add_bos_token"] is False


def test_loader_accepts_llama_cpp_gpt2_pre_tokenizer_name(hf_models, tmp_path):
    path = write_gguf(hf_models["small"], tmp_path / "gpt-2.gguf", Q.F16, pre_tokenizer="gpt-2")
    assert load(str(path)).tokenizer["pre_tokenizer"]["type"] == "ByteLevel"
