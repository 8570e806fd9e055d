"""Quantization schemes: what the build does to a model's weights, and the activation dtype
its kernels compute in. A scheme picks each weight's storage format (compiler/formats/); the
network code never branches on it.

- `as-stored` (the default for GGUF files): every tensor keeps its stored type (F32, F16,
  BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), carried losslessly and decoded in
  the kernels.
- `q4f32` / `q4f16`: 4-bit groups of 32 with a scale and minimum (GGUF Q4_0/Q4_1 blocks are
  carried over exactly; anything else is quantized again).
- `q8f32` / `q8f16`: 8-bit symmetric groups of 32.
- `q0f32` / `q0f16`: floats.

The f16 twins compute in float16 and need an adapter with `shader-f16`.
"""

from __future__ import annotations

import dataclasses

from .errors import BuildError
from .formats import STORED, Format, SourceTensor, StoredBlocks, get_format


@dataclasses.dataclass(frozen=True)
class Scheme:
    name: str
    dtype: str  # activations: float32 or float16
    weight_format: str | None  # every weight's format; None keeps each as it is stored

    @property
    def needs_f16(self) -> bool:
        return self.dtype == "float16"

    @property
    def requantizes(self) -> bool:
        return self.weight_format is not None

    def format_for(self, tensor: SourceTensor, name: str) -> Format:
        if self.weight_format is not None:
            return get_format(self.weight_format)
        if isinstance(tensor, StoredBlocks):
            if tensor.type_name not in STORED:
                supported = ", ".join(sorted(STORED))
                raise BuildError(
                    f"{name}: GGUF tensor type {tensor.type_name} cannot be kept as stored "
                    f"(supported: {supported}); build with --quantization q4f32 to convert it"
                )
            return get_format(STORED[tensor.type_name])
        return get_format("f32")


SCHEMES = {
    s.name: s
    for s in (
        Scheme("as-stored", "float32", None),
        Scheme("q0f32", "float32", "f32"),
        Scheme("q4f32", "float32", "q4f32"),
        Scheme("q8f32", "float32", "q8f32"),
        Scheme("q0f16", "float16", "f16-native"),
        Scheme("q4f16", "float16", "q4f16"),
        Scheme("q8f16", "float16", "q8f16"),
    )
}


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise BuildError(f"unknown quantization {name!r}; choose one of {', '.join(SCHEMES)}")
    return SCHEMES[name]
