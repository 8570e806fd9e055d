"""build-web on good and bad input: exit status, one-line errors, nothing half-written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_gguf import write_gguf

BUILD_WEB = [sys.executable, "-m", "compiler.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*BUILD_WEB, *args], cwd=cwd, capture_output=True, text=True)


def assert_fails(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("build-web: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_builds_hf_folder_and_reuses_kernels(tiny_hf, tmp_path):
    out = tmp_path / "out"
    first = run(str(tiny_hf), "-q", "q4f32", "-o", str(out), "--prefill-chunk", "16", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"] == "q4f32" and manifest["prefill_chunk"] == 16
    for name in ["kernels-software.json", "kernels-gpu.json", "tokenizer.json", "kiln.js"]:
        assert (out / name).is_file()
    assert all((out / s["file"]).stat().st_size == s["bytes"] for s in manifest["shards"])
    second = run(str(tiny_hf), "-q", "q4f32", "-o", str(out), "--prefill-chunk", "16", cwd=tmp_path)
    assert second.returncode == 0
    assert "reused cached kernels" in second.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    # The chat site beside the model folder lists it.
    site = json.loads((tmp_path / "models.json").read_text())
    assert [m["path"] for m in site["models"]] == ["out/"]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "kiln-worker.js").is_file()


def test_unknown_preset(tmp_path):
    assert_fails(
        run("no-such-model", cwd=tmp_path), "unknown model preset", "smollm2-135m-instruct"
    )
    assert not any(tmp_path.iterdir())


def test_no_runtime_cannot_serve(tmp_path):
    for option in ["--serve", "--extension"]:
        result = run("smollm2-135m-instruct", "--no-runtime", option, cwd=tmp_path)
        assert_fails(result, "--no-runtime")
    assert not any(tmp_path.iterdir())


def test_missing_file(tmp_path):
    assert_fails(run(str(tmp_path / "absent.gguf"), cwd=tmp_path), "GGUF file not found")
    assert_fails(run(str(tmp_path / "absent/folder"), cwd=tmp_path), "not found")


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    assert_fails(run(str(bad), "-o", str(tmp_path / "out"), cwd=tmp_path), "not a readable GGUF")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(architectures=["GPT2LMHeadModel"]), "is not supported"),
        (lambda c: c.pop("hidden_size"), "lacks the field 'hidden_size'"),
        (lambda c: c.update(num_key_value_heads=3), "multiple of num_key_value_heads"),
        (lambda c: c.update(num_hidden_layers="many"), "malformed value"),
        (lambda c: c.update(rope_scaling={"rope_type": "axial", "factor": 4.0}), "rope_scaling="),
        (lambda c: c.update(mlp_bias=True), "mlp_bias=True"),
        (lambda c: c.update(hidden_act="gelu"), "hidden_act='gelu' is not implemented"),
        (lambda c: c.update(final_logit_softcapping=30.0), "final_logit_softcapping=30.0"),
    ],
)
def test_bad_config(tiny_hf, tmp_path, edit, message):
    folder = tmp_path / "model"
    folder.mkdir()
    for item in tiny_hf.iterdir():
        (folder / item.name).symlink_to(item)
    config = json.loads((tiny_hf / "config.json").read_text())
    edit(config)
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    assert_fails(run(str(folder), "-o", str(out), cwd=tmp_path), message)
    assert not out.exists()


def test_malformed_config_json(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    assert_fails(run(str(folder), cwd=tmp_path), "malformed JSON")


def test_unknown_quantization(tmp_path):
    result = run("smollm2-135m-instruct", "-q", "q3f7", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def _drop(key: str):
    return lambda writer: writer.kv_data[0].pop(key)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop("llama.attention.head_count"), "lacks llama.attention.head_count"),
        (lambda w: w.add_string("llama.rope.scaling.type", "yarn"), "scaling.type='yarn'"),
        (
            lambda w: (_drop("llama.rope.dimension_count")(w), w.add_rope_dimension_count(8)),
            "partial rotary",
        ),
        (
            lambda w: w.add_tensor("blk.0.attn_q.bias", np.zeros(64, np.float32)),
            "GGUF tensor blk.0.attn_q.bias is not part of the llama network",
        ),
        (
            lambda w: w.add_tensor("rope_freqs.weight", np.ones(5, np.float32)),
            "rope_freqs.weight has 5 values, not 8 (one per rotated pair of dimensions)",
        ),
    ],
)
def test_gguf_the_network_does_not_implement(tiny_hf, tmp_path, edit, message):
    path = write_gguf(tiny_hf, tmp_path / "model.gguf", edit=edit)
    out = tmp_path / "out"
    assert_fails(run(str(path), "-o", str(out), cwd=tmp_path), message)
    assert not out.exists()


def test_truncated_gguf(tiny_hf, tmp_path):
    path = write_gguf(tiny_hf, tmp_path / "model.gguf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert_fails(run(str(path), "-o", str(tmp_path / "out"), cwd=tmp_path), "model.gguf")
    assert not (tmp_path / "out").exists()
