"""The qwen3 network, composed of the decoder's blocks."""

from __future__ import annotations

from ..decoder.compositions import PreNormSwiGLU


class Qwen3ForCausalLM(PreNormSwiGLU):
    """Pre-norm layers with grouped-query attention (an RMSNorm over each query and key head
    before rope) and a SwiGLU MLP (decoder/compositions.py)."""
