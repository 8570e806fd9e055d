"""A build in Chromium against transformers on the same prompt: last-position logits within
relative error 1e-3 and greedy tokens equal, on each backend."""

from __future__ import annotations

import numpy as np
import torch

TOLERANCE = 1e-3
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


def assert_close(ours: tuple, expected: tuple, where: str = "") -> None:
    """(logits, tokens) pairs: logits within TOLERANCE (relative), tokens equal."""
    error = np.linalg.norm(ours[0] - expected[0]) / np.linalg.norm(expected[0])
    assert error < TOLERANCE, f"{where} relative error {error}"
    assert ours[1] == expected[1], where


def assert_backends_close(engine_page, folder, prompt: list[int], expected: tuple, steps: int):
    """The build at `folder` gives `expected` (logits, greedy tokens) on every backend."""
    for backend in BACKENDS:
        with engine_page(folder, backend=backend) as page:
            assert page.evaluate("async () => (await engine.runtimeStats()).backend") == backend
            assert_close(page_logits_and_greedy(page, prompt, steps), expected, backend)
