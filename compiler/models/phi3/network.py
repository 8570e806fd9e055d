"""The phi3 network, composed of the decoder's blocks."""

from __future__ import annotations

from ..decoder.compositions import PreNormSwiGLU


class Phi3ForCausalLM(PreNormSwiGLU):
    """Pre-norm layers with grouped-query attention (rope on all or a part of each head, an
    optional sliding window) and a SwiGLU MLP, its projections fused as the checkpoints
    store them (decoder/compositions.py)."""
