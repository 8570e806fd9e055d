"""Turns a tiny model from `tiny_model.make_llama` into a GGUF file laid out as llama.cpp's
convert_hf_to_gguf.py lays out a llama (or Gemma 2, or Phi-3) model, so that tests can exercise
GGUF files of every weight type without downloading any.

The sizes `make_llama` picks by default suit the 32-element block types (F32, F16, BF16, Q8_0,
Q4_0, Q4_1, Q5_0, Q5_1). The K-quants (Q2_K .. Q6_K) pack 256 elements per block, so every row
(input dimension) must be a multiple of 256: pass `**K_QUANT_SIZES` to `make_llama` for those.

The `gguf` package cannot quantize to K-quants, so their tensors are valid random blocks, scaled
like `make_llama`'s weights: such a file's weights differ from the safetensors ones, and the GGUF
file is then the model of reference.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

# make_llama(folder, **K_QUANT_SIZES) gives rows of 256 or 512 elements: whole K-quant blocks.
K_QUANT_SIZES: dict[str, int] = {"hidden_size": 256, "intermediate_size": 512, "head_dim": 64}

QUANTIZED_TYPES: tuple[Q, ...] = (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1)
K_QUANT_TYPES: tuple[Q, ...] = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
# BitNet's ternary blocks of 256 (quantized by `gguf`), a type the build does not keep.
TERNARY_TYPES: tuple[Q, ...] = (Q.TQ2_0,)
# Types whose blocks hold 256 elements: rows must be multiples of 256 (K_QUANT_SIZES).
BLOCKS_OF_256: tuple[Q, ...] = (*K_QUANT_TYPES, *TERNARY_TYPES)
SUPPORTED_TYPES: tuple[Q, ...] = (
    Q.F32,
    Q.F16,
    Q.BF16,
    *QUANTIZED_TYPES,
    *K_QUANT_TYPES,
    *TERNARY_TYPES,
)

TensorTypes = Q | Mapping[str, Q]

# Byte offsets of the f16 super-block scale `d` and minimum scale `dmin` (None: the type has
# none) in each K-quant block, from ggml's block_q*_K structs.
_K_SCALE_FIELDS: dict[Q, tuple[int, int | None]] = {
    Q.Q2_K: (80, 82),
    Q.Q3_K: (108, None),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208, None),
}
# The standard deviation make_llama gives its 2-D weights.
_WEIGHT_STD = 0.3

_FILE_TYPES: dict[Q, gguf.LlamaFileType] = {
    Q.F32: gguf.LlamaFileType.ALL_F32,
    Q.F16: gguf.LlamaFileType.MOSTLY_F16,
    Q.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    Q.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
    Q.Q4_1: gguf.LlamaFileType.MOSTLY_Q4_1,
    Q.Q5_0: gguf.LlamaFileType.MOSTLY_Q5_0,
    Q.Q5_1: gguf.LlamaFileType.MOSTLY_Q5_1,
    Q.Q2_K: gguf.LlamaFileType.MOSTLY_Q2_K,
    Q.Q3_K: gguf.LlamaFileType.MOSTLY_Q3_K_M,
    Q.Q4_K: gguf.LlamaFileType.MOSTLY_Q4_K_M,
    Q.Q5_K: gguf.LlamaFileType.MOSTLY_Q5_K_M,
    Q.Q6_K: gguf.LlamaFileType.MOSTLY_Q6_K,
    Q.TQ2_0: gguf.LlamaFileType.MOSTLY_TQ2_0,
}

_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
# Gemma 2's norms after attention and around the MLP.
_GEMMA_LAYER_NAMES = {
    **_LAYER_NAMES,
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
# Phi-3's fused matrices.
_PHI3_LAYER_NAMES = {
    **_LAYER_NAMES,
    "self_attn.qkv_proj": "attn_qkv",
    "mlp.gate_up_proj": "ffn_up",
}
# config.json architectures -> GGUF architectures written here
_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Gemma2ForCausalLM": "gemma2",
    "Phi3ForCausalLM": "phi3",
}

_NORMAL, _CONTROL, _USER_DEFINED = (
    gguf.TokenType.NORMAL,
    gguf.TokenType.CONTROL,
    gguf.TokenType.USER_DEFINED,
)


def gguf_name(hf_name: str, arch: str = "llama") -> str:
    """llama.cpp's name for a Hugging Face tensor name of a llama, gemma2 or phi3 model."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    names = {"gemma2": _GEMMA_LAYER_NAMES, "phi3": _PHI3_LAYER_NAMES}.get(arch, _LAYER_NAMES)
    parts = hf_name.split(".")
    module = ".".join(parts[3:-1])
    if parts[:2] != ["model", "layers"] or module not in names:
        raise ValueError(f"not a {arch} tensor name: {hf_name}")
    return f"blk.{parts[2]}.{names[module]}.{parts[-1]}"


