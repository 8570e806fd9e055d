"""The llama network, composed of the decoder's blocks."""

from __future__ import annotations

from ..decoder.compositions import PreNormSwiGLU


class LlamaForCausalLM(PreNormSwiGLU):
    """Pre-norm layers with grouped-query attention (rope, an optional sliding window and
    biases) and a SwiGLU MLP (decoder/compositions.py)."""
