"""The gemma3 network, composed of the decoder's blocks."""

from __future__ import annotations

from ..decoder.compositions import SandwichGeGLU


class Gemma3ForCausalLM(SandwichGeGLU):
    """Gemma's sandwich-norm layers (decoder/compositions.py) with an RMSNorm over each
    query and key head, and the local layers' own rope."""