def permute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp rotates interleaved pairs (x0, x1), (x2, x3), ... while Hugging Face rotates
    the two halves of each head; llama.cpp's converter reorders the Q/K rows to match, and a
    GGUF reader has to undo that."""
    rows = weight.shape[0]
    split = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
    return split.swapaxes(1, 2).reshape(weight.shape)


def type_for(hf_name: str, tensor_type: TensorTypes) -> Q:
    """The GGML type of a 2-D tensor. A mapping is looked up by the full Hugging Face name,
    then by its suffixes after a dot ("mlp.down_proj.weight", "down_proj.weight"), then "*";
    naming every tensor type explicitly keeps a mixed file from silently falling back to F32."""
    if isinstance(tensor_type, Q):
        return tensor_type
    parts = hf_name.split(".")
    for key in [".".join(parts[i:]) for i in range(len(parts))] + ["*"]:
        if key in tensor_type:
            return tensor_type[key]
    raise ValueError(f"no GGML type given for {hf_name} (add it, a suffix of it, or '*')")


def random_k_quant_blocks(
    qtype: Q, rows: int, cols: int, rng: np.random.Generator, std: float = _WEIGHT_STD
) -> np.ndarray:
    """Random but valid K-quant blocks, bytes of shape (rows, bytes per row), whose dequantized
    values have mean about 0 and standard deviation about `std`: random sub-scales and codes,
    with the f16 super-block scales set to finite values chosen from what those codes give."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    if cols % block_elems:
        raise ValueError(
            f"{qtype.name} needs rows that are multiples of {block_elems} elements, not {cols}: "
            "make the model with make_llama(folder, **K_QUANT_SIZES)"
        )
    count = rows * cols // block_elems
    blocks = rng.integers(0, 256, size=(count, block_bytes), dtype=np.uint8)
    d_at, dmin_at = _K_SCALE_FIELDS[qtype]

    def set_f16(at: int, values: np.ndarray | float) -> None:
        half = np.broadcast_to(np.asarray(values, dtype=np.float16), (count,)).reshape(count, 1)
        blocks[:, at : at + 2] = half.view(np.uint8)

    def values_with(d: float, dmin: float) -> np.ndarray:
        set_f16(d_at, d)
        if dmin_at is not None:
            set_f16(dmin_at, dmin)
        return gguf.quants.dequantize(blocks, qtype)

    # Codes times sub-scales are all positive where the type has a minimum; dmin cancels them.
    ratio = 0.0
    if dmin_at is not None:
        ratio = float(values_with(1.0, 0.0).mean() / -values_with(0.0, 1.0).mean())
    unit_std = float(values_with(1.0, ratio).std())
    d = std / unit_std * rng.uniform(0.5, 1.5, size=count)
    set_f16(d_at, d)
    if dmin_at is not None:
        set_f16(dmin_at, d * ratio)
    return blocks.reshape(rows, cols // block_elems * block_bytes)


def encode_tensor(weight: np.ndarray, qtype: Q, rng: np.random.Generator) -> np.ndarray:
    """The data GGUFWriter.add_tensor takes for one weight stored as `qtype`."""
    if qtype in K_QUANT_TYPES:
        return random_k_quant_blocks(qtype, *weight.shape, rng)
    if qtype in SUPPORTED_TYPES:
        return gguf.quants.quantize(weight, qtype)
    raise ValueError(f"GGML type {qtype.name} is not supported; supported: {_type_names()}")


def _type_names() -> str:
    return ", ".join(t.name for t in SUPPORTED_TYPES)


def _hf_config(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    if (config.get("architectures") or [""])[0] not in _ARCHITECTURES:
        raise ValueError(f"{folder}: not one of {', '.join(_ARCHITECTURES)}")
    if "rope_theta" not in config:
        config["rope_theta"] = (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    return config


def _add_tokenizer(writer: gguf.GGUFWriter, folder: Path, vocab_size: int, pre: str) -> None:
    """llama.cpp's "gpt2" (byte-level BPE) vocabulary: tokens by id, their types, merges,
    special token ids and the chat template."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    model = tokenizer["model"]
    if model["type"] != "BPE" or (tokenizer.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
        raise ValueError(f"{folder}: only byte-level BPE tokenizers (make_llama's default) fit")
    by_id = {i: token for token, i in model["vocab"].items()}
    added = {t["id"]: t for t in tokenizer.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in added.items()})
    if sorted(by_id) != list(range(vocab_size)):
        raise ValueError(f"{folder}: token ids are not 0..{vocab_size - 1}")
    tokens = [by_id[i] for i in range(vocab_size)]
    types = [
        (_CONTROL if added[i]["special"] else _USER_DEFINED) if i in added else _NORMAL
        for i in range(vocab_size)
    ]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    ids = {token: i for i, token in enumerate(tokens)}

    def token_id(key: str) -> int:
        value = config[key]
        return ids[value["content"] if isinstance(value, dict) else value]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(token_id("bos_token"))
    writer.add_eos_token_id(token_id("eos_token"))
    writer.add_add_bos_token(False)
    if config.get("chat_template"):
        writer.add_chat_template(config["chat_template"])


def write_gguf(
    hf_folder: Path,
    path: Path,
    tensor_type: TensorTypes = Q.F32,
    *,
    pre_tokenizer: str = "gpt2",
    seed: int = 0,
    edit: Callable[[gguf.GGUFWriter], None] | None = None,
) -> Path:
    """Writes the `make_llama` model in `hf_folder` as a GGUF file at `path`; returns it. A
    llama model is written as `llama` (Q/K rows permuted), a Gemma 2 one as `gemma2` (its norms
    stored as 1 + w, its window and soft caps in the metadata), a Phi-3 one as `phi3` (matrices
    fused as they are, LongRoPE's factors as tensors), as llama.cpp's converter does.

    `tensor_type`: the GGML type of every 2-D weight (one of SUPPORTED_TYPES), or a mapping from
    Hugging Face tensor names (or name suffixes, or "*") to types for a mixed file; the norms
    stay F32, as llama.cpp keeps them. K-quant weights are random (`random_k_quant_blocks`,
    drawn with `seed`) and need `make_llama(folder, **K_QUANT_SIZES)`.

    `pre_tokenizer` is written as tokenizer.ggml.pre. llama.cpp calls GPT-2's regex split, which
    the tiny tokenizer uses, "gpt-2"; the default is "gpt2", the spelling compiler/gguf_tokenizer.py
    accepts, which transformers' GGUF loader treats the same way (GPT-2's split).

    `edit`, if given, is called with the writer after everything is added and before the file
    is written: tests use it to add or drop metadata (`writer.kv_data[0]`) or add tensors.
    """
    from safetensors.numpy import load_file

    config = _hf_config(hf_folder)
    arch = _ARCHITECTURES[config["architectures"][0]]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    weights: dict[str, np.ndarray] = {}
    for shard in sorted(hf_folder.glob("*.safetensors")):
        weights.update(load_file(str(shard)))
    if config.get("tie_word_embeddings"):
        weights.pop("lm_head.weight", None)

    rng = np.random.default_rng(seed)
    encoded: list[tuple[str, np.ndarray, Q]] = []
    elements: Counter[Q] = Counter()
    for name in sorted(weights, key=_llama_cpp_order):
        weight = weights[name].astype(np.float32)
        if arch == "gemma2" and name.endswith("norm.weight"):
            weight = weight + np.float32(1.0)
        elif arch == "llama" and name.endswith("q_proj.weight"):
            weight = permute_rope_rows(weight, heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            weight = permute_rope_rows(weight, kv_heads)
        qtype = type_for(name, tensor_type) if weight.ndim == 2 else Q.F32
        encoded.append((gguf_name(name, arch), encode_tensor(weight, qtype, rng), qtype))
        if weight.ndim == 2:
            elements[qtype] += weight.size
    factors = llama3_rope_factors(config)
    if factors is not None:  # after the embedding, as llama.cpp's converter writes it
        encoded.insert(1, ("rope_freqs.weight", factors, Q.F32))
    longrope = _rope(config) if _rope(config).get("rope_type") == "longrope" else None
    if longrope:
        for kind in ("long", "short"):
            values = np.asarray(longrope[f"{kind}_factor"], dtype=np.float32)
            encoded.insert(1, (f"rope_factors_{kind}.weight", values, Q.F32))
    # general.file_type names the type that holds most of the weights.
    main_type = elements.most_common(1)[0][0]

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(hf_folder.name)
    writer.add_file_type(_FILE_TYPES[main_type])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    # llama.cpp's converter writes the rotated part of a head (Phi-4-mini rotates 3/4).
    partial = _rope(config).get("partial_rotary_factor") or 1.0
    writer.add_rope_dimension_count(int(config["head_dim"] * partial))
    writer.add_key_length(config["head_dim"])
    writer.add_value_length(config["head_dim"])
    writer.add_rope_freq_base(float(config["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    if arch == "phi3" and config.get("sliding_window"):
        writer.add_sliding_window(config["sliding_window"])
    if longrope:
        original = config["original_max_position_embeddings"]
        writer.add_rope_scaling_orig_ctx_len(original)
        scale = config["max_position_embeddings"] / original
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)))
    if arch == "gemma2":
        writer.add_sliding_window(config["sliding_window"])
        writer.add_attn_logit_softcapping(float(config["attn_logit_softcapping"]))
        writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
    if any(raw not in (Q.F32, Q.F16, Q.BF16) for _, _, raw in encoded):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, hf_folder, config["vocab_size"], pre_tokenizer)
    for name, data, raw in encoded:
        writer.add_tensor(name, data, raw_dtype=raw)
    if edit is not None:
        edit(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def llama3_rope_factors(config: dict) -> np.ndarray | None:
    """Llama 3.1's rope scaling as llama.cpp's converter stores it: no metadata, a rope_freqs
    tensor of one divisor per rotated pair (1 for short wavelengths, `factor` for long ones,
    a smooth blend between)."""
    rope = _rope(config)
    if rope.get("rope_type") != "llama3":
        return None
    dim, base = config["head_dim"], float(config["rope_theta"])
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    wavelengths = 2 * np.pi * base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    smooth = (old / wavelengths - low) / (high - low)
    blended = 1 / ((1 - smooth) / factor + smooth)
    factors = np.where(
        wavelengths < old / high, 1.0, np.where(wavelengths > old / low, factor, blended)
    )
    return factors.astype(np.float32)


def _rope(config: dict) -> dict:
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_type", rope.get("type"))
    return rope


def _llama_cpp_order(hf_name: str) -> tuple[int, int, str]:
    """token_embd first, then the blocks by number, then output_norm and output, as llama.cpp's
    converter writes them."""
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        return (1, int(parts[2]), hf_name)
    return (0 if "embed_tokens" in hf_name else 2, 0, hf_name)
