"""The qwen2 network, composed of the decoder's blocks."""

from __future__ import annotations

from ..decoder.compositions import PreNormSwiGLU


class Qwen2ForCausalLM(PreNormSwiGLU):
    """Pre-norm layers with grouped-query attention (rope, biases on q, k and v) and a
    SwiGLU MLP (decoder/compositions.py)."""
