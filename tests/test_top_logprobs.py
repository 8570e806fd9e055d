"""Log probabilities on the device (compiler/top_logprobs.py's logprobs, run in the same
submission as the step and its pick): the kernels of every target give, from the same logits,
the log probabilities and the most likely tokens of a float64 numpy reference (the rule of the
JS path, web/src/engine/logits.js `logSoftmax` and `topK`: the finite logits, the lowest id
first among equal ones), and a request on the device gives those the JS path gives from the
logits it reads back; it reads back 168 bytes a token, not the vocabulary's logits.

The ids are exact (an order of the float32 logits); the values differ by the rounding of the
kernels' float32 log partition against a float64 one: the relative error of the sum of the
weights (tests/test_device_sampling.py `sum_error`), an absolute error of its logarithm, and
half an ulp for each of the two float32 operations after it (the largest logit plus that
logarithm, a logit less their sum)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import tvm
from kernel_page import f32, i32, run_kernel
from test_device_sampling import sample_rows, sum_error
from test_greedy_on_device import SHORT, add_js_engine, generate, open_variant

from compiler.targets import TARGETS
from compiler.targets.webgpu import WEBGPU, build_kernels, kernel_entry
from compiler.top_logprobs import OUT, TOP, logprobs_func


def reference_logprobs(rows: list[np.ndarray], cases: list) -> list[dict]:
    """Each case's (a row, a token) log probabilities in float64: the token's, and the TOP
    likeliest finite logits' (ids in order of logit, the lowest first among equal ones)."""
    out = []
    for r, token in cases:
        x = rows[r].astype(np.float64)
        finite = np.flatnonzero(np.isfinite(x))
        largest = x[finite].max()
        log_partition = largest + np.log(np.exp(x[finite] - largest).sum())
        ids = finite[np.lexsort((finite, -x[finite]))][:TOP].tolist()
        values = (x[ids] - log_partition).tolist()
        out.append({"logprob": x[token] - log_partition, "ids": ids, "values": values})
    return out


def logprob_rows(vocab: int) -> list[np.ndarray]:
    """sample_rows (spread, flat, tied, clustered, masked but three, signed zeros), and one
    with more equal maxima than TOP, across chunks: the lowest ids among them are kept."""
    rows = sample_rows(vocab)
    tied = rows[0].copy()
    tied[np.linspace(0, vocab - 1, TOP + 10).astype(int)] = 20.0
    rows.append(tied)
    return rows


