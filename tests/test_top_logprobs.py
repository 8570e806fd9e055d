"""Log probabilities on the device (compiler/top_logprobs.py's logprobs, run in the same
submission as the step and its pick): the kernels of every target give, from the same logits,
the JS path's log probabilities (web/src/engine/logits.js `logSoftmax` and `topK`, which the
runtime uses where it reads the logits back) and the same most likely tokens; a request that
asks for logprobs then reads back 168 bytes a token, not the vocabulary's logits.

The ids are exact (an order of the float32 logits); the values differ by the rounding of the
kernels' float32 log partition against JS's float64 one: the relative error of the sum of the
weights (tests/test_device_sampling.py `sum_error`), an absolute error of its logarithm, and
half an ulp for each of the two float32 operations after it (the largest logit plus that
logarithm, a logit less their sum)."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from kernel_page import as_text, f32, i32, run_kernel
from test_device_sampling import sample_rows, sum_error
from test_greedy_on_device import SHORT, add_js_engine, generate, open_variant

from compiler.targets import TARGETS
from compiler.targets.webgpu import WEBGPU, build_kernels, kernel_entry
from compiler.top_logprobs import OUT, TOP, logprobs_func

LOGITS = Path(__file__).resolve().parent.parent / "web" / "src" / "engine" / "logits.js"

# Each case: a row and a token picked from it; out come the JS path's logprobs of both.
JS_LOGPROBS = """
import { logSoftmax, topK } from %s;
let text = "";
for await (const chunk of process.stdin) text += chunk;
const input = JSON.parse(text);
const out = input.cases.map(([row, token]) => {
  const lp = logSoftmax(Float32Array.from(input.rows[row], Number));
  const top = topK(lp, %d).filter((id) => Number.isFinite(lp[id]));
  return { logprob: lp[token], ids: top, values: top.map((id) => lp[id]) };
});
process.stdout.write(JSON.stringify(out));
"""


def js_logprobs(rows: list[np.ndarray], cases: list) -> list[dict]:
    script = JS_LOGPROBS % (json.dumps(LOGITS.as_uri()), TOP)
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps({"rows": [as_text(row) for row in rows], "cases": cases}),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


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
def test_cpu_kernel_gives_the_js_logprobs(vocab):
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
    assert_agree(found, js_logprobs(rows, cases), rows, cases)


def test_webgpu_kernel_gives_the_js_logprobs(tiny_built, engine_page):
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
    assert_agree(found, js_logprobs(rows, cases), rows, cases)


@pytest.mark.parametrize("variant", ["software", "wasm"])
def test_logprobs_picked_on_the_device_equal_the_js_path(tiny_built, engine_page, variant):
    """Greedy, and seeded sampled with penalties and a bias: the device's tokens and logprobs
    equal those of an engine that reads the logits back (the same ids; values within the
    module docstring's bound, the tiny build's logits within +-64), 168 bytes a token read."""
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
            for mine, theirs in zip(device["logprobs"], js["logprobs"], strict=True):
                assert mine["id"] == theirs["id"]
                assert [t["id"] for t in mine["top"]] == [t["id"] for t in theirs["top"]]
                assert len(mine["top"]) == extra.get("top_logprobs", 0)
                values = np.array([theirs["logprob"]] + [t["logprob"] for t in theirs["top"]])
                found = np.array([mine["logprob"]] + [t["logprob"] for t in mine["top"]])
                np.testing.assert_array_less(np.abs(found - values), tolerance(vocab, 64.0, values))
