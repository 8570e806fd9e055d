"""The blocks decoder families compose, and what their readers share.

- `config.py`: the decoder's config (`DecoderConfig`, and `LocalGlobalConfig` for layers that
  differ), read from config.json's common fields; refusing fields a network does not implement.
- `rope.py`: rotary embeddings, a registry of rope types, and the tables of cos and sin.
- `attention.py`, `blocks.py`, `norms.py`: attention with its variants, gated MLPs, the layers'
  norm placements, the norms.
- `causal_lm.py`: the causal LM (embedding, layers, final norm, head, logits; prefill and decode
  over a KV cache) that a family's network subclasses, giving its layers.
- `compositions.py`: the layer stacks families are made of (`PreNormSwiGLU`, `SandwichGeGLU`).
- `weights.py`, `gguf.py`: Hugging Face tensors -> the network's weights (fused projections),
  and GGUF files -> Hugging Face names, layout and config.
"""

from .attention import Attention
from .blocks import MLP, PreNormLayer, SandwichNormLayer, soft_cap
from .causal_lm import CausalLM
from .config import PLAIN_FIELDS, DecoderConfig, LocalGlobalConfig, read_hf, refuse_unimplemented
from .rope import Rope

__all__ = [
    "MLP",
    "PLAIN_FIELDS",
    "Attention",
    "CausalLM",
    "DecoderConfig",
    "LocalGlobalConfig",
    "PreNormLayer",
    "Rope",
    "SandwichNormLayer",
    "read_hf",
    "refuse_unimplemented",
    "soft_cap",
]
