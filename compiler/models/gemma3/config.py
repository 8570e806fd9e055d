"""The gemma3 family's config reader: config.json (`Gemma3TextConfig`) and `gemma3` GGUF
metadata -> a local/global decoder config: the local layers' pattern and rope base, q/k norms,
the attention score scale, and the soft caps where a config has them."""

from __future__ import annotations

from typing import Any

from ...errors import BuildError
from ...gguf_metadata import GGUFMetadata
from ..decoder import PLAIN_FIELDS, LocalGlobalConfig, read_hf, refuse_unimplemented
from ..decoder.config import SANDWICH_FIELDS, SOFT_CAPS
from ..decoder.gguf import gguf_local_global_config
from ..decoder.rope import Rope, rope_from_parameters

# What llama.cpp assumes of every gemma3 GGUF (the file does not say): one global layer after
# five local ones, and the local layers' rope base; it tells the 27B model by its depth.
GGUF_GLOBAL_EVERY = 6
GGUF_LOCAL_THETA = 10000.0
GGUF_27B_LAYERS = 62


def config_from_hf(raw: dict[str, Any], where: str) -> LocalGlobalConfig:
    refuse_unimplemented(raw, where, SANDWICH_FIELDS)
    layers = int(raw.get("num_hidden_layers", 0))
    types = raw.get("layer_types") or [
        "full_attention"
        if (i + 1) % int(raw.get("sliding_window_pattern", 6)) == 0
        else "sliding_attention"
        for i in range(layers)
    ]
    ours = {*SANDWICH_FIELDS, *SOFT_CAPS, "rope_parameters", "rope_scaling"}
    plain = {k: v for k, v in raw.items() if k not in ours}  # read here, not by the decoder's
    plain.setdefault("tie_word_embeddings", True)
    refuse_unimplemented(plain, where, PLAIN_FIELDS)
    base = read_hf(plain, where)
    global_rope, local_rope = gemma_ropes(raw, base.head_dim, where)
    try:
        config = LocalGlobalConfig(
            **{**base.fields(), "rope": global_rope, "qk_norm": True},
            rope_local=local_rope,
            sliding_layers=tuple(t == "sliding_attention" for t in types),
            query_pre_attn_scalar=float(raw.get("query_pre_attn_scalar", base.head_dim)),
            attn_logit_softcapping=float(raw.get("attn_logit_softcapping") or 0.0),
            final_logit_softcapping=float(raw.get("final_logit_softcapping") or 0.0),
        )
    except (TypeError, ValueError) as err:
        raise BuildError(f"{where}: config.json has a malformed value ({err})") from None
    if len(config.sliding_layers) != config.num_hidden_layers:
        raise BuildError(
            f"{where}: config field layer_types has {len(types)} entries for {layers} layers"
        )
    return config


def config_from_gguf(meta: GGUFMetadata, tensor_names: set[str]) -> LocalGlobalConfig:
    return gguf_local_global_config(
        meta,
        tensor_names,
        "gemma3",
        global_every=GGUF_GLOBAL_EVERY,
        local_theta=GGUF_LOCAL_THETA,
        qk_norm=True,
        wide_depth=GGUF_27B_LAYERS,
    )


def gemma_ropes(raw: dict[str, Any], head_dim: int, where: str) -> tuple[Rope, Rope]:
    """The global and local layers' ropes, read as transformers 5 reads a Gemma 3 config:
    `rope_parameters` nested by layer type, an older `rope_scaling` applying to the global
    layers, `rope_theta` and `rope_local_base_freq` as the bases where the dicts lack them."""
    params = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise BuildError(f"{where}: config field rope_parameters={params!r} is malformed")
    bases = {"full_attention": raw.get("rope_theta") or 1000000.0}
    bases["sliding_attention"] = raw.get("rope_local_base_freq") or 10000.0
    ropes = []
    for kind, theta in bases.items():
        layer = params.get(kind) or {"rope_type": "default"}
        if not isinstance(layer, dict):
            raise BuildError(f"{where}: config field rope_parameters.{kind}={layer!r} is malformed")
        layer = {**layer, **scaling} if kind == "full_attention" else dict(layer)
        layer.setdefault("rope_theta", theta)
        if raw.get("partial_rotary_factor") is not None:
            layer.setdefault("partial_rotary_factor", raw["partial_rotary_factor"])
        field = f"rope_parameters.{kind}"
        ropes.append(rope_from_parameters(layer, raw, head_dim, where, field))
    return ropes[0], ropes[1]
