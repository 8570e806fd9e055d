"""A GGUF model as transformers.js loads it from a local folder, made the way the Hub's ONNX
models for transformers.js are made: transformers reads the GGUF (dequantized to float32),
Optimum exports it for the task text-generation-with-past, and ONNX Runtime's quantizers make
the q8 and q4 files from that export as transformers.js's conversion script
(scripts/quantize.py) does. Run by tools/peer.py with the peer venv's Python
(tools/peer/requirements.txt), never with the project's.

    export.py export GGUF OUT              OUT/config.json, generation_config.json, onnx/model.onnx
                                           (its weights in onnx/model.onnx_data[_N])
    export.py quantize OUT DTYPE           OUT/onnx/model_quantized.onnx (q8) or model_q4.onnx (q4)
    export.py logits OUT IDS_JSON NPY      ONNX Runtime's logits of OUT's fp32 file for one prompt,
                                           [tokens, vocab]
    export.py agreement OUT IDS_JSON N DTYPE...
                                           prints a JSON line for each DTYPE: how often its file
                                           picks the fp32 file's greedy token over the fp32
                                           file's first N greedy tokens after the prompt

The tokenizer files are written by tools/peer.py: transformers' GGUF tokenizer is wrong
for SmolLM2 (wrong end token, an added BOS, no digit split); Kiln's matches llama.cpp.
A failure prints one line (what failed and why) and exits with status 1.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

# The file transformers.js loads for each dtype (its `dtype` option; q8 is its default on the
# wasm device).
ONNX_FILES = {"fp32": "model.onnx", "q8": "model_quantized.onnx", "q4": "model_q4.onnx"}
# transformers.js quantizes 8-bit weights as unsigned where one of these operators is in the
# model (onnxruntime-web has no signed ConvInteger; onnxruntime-genai's attention operators do
# better unsigned); a decoder exported by Optimum has none.
QUINT8_OPS = {"Conv", "GroupQueryAttention", "MultiHeadAttention"}
# The fp32 file keeps its weights in external data, as the Hub's models for transformers.js
# ship it (onnx/model.onnx_data): as one protobuf, Gemma 3 270M's fails to load in ONNX
# Runtime Web's WebAssembly memory (std::bad_alloc). Chunks are named as transformers.js asks
# for them (model.onnx_data, model.onnx_data_1, ...), each under 2 GB: Chromium fails to
# fetch a larger file into one buffer.
CHUNK_BYTES = 2_000_000_000


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
        _save_external(onnx_dir / "model.onnx", out / "onnx" / "model.onnx")


def _save_external(source: Path, target: Path) -> None:
    """The ONNX file `source` (with its external data, where it has some) saved as `target`,
    its tensors of 1 KB and more in external data files of at most CHUNK_BYTES."""
    import onnx
    from onnx.external_data_helper import set_external_data

    model = onnx.load(source)
    chunk, size = 0, 0
    for tensor in model.graph.initializer:
        length = len(tensor.raw_data)
        if length < 1024:
            continue
        if size and size + length > CHUNK_BYTES:
            chunk, size = chunk + 1, 0
        set_external_data(tensor, target.name + "_data" + (f"_{chunk}" if chunk else ""))
        size += length + 4096  # with the alignment onnx may add
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, target)


def quantize(folder: Path, dtype: str) -> None:
    """The q8 or q4 file beside the fp32 export, with the settings transformers.js's
    conversion script uses: q8 is ONNX Runtime's dynamic quantization (8-bit weights of every
    operator it can quantize, the embedding's Gather included, per tensor; activations
    quantized at run time), q4 `MatMulNBitsQuantizer` (4-bit symmetric blocks of 32 along the
    input, the MatMul weights only)."""
    import onnx

    model = onnx.load(folder / "onnx" / ONNX_FILES["fp32"])
    if dtype == "q8":
        from onnxruntime.quantization import QuantizationMode, QuantType
        from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
        from onnxruntime.quantization.registry import IntegerOpsRegistry

        ops = {node.op_type for node in model.graph.node}
        quantizer = ONNXQuantizer(
            model,
            per_channel=False,
            reduce_range=False,
            mode=QuantizationMode.IntegerOps,
            static=False,
            weight_qType=QuantType.QUInt8 if ops & QUINT8_OPS else QuantType.QInt8,
            activation_qType=QuantType.QUInt8,  # dynamic quantization of activations: uint8
            tensors_range=None,
            nodes_to_quantize=[],
            nodes_to_exclude=[],
            op_types_to_quantize=set(IntegerOpsRegistry),
            extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True},
        )
        quantizer.quantize_model()
        quantized = quantizer.model.model
    elif dtype == "q4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True)
        quantizer.process()
        quantized = quantizer.model.model
    else:
        sys.exit(f"no quantization {dtype!r}; known: q8, q4")
    path = folder / "onnx" / ONNX_FILES[dtype]
    large = quantized.ByteSize() >= onnx.checker.MAXIMUM_PROTOBUF
    if not large:
        onnx.checker.check_model(quantized)
    onnx.save_model(quantized, path, save_as_external_data=large, location=path.name + "_data")
    print(f"export: {dtype} {path.name}, {path.stat().st_size / 1e6:.1f} MB", file=sys.stderr)


class _Model:
    """One of the export's files in ONNX Runtime, run on a whole sequence with an empty cache."""

    def __init__(self, folder: Path, dtype: str):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(folder / "onnx" / ONNX_FILES[dtype]))
        self.config = json.loads((folder / "config.json").read_text())

    def logits(self, ids: list[int]):
        import numpy as np

        config = self.config
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        batch = np.array([ids], dtype=np.int64)
        inputs = {
            "input_ids": batch,
            "attention_mask": np.ones_like(batch),
            "position_ids": np.arange(batch.shape[1], dtype=np.int64)[None],  # not Gemma 3's
        }
        feed = {}
        for spec in self.session.get_inputs():
            if spec.name.startswith("past_key_values."):
                shape = (1, config["num_key_value_heads"], 0, head_dim)
                feed[spec.name] = np.zeros(shape, dtype=np.float32)
            else:
                feed[spec.name] = inputs[spec.name]
        return self.session.run(["logits"], feed)[0][0]


