"""A GGUF model as transformers.js loads it from a local folder, made the way the Hub's ONNX
models for transformers.js are made: transformers reads the GGUF (dequantized to float32) and
Optimum exports it for the task text-generation-with-past. Run by tools/peer.py with the
peer venv's Python (tools/peer/requirements.txt), never with the project's.

    export.py export GGUF OUT           OUT/config.json, generation_config.json, onnx/model.onnx
    export.py logits OUT IDS_JSON NPY   ONNX Runtime's logits of OUT for one prompt, [tokens, vocab]

The tokenizer files are written by tools/peer.py: transformers' GGUF tokenizer is wrong
for SmolLM2 (wrong end token, an added BOS, no digit split); Kiln's matches llama.cpp.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.parts[field.data[0]]
    return bytes(value).decode() if field.types[0].name == "STRING" else value[0].item()


def export(gguf_file: Path, out: Path) -> None:
    import gguf
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    # Two settings the GGUF carries that a wrong conversion loses silently.
    reader = gguf.GGUFReader(gguf_file)
    arch = _field(reader, "general.architecture")
    rope_theta = _field(reader, f"{arch}.rope.freq_base")
    if rope_theta is not None and abs(model.config.rope_theta - rope_theta) > 1e-3 * rope_theta:
        sys.exit(f"rope_theta {model.config.rope_theta} != the GGUF's {rope_theta}")
    tied = "output.weight" not in {t.name for t in reader.tensors}
    if tied and not (
        model.config.tie_word_embeddings
        and model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    ):
        sys.exit("the GGUF has no output.weight, but the model's head is not tied")
    print(
        f"export: {arch}, rope_theta {model.config.rope_theta}, tied embeddings {tied}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        hf, onnx_dir = Path(tmp) / "hf", Path(tmp) / "onnx"
        model.save_pretrained(hf)
        del model
        # Optimum's own check compares with PyTorch at 1e-5 absolute and only warns; the
        # caller compares logits with transformers 5.x instead.
        main_export(
            str(hf),
            output=onnx_dir,
            task="text-generation-with-past",
            device="cpu",
            do_validation=False,
        )
        (out / "onnx").mkdir(parents=True)
        for name in ("config.json", "generation_config.json"):
            shutil.copy(onnx_dir / name, out / name)
        for file in onnx_dir.glob("model.onnx*"):  # with model.onnx_data, where there is one
            shutil.move(file, out / "onnx" / file.name)


def logits(folder: Path, ids_file: Path, out_file: Path) -> None:
    import numpy as np
    import onnxruntime

    ids = np.array([json.loads(ids_file.read_text())], dtype=np.int64)
    session = onnxruntime.InferenceSession(str(folder / "onnx" / "model.onnx"))
    config = json.loads((folder / "config.json").read_text())
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    feed = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
    }
    for spec in session.get_inputs():
        if spec.name.startswith("past_key_values."):
            shape = (1, config["num_key_value_heads"], 0, head_dim)
            feed[spec.name] = np.zeros(shape, dtype=np.float32)
    np.save(out_file, session.run(["logits"], feed)[0][0])


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "export":
        export(Path(args[0]), Path(args[1]))
    elif command == "logits":
        logits(Path(args[0]), Path(args[1]), Path(args[2]))
    else:
        sys.exit(f"unknown command {command!r}")
