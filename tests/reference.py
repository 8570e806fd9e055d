"""An independent numpy forward pass of a built model folder, for the tests.

It reads the shards and manifest that the browser reads, dequantizes with numpy, and runs
the llama network in float64 with a KV cache. Nothing from the compiler's TVM side is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def dequantize(parts: dict[str, np.ndarray]) -> np.ndarray:
    if "weight" in parts:
        return parts["weight"].astype(np.float64)
    if "q8" in parts:  # four int8 codes a word, value = code * scale
        packed = parts["q8"]
        rows = packed.shape[0]
        codes = np.stack([(packed >> np.uint32(8 * i)) & 255 for i in range(4)], axis=-1)
        codes = codes.astype(np.uint8).view(np.int8).reshape(rows, -1, 32).astype(np.float64)
        return (codes * parts["scale"].astype(np.float64)[..., None]).reshape(rows, -1)
    packed = parts["q4"]
    rows = packed.shape[0]
    codes = np.stack([(packed >> np.uint32(4 * i)) & 15 for i in range(8)], axis=-1)
    codes = codes.reshape(rows, -1, 32).astype(np.float64)
    scale = parts["scale"].astype(np.float64)[..., None]
    minimum = parts["minimum"].astype(np.float64)[..., None]
    return (codes * scale + minimum).reshape(rows, -1)


def load_folder(folder: Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """manifest.json, the dequantized float64 weights and the biases, by network name."""
    manifest = json.loads((folder / "manifest.json").read_text())
    shards = [(folder / s["file"]).read_bytes() for s in manifest["shards"]]
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for t in manifest["params"]:
        if t["name"].startswith("rope_table"):
            continue  # the network's cos and sin, which the reference computes itself
        raw = shards[t["shard"]][t["offset"] : t["offset"] + t["bytes"]]
        array = np.frombuffer(raw, dtype=t["dtype"]).reshape(t["shape"])
        owner, part = t["name"].rsplit(".", 1)
        grouped.setdefault(owner, {})[part] = array
    biases = {
        name: parts.pop("bias").astype(np.float64)
        for name, parts in grouped.items()
        if "bias" in parts
    }
    return manifest, {name: dequantize(parts) for name, parts in grouped.items()}, biases


class ReferenceModel:
    def __init__(self, folder: Path):
        self.manifest, self.w, self.b = load_folder(folder)
        self.c = self.manifest["config"]
        self.reset()

    def reset(self) -> None:
        layers = self.c["num_hidden_layers"]
        self.keys: list[list[np.ndarray]] = [[] for _ in range(layers)]
        self.values: list[list[np.ndarray]] = [[] for _ in range(layers)]
        self.length = 0

    def _norm(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        scale = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + self.c["rms_norm_eps"])
        return x * scale * weight

    def _rope(self, x: np.ndarray, positions: np.ndarray, rope: dict) -> np.ndarray:
        """The first rotary_dim dimensions of each head rotated in halves; the inverse
        frequencies and the scale of cos and sin as the config gives them."""
        dim = rope["rotary_dim"]
        inv_freq = np.asarray(rope["inverse_frequencies"], dtype=np.float64)
        angles = positions[:, None] * inv_freq[None, :]
        cos = np.concatenate([np.cos(angles)] * 2, -1)[:, None, :] * rope["attention"]
        sin = np.concatenate([np.sin(angles)] * 2, -1)[:, None, :] * rope["attention"]
        half = dim // 2
        part, kept = x[..., :dim], x[..., dim:]
        rotated = np.concatenate([-part[..., half:], part[..., :half]], -1)
        return np.concatenate([part * cos + rotated * sin, kept], -1)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.w[name].T
        return y + self.b[name] if name in self.b else y

    def forward(self, ids: list[int]) -> np.ndarray:
        """Appends `ids` to the cache; returns the logits of the last one (float64)."""
        c, w = self.c, self.w
        h, kvh, d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        n = len(ids)
        positions = np.arange(self.length, self.length + n, dtype=np.float64)
        gemma = self.manifest["architecture"] in ("gemma2", "gemma3")
        x = w["embed_tokens"][ids]
        if gemma:  # embeddings scaled by sqrt(hidden), rounded to float32 as transformers does
            x = x * np.float64(np.float32(np.sqrt(c["hidden_size"])))
        for i in range(c["num_hidden_layers"]):
            p = f"layers.{i}."
            # Gemma's local layers: a sliding window and their own rope base.
            local = gemma and c["sliding_layers"][i]
            rope = (local and c.get("rope_local")) or c["rope"]
            window = c.get("sliding_window") if local or not gemma else None
            scale = c["query_pre_attn_scalar"] ** -0.5 if gemma else d**-0.5
            normed = self._norm(x, w[p + "input_layernorm"])
            qkv = self._linear(normed, p + "self_attn.qkv_proj").reshape(n, h + 2 * kvh, d)
            q, k = qkv[:, :h], qkv[:, h : h + kvh]
            if p + "self_attn.q_norm" in w:  # Qwen3: each head normalized
                q = self._norm(q, w[p + "self_attn.q_norm"])
                k = self._norm(k, w[p + "self_attn.k_norm"])
            q = self._rope(q, positions, rope)
            k = self._rope(k, positions, rope)
            v = qkv[:, h + kvh :]
            self.keys[i].append(k)
            self.values[i].append(v)
            keys = np.concatenate(self.keys[i])  # (total, kvh, d)
            values = np.concatenate(self.values[i])
            total = keys.shape[0]
            group = h // kvh
            keys = np.repeat(keys, group, axis=1)
            values = np.repeat(values, group, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, keys) * scale
            if cap := c.get("attn_logit_softcapping"):  # Gemma 2's soft cap
                scores = cap * np.tanh(scores / cap)
            query_positions = (total - n + np.arange(n))[:, None]
            mask = np.arange(total)[None, :] > query_positions
            if window:  # only the last `window` positions
                mask |= np.arange(total)[None, :] <= query_positions - window
            scores = np.where(mask[None], -np.inf, scores)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            attn = np.einsum("hqk,khd->qhd", probs, values).reshape(n, h * d)
            attn = self._linear(attn, p + "self_attn.o_proj")
            if gemma:  # norms after attention and around the MLP, a tanh-GELU
                x = x + self._norm(attn, w[p + "post_attention_layernorm"])
                gate_up = (
                    self._norm(x, w[p + "pre_feedforward_layernorm"]) @ w[p + "mlp.gate_up_proj"].T
                )
                gate, up = np.split(gate_up, 2, axis=-1)
                act = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3)))
                mlp = (act * up) @ w[p + "mlp.down_proj"].T
                x = x + self._norm(mlp, w[p + "post_feedforward_layernorm"])
                continue
            x = x + attn
            gate_up = self._norm(x, w[p + "post_attention_layernorm"]) @ w[p + "mlp.gate_up_proj"].T
            gate, up = np.split(gate_up, 2, axis=-1)
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj"].T
        self.length += n
        last = self._norm(x[-1], w["norm"])
        head = w["lm_head"] if "lm_head" in w else w["embed_tokens"]
        logits = head @ last
        if cap := c.get("final_logit_softcapping"):
            logits = cap * np.tanh(logits / cap)
        return logits

    def greedy(self, prompt: list[int], count: int) -> list[int]:
        self.reset()
        logits = self.forward(prompt)
        out = []
        for _ in range(count):
            out.append(int(np.argmax(logits)))
            logits = self.forward([out[-1]])
        return out
