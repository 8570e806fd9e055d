"""The gemma2 network, composed of the decoder's blocks."""

from __future__ import annotations

from ..decoder.compositions import SandwichGeGLU


class Gemma2ForCausalLM(SandwichGeGLU):
    """Gemma's sandwich-norm layers (decoder/compositions.py) with one rope, no q/k norms,
    and soft caps on the attention scores and the logits."""