def logprob_cases(rows: list[np.ndarray]) -> list:
    """Each row with its largest logit's token, and with another finite one."""
    cases = []
    for r, row in enumerate(rows):
        finite = np.flatnonzero(np.isfinite(row))
        cases += [[r, int(np.argmax(row))], [r, int(finite[len(finite) // 2])]]
    return cases


def tolerance(vocab: int, largest: float, values: np.ndarray) -> np.ndarray:
    """The module docstring's bound on each value's difference from JS's."""
    log_partition = abs(largest) + math.log(vocab)
    return sum_error(vocab) + 2.0**-24 * (log_partition + np.abs(values) + 8)


def assert_agree(found: list, expected: list[dict], rows: list[np.ndarray], cases: list):
    for out, js, (r, _token) in zip(found, expected, cases, strict=True):
        out = np.array([float(v) for v in out], np.float64)
        assert len(out) == OUT
        vocab = len(rows[r])
        largest = float(np.max(rows[r][np.isfinite(rows[r])]))
        ids = out[1 + TOP :]
        kept = int((ids >= 0).sum())
        assert ids[:kept].astype(int).tolist() == js["ids"]
        assert (ids[kept:] == -1).all()
        values = np.array(js["values"], np.float64)
        np.testing.assert_array_less(
            np.abs(out[1 : 1 + kept] - values), tolerance(vocab, largest, values)
        )
        mine = np.array([js["logprob"]])
        assert abs(out[0] - js["logprob"]) < tolerance(vocab, largest, mine)[0]


@pytest.mark.parametrize("vocab", [1000, 49152 + 3])
def test_cpu_kernel_gives_the_reference_logprobs(vocab):
    # The wasm target's kernel (plain loops) compiled for this machine's CPU.
    func = logprobs_func(vocab, TARGETS["wasm"]).with_attr("global_symbol", "logprobs")
    lib = tvm.tirx.build(tvm.IRModule({"logprobs": func}), target="llvm")
    rows = logprob_rows(vocab)
    cases = logprob_cases(rows)
    found = []
    out = tvm.runtime.tensor(np.zeros(OUT, np.float32))
    for r, token in cases:
        logits = tvm.runtime.tensor(rows[r][None, None])
        lib["logprobs"](logits, tvm.runtime.tensor(np.array([token], np.int32)), out)
        found.append(out.numpy().tolist())
    assert_agree(found, reference_logprobs(rows, cases), rows, cases)


def test_webgpu_kernel_gives_the_reference_logprobs(tiny_built, engine_page):
    """SmolLM2's vocabulary (and 3): chunks of 193 tokens, on the software adapter. The tiny
    build's plans bind the kernel to the logits and the picked token."""
    folder = tiny_built("q4f32")
    manifest = json.loads((folder / "manifest.json").read_text())
    for variant in ("software", "gpu"):
        (launch,) = manifest["variants"][variant]["functions"]["logprobs"]["launches"]
        assert launch["grid"] == [1, 1, 1]
        assert sorted(ref.get("input", "out") for ref in launch["buffers"]) == [
            "logits",
            "out",
            "token",
        ]
    vocab = 49152 + 3
    func = logprobs_func(vocab, TARGETS["gpu"]).with_attr("global_symbol", "logprobs")
    wgsl, _, _ = build_kernels(tvm.IRModule({"logprobs": func}), WEBGPU)
    (name,) = wgsl
    kernel = {**kernel_entry(wgsl[name]), "name": name}
    # The buffers in binding order, as the WGSL declares them (NAME_ptr).
    order = re.findall(r"@binding\(\d+\) var<storage, [a-z_]+> (\w+)_ptr", wgsl[name])
    assert sorted(order) == ["logits", "out", "token"]
    rows = logprob_rows(vocab)
    cases = logprob_cases(rows)
    data = {f"row{r}": f32(row) for r, row in enumerate(rows)}
    data |= {f"token{j}": i32([token]) for j, (_, token) in enumerate(cases)}
    data["out"] = f32(np.zeros(OUT))
    runs = [
        {
            "bind": {"logits": f"row{r}", "token": f"token{j}", "out": "out"},
            "pods": [0] * len(kernel["pods"]),
            "groups": 1,
            "count": OUT,
        }
        for j, (r, _) in enumerate(cases)
    ]
    with engine_page(folder, "software") as page:
        found = run_kernel(page, kernel, order, data, runs)
    assert_agree(found, reference_logprobs(rows, cases), rows, cases)


# The largest magnitude of the logits after each of `prefixes` (the JS engine's, read back).
LARGEST = """async (prefixes) => {
    let largest = 0;
    for (const ids of prefixes)
        for (const x of await jsEngine.forwardLogits(ids)) largest = Math.max(largest, Math.abs(x));
    return largest;
}"""


@pytest.mark.parametrize("variant", ["software", "wasm"])
def test_logprobs_picked_on_the_device_equal_the_js_path(tiny_built, engine_page, variant):
    """Greedy, and seeded sampled with penalties and a bias: the device's tokens and logprobs
    equal those of an engine that reads the logits back (the same ids; values within the
    module docstring's bound, for the largest logit of the steps as edited: the steps' logits
    at most 1.3 times larger in magnitude under the repetition penalty, then 2 more under the
    bias), 168 bytes a token read."""
    folder = tiny_built("q4f32")
    vocab = json.loads((folder / "manifest.json").read_text())["config"]["vocab_size"]
    sampled = {"temperature": 1.2, "top_p": 0.9, "seed": 7, "repetition_penalty": 1.3}
    requests = [
        {"logprobs": True, "top_logprobs": 5},
        {"logprobs": True, "top_logprobs": TOP, **sampled, "logit_bias": {"9": 2}},
        {"logprobs": True, **sampled},
    ]
    count = 12
    with open_variant(engine_page, folder, variant) as page:
        add_js_engine(page)
        for extra in requests:
            device = generate(page, SHORT, count, extra)
            js = generate(page, SHORT, count, extra, engine="jsEngine")
            assert device["tokens"] == js["tokens"] and len(device["tokens"]) == count
            # One prefill chunk and count - 1 steps, each its token and 41 floats.
            assert device["bytes"] == 4 * (2 + 2 * TOP) * count
            assert js["bytes"] == 4 * vocab * count
            prefixes = [SHORT + device["tokens"][:i] for i in range(count)]
            largest = 1.3 * page.evaluate(LARGEST, prefixes) + 2
            for mine, theirs in zip(device["logprobs"], js["logprobs"], strict=True):
                assert mine["id"] == theirs["id"]
                assert [t["id"] for t in mine["top"]] == [t["id"] for t in theirs["top"]]
                assert len(mine["top"]) == extra.get("top_logprobs", 0)
                values = np.array([theirs["logprob"]] + [t["logprob"] for t in theirs["top"]])
                found = np.array([mine["logprob"]] + [t["logprob"] for t in mine["top"]])
                np.testing.assert_array_less(
                    np.abs(found - values), tolerance(vocab, largest, values)
                )
