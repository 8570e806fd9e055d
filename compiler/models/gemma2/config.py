"""The gemma2 family's config reader: config.json (`Gemma2Config`) and `gemma2` GGUF metadata
-> a local/global decoder config: local (sliding-window) and global layers alternating, one
rope for every layer, no q/k norms, soft caps on the attention scores and the logits."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import BuildError
from ...gguf_metadata import GGUFMetadata
from ..decoder import PLAIN_FIELDS, LocalGlobalConfig, read_hf, refuse_unimplemented
from ..decoder.config import SANDWICH_FIELDS, SOFT_CAPS
from ..decoder.gguf import gguf_local_global_config
from ..decoder.rope import rope_from_hf

GGUF_27B_LAYERS = 46  # llama.cpp tells the 27B model by its depth

# Gemma2Config's defaults for fields a config.json may leave out
DEFAULTS = {
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "rope_theta": 10000.0,
}


def config_from_hf(raw: dict[str, Any], where: str) -> LocalGlobalConfig:
    raw = {**DEFAULTS, **raw}
    layers = int(raw.get("num_hidden_layers", 0))
    types = raw.get("layer_types") or [
        "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)
    ]
    refuse_unimplemented(raw, where, SANDWICH_FIELDS)
    ours = {*SANDWICH_FIELDS, *SOFT_CAPS, "rope_parameters", "rope_scaling"}
    plain = {k: v for k, v in raw.items() if k not in ours}  # read here, not by the decoder's
    plain.setdefault("tie_word_embeddings", True)
    refuse_unimplemented(plain, where, PLAIN_FIELDS)
    base = read_hf(plain, where)
    try:
        config = LocalGlobalConfig(
            **base.fields(),
            sliding_layers=tuple(t == "sliding_attention" for t in types),
            query_pre_attn_scalar=float(raw["query_pre_attn_scalar"]),
            attn_logit_softcapping=float(raw.get("attn_logit_softcapping") or 0.0),
            final_logit_softcapping=float(raw.get("final_logit_softcapping") or 0.0),
        )
    except (TypeError, ValueError) as err:
        raise BuildError(f"{where}: config.json has a malformed value ({err})") from None
    if len(config.sliding_layers) != config.num_hidden_layers:
        raise BuildError(
            f"{where}: config field layer_types has {len(types)} entries for {layers} layers"
        )
    # One rope for every layer, read as any family's flat rope settings.
    rope = rope_from_hf(raw, config.head_dim, where)
    return dataclasses.replace(config, rope=rope)


def config_from_gguf(meta: GGUFMetadata, tensor_names: set[str]) -> LocalGlobalConfig:
    return gguf_local_global_config(
        meta,
        tensor_names,
        "gemma2",
        global_every=2,
        local_theta=None,
        qk_norm=False,
        wide_depth=GGUF_27B_LAYERS,
    )