def logits(folder: Path, ids_file: Path, out_file: Path) -> None:
    import numpy as np

    np.save(out_file, _Model(folder, "fp32").logits(json.loads(ids_file.read_text())))


def agreement(folder: Path, ids_file: Path, tokens: int, dtypes: list[str]) -> None:
    """The fp32 file's greedy tokens after the prompt, then each dtype's logits over the prompt
    and those tokens (teacher forcing, so that one early near-tie does not decide the rest):
    where it ranks fp32's token at each position (0: its own pick), how often it picks it,
    for how many tokens from the first its own greedy reply would be fp32's, and the mean
    KL divergence of its next-token distribution from fp32's."""
    import numpy as np

    ids = json.loads(ids_file.read_text())
    reference = _Model(folder, "fp32")
    greedy: list[int] = []
    for _ in range(tokens):  # no cache: a few dozen passes over ~100 tokens
        greedy.append(int(reference.logits(ids + greedy)[-1].argmax()))
    expected = reference.logits(ids + greedy[:-1])[len(ids) - 1 :]
    del reference

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    for dtype in dtypes:
        logits = _Model(folder, dtype).logits(ids + greedy[:-1])[len(ids) - 1 :]
        chosen = logits[np.arange(tokens), greedy][:, None]
        ranks = (logits > chosen).sum(-1).tolist()
        p, q = log_softmax(expected), log_softmax(logits)
        result = {
            "dtype": dtype,
            "reference": "the fp32 file's greedy tokens",
            "tokens": tokens,
            "argmax_agreement": sum(r == 0 for r in ranks) / tokens,
            "top5_agreement": sum(r < 5 for r in ranks) / tokens,
            "greedy_prefix_agrees": next((i for i, r in enumerate(ranks) if r), tokens),
            "mean_kl_nats": float((np.exp(p) * (p - q)).sum(-1).mean()),
            "ranks": ranks,
            "fp32_tokens": greedy,
        }
        print(json.dumps(result), flush=True)


def main(command: str, args: list[str]) -> None:
    if command == "export":
        export(Path(args[0]), Path(args[1]))
    elif command == "quantize":
        quantize(Path(args[0]), args[1])
    elif command == "logits":
        logits(Path(args[0]), Path(args[1]), Path(args[2]))
    elif command == "agreement":
        agreement(Path(args[0]), Path(args[1]), int(args[2]), args[3:])
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    logging.disable(logging.INFO)  # ONNX Runtime's quantizers log every node at INFO
    try:
        main(sys.argv[1], sys.argv[2:])
    except Exception as err:  # one line for the benchmark, not a traceback
        first = (str(err).strip().splitlines() or [""])[0]
        sys.exit(f"export.py {sys.argv[1]}: {type(err).__name__}: {first}"[:500])
