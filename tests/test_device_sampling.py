"""A sampled token drawn on the device (compiler/sampling.py's sample, run in the same
submission as the step that made the logits): the kernels of every target pick, from the same
logits and the same float32 parameters (u included), the token the JS sampler picks
(web/src/engine/sampler.js `pick`, which the runtime uses where it reads the logits back).

The rule is exact but for sums: which tokens are candidates, the top_k threshold and the
walk's order do not depend on rounding; a top_p threshold or the walk's end do, where the
kernels' float32 sums (of a chunk's weights, then of the chunks' in order: at most
chunk + 256 roundings, and a few ulps of exp) and JS's float64 ones fall on either side of a
token. So a case counts where the JS pick stays the same with u and top_p moved by that
relative error either way; nearly every case does, and there the kernels agree to the
token."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from kernel_page import as_text, f32, i32, run_kernel
from test_greedy_on_device import PROMPT, SHORT, add_js_engine, open_variant

from compiler.sampling import sample_func
from compiler.targets import TARGETS
from compiler.targets.webgpu import WEBGPU, build_kernels, kernel_entry

SAMPLER = Path(__file__).resolve().parent.parent / "web" / "src" / "engine" / "sampler.js"

# Each case: its row's index, the request's fields and the random number its draw takes.
# JS draws the parameters (drawParams) and picks (pick); out come both.
JS_PICKS = """
import { drawParams, pick } from %s;
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const rows = input.rows.map((row) => Float32Array.from(row, Number));
const out = input.cases.map(([row, fields, u]) => {
  const params = drawParams(fields, rows[row].length, () => u);
  const token = pick(rows[row], params);
  // The picks with u, then top_p, moved by the sums' relative error either way.
  const most = [0, 1, 0, 1 - 2 ** -24]; // top_p's and u's largest
  const moved = (i, f) =>
    Float32Array.from(params, (v, j) => (j === i ? Math.min(v * f, most[i]) : v));
  const scales = [1 - input.error, 1 + input.error];
  const [low, high] = scales.map((f) => pick(rows[row], moved(3, f)));
  const unmoved = params[1] === 1 || scales.every((f) => pick(rows[row], moved(1, f)) === token);
  const sharp = unmoved && low === token && high === token;
  return { params: Array.from(params), token, sharp, low, high, unmoved };
});
process.stdout.write(JSON.stringify(out));
"""


def sum_error(vocab: int) -> float:
    """The relative error a kernel's float32 mass may carry: a rounding an addition (a chunk's
    weights, then the chunks'), and 8 ulps for exp and the parameters."""
    return (-(-vocab // 256) + 256 + 8) * 2.0**-24


def js_picks(rows: list[np.ndarray], cases: list) -> list[dict]:
    script = JS_PICKS % json.dumps(SAMPLER.as_uri())
    script = 'import { createRequire } from "node:module";\n' + (
        "const require = createRequire(import.meta.url);\n" + script
    )
    as_lists = [as_text(row) for row in rows]
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps({"rows": as_lists, "cases": cases, "error": sum_error(len(rows[0]))}),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def sample_rows(vocab: int) -> list[np.ndarray]:
    """Rows of logits: spread as a model's, flat, tied at the top and within a top_k, the
    likeliest clustered at the low ids, masked all but a few (a grammar's), and one whose
    largest are zeros of both signs."""
    rng = np.random.default_rng(0)
    rows = [(rng.standard_normal(vocab) * 3).astype(np.float32)]
    rows.append((rng.standard_normal(vocab) * 0.2).astype(np.float32))
    tied = rows[0].copy()
    tied[[2, vocab // 3, vocab - 1]] = 12.0  # three equal maxima, far from the rest
    tied[[5, 6, 7, 8]] = 10.0  # four equal runners-up: a top_k of 5 keeps all of them
    rows.append(tied)
    clustered = rows[0].copy()  # the likeliest among the first ids, as frequent tokens are
    clustered[: min(300, vocab // 3)] += 6.0
    rows.append(clustered)
    masked = np.full(vocab, -np.inf, np.float32)
    masked[[1, vocab // 2, vocab - 3]] = [0.5, 2.0, 1.0]
    rows.append(masked)
    zeros = np.full(vocab, -np.inf, np.float32)
    zeros[[0, 3, 10, 11, vocab - 2, vocab - 1]] = [-0.0, 0.0, -0.0, 0.0, -0.0, -1.0]
    rows.append(zeros)
    return rows


def sample_cases(rows: list[np.ndarray], vocab: int) -> list:
    rng = np.random.default_rng(1)
    limits = [(1, 0), (0.9, 0), (0.5, 0), (0, 0), (1, 5), (0.8, 40), (0.95, vocab - 1), (1, 10**6)]
    cases = []
    for row in range(len(rows)):
        for temperature in (0.7, 1.0, 1.6):
            for top_p, top_k in limits:
                for u in (0.0, 0.5, 1 - 2**-24, float(rng.random())):
                    fields = {"temperature": temperature, "top_p": top_p, "top_k": top_k}
                    cases.append([row, fields, u])
    return cases


@pytest.mark.parametrize("vocab", [1000, 49152 + 3])
def test_cpu_kernel_picks_the_js_samplers_token(vocab):
    # The wasm target's kernel (loops over the candidates) compiled for this machine's CPU.
    func = sample_func(vocab, TARGETS["wasm"]).with_attr("global_symbol", "sample")
    lib = tvm.tirx.build(tvm.IRModule({"sample": func}), target="llvm")
    rows = sample_rows(vocab)
    cases = sample_cases(rows, vocab)
    expected = js_picks(rows, cases)
    found = []
    out = tvm.runtime.tensor(np.zeros(1, np.int32))
    for (row, _, _), js in zip(cases, expected, strict=True):
        params = tvm.runtime.tensor(np.array(js["params"], np.float32))
        lib["sample"](tvm.runtime.tensor(rows[row][None, None]), params, out)
        found.append(int(out.numpy()[0]))
    assert_agree(found, expected, cases)


def assert_agree(found: list[int], expected: list[dict], cases: list) -> None:
    """Where the JS pick is sharp, the kernel's is the same token; where only u's move changes
    it, the kernel's lies between the two moved picks (the walk goes in index order)."""
    sharp = [js["sharp"] for js in expected]
    assert sum(sharp) >= 0.8 * len(sharp)
    assert [t for t, s in zip(found, sharp, strict=True) if s] == [
        js["token"] for js in expected if js["sharp"]
    ]
    for token, js in zip(found, expected, strict=True):
        if js["unmoved"]:
            assert js["low"] <= token <= js["high"]
    # The cases draw many tokens: each row more than one.
    assert len({(case[0], token) for case, token in zip(cases, found, strict=True)}) > 20


def gpu_picks(page, kernel: dict, order: list[str], rows: list, expected: list, cases: list):
    """The tokens a WebGPU sample kernel picks for the cases, from the JS sampler's parameters:
    one workgroup a case."""
    data = {f"row{i}": f32(row) for i, row in enumerate(rows)}
    data.update({f"case{j}": f32(js["params"]) for j, js in enumerate(expected)})
    data["out"] = i32([0])
    runs = [
        {
            "bind": {"logits": f"row{case[0]}", "sampling": f"case{j}", "out": "out"},
            "pods": [0] * len(kernel["pods"]),
            "groups": 1,
            "count": 1,
        }
        for j, case in enumerate(cases)
    ]
    return [out[0] for out in run_kernel(page, kernel, order, data, runs)]


@pytest.mark.parametrize("variant", ["software", "gpu"])
def test_webgpu_kernel_picks_the_js_samplers_token(tiny_built, engine_page, variant):
    folder = tiny_built("q4f32")
    manifest = json.loads((folder / "manifest.json").read_text())
    vocab = manifest["config"]["vocab_size"]
    (launch,) = manifest["variants"][variant]["functions"]["sample"]["launches"]
    assert launch["grid"] == [1, 1, 1]
    order = [ref.get("input", "out") for ref in launch["buffers"]]
    assert sorted(order) == ["logits", "out", "sampling"]
    kernel = json.loads((folder / f"kernels-{variant}.json").read_text())[launch["kernel"]]
    rows = sample_rows(vocab)
    cases = sample_cases(rows, vocab)
    expected = js_picks(rows, cases)
    with engine_page(folder, variant) as page:
        kernel = {**kernel, "name": launch["kernel"]}
        found = gpu_picks(page, kernel, order, rows, expected, cases)
    assert_agree(found, expected, cases)


# A seeded sampled completion of token ids: its choices' texts and ends, and the bytes read
# back meanwhile (the KV cache emptied first), from the page's `engine` or `jsEngine`.
COMPLETE = """async ([request, name]) => {
    const engine = window[name];
    const read = async () => (await engine.runtimeStats()).readback_bytes;
    await engine.resetChat();
    const before = await read();
    const r = await engine.completions.create(request);
    const choices = r.choices.map((c) => [c.text, c.finish_reason]);
    return {choices, bytes: (await read()) - before};
}"""


@pytest.mark.parametrize("variant", ["software", "gpu", "wasm"])
def test_seeded_sampling_on_the_device_equals_the_js_path(tiny_built, engine_page, variant):
    """A seeded sampled request with nothing that reads the logits draws its tokens on the
    device, reading back 4 bytes a token; an engine that reads the logits back to JS, where
    the JS sampler draws from the same random numbers, makes the same choices, including a stop
    string's (on WebGPU a step queued past it is discarded and its random number put back, so
    that the next choice draws as the JS path's does)."""
    folder = tiny_built("q4f32")
    vocab = json.loads((folder / "manifest.json").read_text())["config"]["vocab_size"]
    sampled = {"temperature": 1.3, "top_p": 0.9, "top_k": 40, "seed": 3, "ignore_eos": True}
    with open_variant(engine_page, folder, variant) as page:
        add_js_engine(page)

        def complete(prompt, engine="engine", **fields):
            return page.evaluate(COMPLETE, [{"prompt": prompt, **sampled, **fields}, engine])

        device = complete(SHORT, max_tokens=16, n=2)
        js = complete(SHORT, "jsEngine", max_tokens=16, n=2)
        assert device["choices"] == js["choices"]
        assert device["choices"][0] != device["choices"][1]
        # Each choice one prefill chunk (the second's prompt cached but its last token) and 15
        # steps: 4 bytes each, where the logits path reads the vocabulary's floats each.
        assert device["bytes"] == 2 * 16 * 4
        assert js["bytes"] == 2 * 16 * 4 * vocab
        text = complete(PROMPT, max_tokens=24)["choices"][0][0]
        stop = text[len(text) // 2 :][:2]
        assert stop.strip()
        device = complete(PROMPT, max_tokens=24, n=3, stop=[stop])
        js = complete(PROMPT, "jsEngine", max_tokens=24, n=3, stop=[stop])
        assert device["choices"] == js["choices"]
        assert device["choices"][0][1] == "stop"


def test_webgpu_kernel_picks_the_js_samplers_token_at_a_large_vocabulary(tiny_built, engine_page):
    """SmolLM2's vocabulary (and 3): chunks of 193 tokens, where a truncated draw's elements
    at or above its lower bound fit the slots (a spread row under top_k or top_p) or do not (a
    flat one: the passes then scan the chunks)."""
    vocab = 49152 + 3
    func = sample_func(vocab, TARGETS["gpu"]).with_attr("global_symbol", "sample")
    wgsl, _, _ = build_kernels(tvm.IRModule({"sample": func}), WEBGPU)
    (name,) = wgsl
    kernel = {**kernel_entry(wgsl[name]), "name": name}
    # The buffers in binding order, as the WGSL declares them (NAME_ptr).
    order = re.findall(r"@binding\(\d+\) var<storage, [a-z_]+> (\w+)_ptr", wgsl[name])
    assert sorted(order) == ["logits", "out", "sampling"]
    rows = sample_rows(vocab)
    cases = sample_cases(rows, vocab)
    expected = js_picks(rows, cases)
    with engine_page(tiny_built("q4f32"), "software") as page:
        found = gpu_picks(page, kernel, order, rows, expected, cases)
    assert_agree(found, expected, cases)
