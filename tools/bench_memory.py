"""Peak memory of a build from a Hugging Face folder of a 0.5B model.

    scripts/bench-memory [--quantization q4f32 as-stored] [--folder DIR]

Writes a random-weight llama folder the way transformers saves one (BF16 safetensors in
shards with model.safetensors.index.json) with Qwen2.5-0.5B's sizes (494M parameters, its
151,936-token embedding tied to the output; the tokenizer files are SmolLM2's, which the
build copies and does not check against the vocabulary size), builds it in a child process
per quantization, and prints one JSON line each: the child's peak resident memory and peak
anonymous memory (resident less the pages of the memory-mapped safetensors files, which the
OS may drop), beside the largest tensor in float32 and the weight bytes written. The build
should hold about its output plus a weight or two, not the whole model in float32 (1.98 GB
here).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "head_dim": 64,
}
SHARD_BYTES = 500_000_000


def _shapes() -> dict[str, tuple[int, ...]]:
    s = SIZES
    hidden, inter, head = s["hidden_size"], s["intermediate_size"], s["head_dim"]
    q, kv = s["num_attention_heads"] * head, s["num_key_value_heads"] * head
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (s["vocab_size"], hidden)}
    for i in range(s["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (q, hidden),
            p + "self_attn.k_proj.weight": (kv, hidden),
            p + "self_attn.v_proj.weight": (kv, hidden),
            p + "self_attn.o_proj.weight": (hidden, q),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        }
    return shapes | {"model.norm.weight": (hidden,)}


def write_folder(folder: Path) -> dict[str, tuple[int, ...]]:
    """The random BF16 model, sharded, with its index, config and tokenizer files."""
    import ml_dtypes
    from safetensors.numpy import save_file

    from compiler.loader import load

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shapes = _shapes()
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, shape in shapes.items():
        std = 0.02 if len(shape) == 2 else 0.1
        value = rng.standard_normal(shape, dtype=np.float32) * std + (len(shape) == 1)
        if size and size + value.size * 2 > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = value.astype(ml_dtypes.bfloat16)
        size += value.size * 2
    weight_map: dict[str, str] = {}
    for i, tensors in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / file))
        weight_map |= dict.fromkeys(tensors, file)
    total = sum(int(np.prod(s)) * 2 for s in shapes.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **SIZES,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "eos_token_id": 2,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_source = load("smollm2-135m-instruct")
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_source.tokenizer))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_source.tokenizer_config))
    return shapes


def _status_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident memory so far) and RssAnon (resident memory less the file pages
    it maps: the safetensors files are memory-mapped, and the OS may drop those pages) of a
    process, in KiB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split() for line in lines if line.startswith(("VmHWM:", "RssAnon:")))
    return {f[0].rstrip(":"): int(f[1]) for f in fields}


def build_peak(folder: Path, quantization: str, out: Path) -> dict:
    """Builds in a child process; its peak resident and anonymous memory (sampled every
    20 ms from /proc)."""
    build_web = Path(sys.executable).parent / "build-web"
    cmd = [str(build_web), str(folder), "--quantization", quantization, "--output", str(out)]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = anonymous = 0
    while child.poll() is None:
        status = _status_kib(child.pid)
        peak = max(peak, status.get("VmHWM", 0))
        anonymous = max(anonymous, status.get("RssAnon", 0))
        time.sleep(0.02)
    if child.returncode:
        raise SystemExit(f"build-web {quantization} failed with status {child.returncode}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "quantization": quantization,
        "peak_rss_mb": round(peak / 1024, 1),
        "peak_anonymous_mb": round(anonymous / 1024, 1),
        "weight_mb": round(sum(p["bytes"] for p in manifest["params"]) / 1e6, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quantization", nargs="+", default=["q4f32", "as-stored"])
    parser.add_argument("--folder", type=Path, help="where to write the model (default: temp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp) / "random-0.5b"
        shapes = write_folder(folder)
        params = sum(int(np.prod(s)) for s in shapes.values())
        largest = max(int(np.prod(s)) for s in shapes.values()) * 4
        for quantization in args.quantization:
            figures = build_peak(folder, quantization, Path(tmp) / f"out-{quantization}")
            figures |= {
                "parameters_m": round(params / 1e6, 1),
                "largest_tensor_f32_mb": round(largest / 1e6, 1),
                "model_f32_mb": round(params * 4 / 1e6, 1),
            }
            print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
