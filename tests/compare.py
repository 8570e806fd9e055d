"""A build in Chromium against transformers on the same prompt, on each backend: greedy tokens
equal, and last-position log-probabilities within 1e-4 of transformers' for float32 builds
(float32 on both sides, the same weights: what is left is rounding) or logits within relative
error 1e-3 where the two sides hold different numbers (a quantized build against its float64
numpy reference)."""

from __future__ import annotations

import numpy as np
import torch

TOLERANCE = 1e-3
# Float32 builds agree with transformers to about 1e-5 on the CPU backend; the bound leaves
# room for the summation orders of GPU kernels, not for an inexact function (WGSL's sin and
# cos, off by up to 2e-4, gave 1e-3 to 4e-3 here).
LOGPROB_TOLERANCE = 1e-4
# Where the numerical tests run a build: WebGPU (the kernels the adapter picks) and the CPU
# backend (the build's WebAssembly kernels).
BACKENDS = ("webgpu", "wasm")


def transformers_logits_and_greedy(model, prompt: list[int], steps: int):
    """transformers' last-position logits for `prompt` and its `steps` greedy tokens."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].numpy()
        tokens = model.generate(
            torch.tensor([prompt]), max_new_tokens=steps, do_sample=False, eos_token_id=None
        )[0, len(prompt) :].tolist()
    return logits, tokens


def page_logits_and_greedy(page, prompt: list[int], steps: int):
    """The same from the engine in a page (end-of-sequence ignored)."""
    logits = page.evaluate("async (p) => [...await engine.forwardLogits(p)]", prompt)
    tokens = page.evaluate(
        """async ([p, n]) => (await engine.generate(
            p, {temperature: 0, max_tokens: n, ignore_eos: true})).tokens""",
        [prompt, steps],
    )
    return np.array(logits), tokens


def logprob_error(ours: np.ndarray, expected: np.ndarray) -> float:
    """The largest difference of a log-probability between two rows of logits."""

    def logprobs(logits: np.ndarray) -> np.ndarray:
        logits = logits.astype(np.float64)
        top = logits.max()
        return logits - top - np.log(np.exp(logits - top).sum())

    return float(np.abs(logprobs(ours) - logprobs(expected)).max())


def assert_close(ours: tuple, expected: tuple, where: str = "", exact: bool = False) -> None:
    """(logits, tokens) pairs: tokens equal; log-probabilities within LOGPROB_TOLERANCE if
    `exact` (a float32 build against transformers), else logits within TOLERANCE (relative)."""
    if exact:
        error = logprob_error(ours[0], expected[0])
        assert error < LOGPROB_TOLERANCE, f"{where} log-probabilities differ by {error}"
    else:
        error = np.linalg.norm(ours[0] - expected[0]) / np.linalg.norm(expected[0])
        assert error < TOLERANCE, f"{where} relative error {error}"
    assert ours[1] == expected[1], where


def assert_backends_close(
    engine_page, folder, prompt: list[int], expected: tuple, steps: int, exact: bool = False
):
    """The build at `folder` gives `expected` (logits, greedy tokens) on every backend."""
    for backend in BACKENDS:
        with engine_page(folder, backend=backend) as page:
            assert page.evaluate("async () => (await engine.runtimeStats()).backend") == backend
            ours = page_logits_and_greedy(page, prompt, steps)
            assert_close(ours, expected, backend, exact)
