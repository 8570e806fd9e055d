"""Hugging Face folders as people have them: F16 or BF16 safetensors, one file or sharded
with model.safetensors.index.json. Built as-stored (the 16-bit weights kept as they are) and
run in Chromium against transformers loading the same folder in float32; read one tensor at
a time; a broken folder is refused with one line."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch
from compare import assert_close, page_logits_and_greedy, transformers_logits_and_greedy
from tiny_model import make_llama
from transformers import LlamaForCausalLM

from compiler.build import build, quantize
from compiler.cli import main
from compiler.formats import base as formats_base
from compiler.loader import load
from compiler.quantization import get_scheme

PROMPT = [5, 17, 42, 100, 7, 8, 9, 10, 11, 12, 13, 60, 61]
STEPS = 16
INDEX = "model.safetensors.index.json"


@pytest.mark.parametrize(("dtype", "shard"), [("float16", None), ("bfloat16", "60KB")])
def test_16_bit_folder_as_stored_matches_transformers(dtype, shard, tmp_path, engine_page):
    hf = make_llama(tmp_path / "hf", seed=5, dtype=dtype, max_shard_size=shard)
    assert (hf / INDEX).is_file() == bool(shard)
    folder = build(str(hf), "as-stored", tmp_path / "built", context_window=64, prefill_chunk=8)
    manifest = json.loads((folder / "manifest.json").read_text())
    kept = {"float16": "f16", "bfloat16": "bf16"}[dtype]
    weights = [p for p in manifest["params"] if not p["name"].startswith("rope_table")]
    formats = {p["format"] for p in weights if not p["name"].endswith("norm.weight")}
    assert formats == {kept}, formats
    stored = sum(p["bytes"] for p in weights)
    assert manifest["source_tensor_bytes"] <= stored <= 1.02 * manifest["source_tensor_bytes"]

    model = LlamaForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    expected = transformers_logits_and_greedy(model, PROMPT, STEPS)
    with engine_page(folder) as page:
        assert_close(page_logits_and_greedy(page, PROMPT, STEPS), expected, exact=True)


def test_tensors_are_read_one_at_a_time(tmp_path, monkeypatch):
    """Quantizing a folder holds the output, one weight (two for a fused projection, and their
    concatenation) and a run of rows in float32 at a time: never the whole model in float32."""
    monkeypatch.setattr(formats_base, "CHUNK_ELEMENTS", 1 << 16)
    sizes = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 8}
    hf = make_llama(tmp_path / "hf", dtype="bfloat16", max_shard_size="1MB", **sizes)
    source = load(str(hf))
    largest = max(int(np.prod(t.shape)) * 4 for t in source.tensors.values())
    tracemalloc.start()
    params, _ = quantize(source, get_scheme("q4f32"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    output = sum(p.nbytes for p in params.values())
    assert peak < output + 4 * largest < source.tensor_bytes * 2, (peak, output, largest)


def _folder_error(hf, capsys) -> str:
    out = hf.parent / "out"
    assert main([str(hf), "--output", str(out)]) == 1
    printed = capsys.readouterr().err
    assert "Traceback" not in printed
    assert not out.exists()
    lines = [line for line in printed.splitlines() if "error" in line]
    assert len(lines) == 1, printed
    return lines[0]


def test_broken_folders_are_refused_with_one_line(tmp_path, capsys):
    hf = make_llama(tmp_path / "hf", dtype="bfloat16", max_shard_size="60KB")
    index = json.loads((hf / INDEX).read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]

    (hf / shard).rename(hf / "moved")
    assert f"shard {shard} is missing" in _folder_error(hf, capsys)
    (hf / "moved").rename(hf / shard)

    listed = dict(index, weight_map={**index["weight_map"], "model.extra.weight": shard})
    (hf / INDEX).write_text(json.dumps(listed))
    assert "model.extra.weight" in _folder_error(hf, capsys)

    (hf / INDEX).write_text("{not json")
    assert "malformed" in _folder_error(hf, capsys)


def test_weights_of_other_dtypes_are_refused(tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    hf = make_llama(tmp_path / "hf")
    weights = load_file(str(hf / "model.safetensors"))
    weights["model.norm.weight"] = weights["model.norm.weight"].astype(np.float64)
    save_file(weights, str(hf / "model.safetensors"))
    line = _folder_error(hf, capsys)
    assert "model.norm.weight is F64" in line and "F32, F16 or BF16" in line
