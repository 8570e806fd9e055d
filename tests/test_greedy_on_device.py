"""The greedy token picked on the device (compiler/sampling.py's argmax, run in the same
submission as the step that made the logits): equal, token for token, to the token the JS
sampler picks from the logits read back, on every kernel set; each greedy step reads back 4
bytes, not the vocabulary's logits. The kernels themselves (argmax, and argmax_rows for a
verify step's rows) are held to the JS sampler's tie rule (the lowest index among equal
maxima) on rows made to tie."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tvm
from kernel_page import f32, i32, run_kernel

from compiler.sampling import argmax_func
from compiler.targets import TARGETS

PROMPT = [5, 17, 42, 100, 7, 8, 9, 10, 11, 12, 13, 60, 61, 62, 63, 64, 65, 66, 67]
SHORT = PROMPT[:8]  # one prefill chunk of the tiny builds (prefill_chunk 8)

# Greedy tokens after `ids` and the bytes read back meanwhile, from the page's `engine` (or
# `jsEngine`: add_js_engine); `extra` request fields; the KV cache emptied first unless `keep`.
GENERATE = """async ([ids, n, extra, keep, name]) => {
    const engine = window[name];
    const read = async () => (await engine.runtimeStats()).readback_bytes;
    if (!keep) await engine.resetChat();
    const before = await read();
    const greedy = {temperature: 0, max_tokens: n, ignore_eos: true};
    const r = await engine.generate(ids, {...greedy, ...extra});
    return {tokens: r.tokens, text: r.text, finish: r.finish, logprobs: r.logprobs,
            bytes: (await read()) - before};
}"""


def generate(page, ids, count, extra=None, keep=False, engine="engine"):
    return page.evaluate(GENERATE, [ids, count, extra or {}, keep, engine])


# A second engine of the page's build, `jsEngine`, that reads every step's logits back and
# picks its token (and logprobs) in JS (devicePicks: false): the reference of the device's picks.
JS_ENGINE = """async () => {
    const [url, options] = engineArgs;
    window.jsEngine = await kiln.CreateEngine(url, {...options, devicePicks: false});
}"""


def add_js_engine(page):
    page.evaluate(JS_ENGINE)


def open_variant(engine_page, folder, variant):
    # Prompt-lookup speculation needs the logits in JS: off, so that every greedy step is the
    # device's (tests/test_speculation.py holds speculation to these steps).
    options = {"speculation": False}
    if variant == "wasm":
        return engine_page(folder, backend="wasm", options=options)
    return engine_page(folder, variant, options=options)


@pytest.mark.parametrize("variant", ["software", "gpu", "wasm"])
def test_device_argmax_equals_the_js_sampler(tiny_built, engine_page, variant):
    folder = tiny_built("q4f32")
    vocab = json.loads((folder / "manifest.json").read_text())["config"]["vocab_size"]
    with open_variant(engine_page, folder, variant) as page:
        add_js_engine(page)
        for prompt, count in ((PROMPT, 24), (SHORT, 16)):
            device = generate(page, prompt, count)
            js = generate(page, prompt, count, engine="jsEngine")
            assert device["tokens"] == js["tokens"]
            assert len(device["tokens"]) == count
        # One prefill chunk and count - 1 decode steps: 4 bytes each, where the logits path
        # reads the vocabulary's floats each.
        assert device["bytes"] == 4 * count
        assert js["bytes"] == 4 * vocab * count
        # Fields that shape the logits are applied there too (tests/test_logit_edits.py).
        biased = generate(page, SHORT, 4, {"logit_bias": {"3": 0.5}})
        assert biased["bytes"] == 4 * 4


@pytest.mark.parametrize("variant", ["software", "wasm"])
def test_a_stop_discards_the_step_past_it(tiny_built, engine_page, variant):
    """On WebGPU the step after the next is submitted before the next's token is read: a stop
    string ends the reply where the JS path ends it, and the KV cache keeps only the steps read
    (a follow-up that reuses the cached prefix continues as one run on an empty cache)."""
    with open_variant(engine_page, tiny_built("q4f32"), variant) as page:
        add_js_engine(page)
        full = generate(page, PROMPT, 24)
        middle = len(full["text"]) // 2
        stop = full["text"][middle : middle + 2]
        assert stop.strip()
        device = generate(page, PROMPT, 24, {"stop": [stop]})
        js = generate(page, PROMPT, 24, {"stop": [stop]}, engine="jsEngine")
        assert (device["tokens"], device["text"], device["finish"]) == (
            js["tokens"],
            js["text"],
            "stop",
        )
        assert len(device["tokens"]) < 24
        follow_up = PROMPT + device["tokens"] + [5, 6, 7]
        generate(page, PROMPT, 24, {"stop": [stop]})  # the cache as the stop leaves it
        reused = generate(page, follow_up, 8, keep=True)
        fresh = generate(page, follow_up, 8)
        assert reused["tokens"] == fresh["tokens"]
        # The follow-up prefilled only its new tokens: one chunk, 4 bytes, and 7 steps.
        assert reused["bytes"] == 4 * 8


# Rows made to test the tie rule: ties at the maximum (the lowest index wins), a maximum at
# either end, a row of -Infinity (index 0, as the JS loop gives), NaN at 0 (which no comparison
# passes: index 0) and NaN elsewhere (never chosen).
def tie_rows(vocab: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    rows = []
    row = rng.standard_normal(vocab).astype(np.float32)
    rows.append(row)
    tied = row.copy()
    tied[[7, 300 % vocab, vocab - 1]] = 9.0
    rows.append(tied)
    tied_in_lane = row.copy()  # two maxima one GPU invocation scans (256 apart)
    tied_in_lane[[3, 3 + 256]] = 9.0
    rows.append(tied_in_lane)
    last = row.copy()
    last[-1] = 9.0
    rows.append(last)
    first = row.copy()
    first[0] = 9.0
    first[vocab // 2] = 9.0
    rows.append(first)
    rows.append(np.full(vocab, -np.inf, np.float32))
    masked = np.full(vocab, -np.inf, np.float32)
    masked[[200 % vocab, vocab - 2]] = -1.0
    rows.append(masked)
    nan_first = row.copy()
    nan_first[0] = np.nan
    rows.append(nan_first)
    nan_inside = row.copy()
    nan_inside[5] = np.nan
    nan_inside[9] = 9.0
    rows.append(nan_inside)
    rows.append(np.zeros(vocab, np.float32))
    return rows


def js_argmax(row: np.ndarray) -> int:
    """web/src/engine/sampler.js's argmax, line for line."""
    best = 0
    for i in range(1, len(row)):
        if row[i] > row[best]:
            best = i
    return best


@pytest.mark.parametrize("rows", [1, None], ids=["argmax", "argmax_rows"])
@pytest.mark.parametrize("vocab", [1000, 49152 + 3])
def test_cpu_kernel_keeps_the_js_tie_rule(vocab, rows):
    # The wasm target's kernel (plain loops) compiled for this machine's CPU: one row at a time
    # (argmax), or all the rows at once (argmax_rows, a verify step's).
    func = argmax_func(vocab, TARGETS["wasm"], rows).with_attr("global_symbol", "argmax")
    lib = tvm.tirx.build(tvm.IRModule({"argmax": func}), target="llvm")
    batches = [[row] for row in tie_rows(vocab)] if rows else [tie_rows(vocab)]
    for batch in batches:
        out = tvm.runtime.tensor(np.zeros(len(batch), np.int32))
        lib["argmax"](tvm.runtime.tensor(np.stack(batch)[None]), out)
        assert out.numpy().tolist() == [js_argmax(row) for row in batch]


@pytest.mark.parametrize("function", ["argmax", "argmax_rows"])
@pytest.mark.parametrize("variant", ["software", "gpu"])
def test_webgpu_kernel_keeps_the_js_tie_rule(tiny_built, engine_page, variant, function):
    """argmax takes one row (a step's logits), argmax_rows a workgroup for each of v rows (a
    verify step's)."""
    folder = tiny_built("q4f32")
    manifest = json.loads((folder / "manifest.json").read_text())
    vocab = manifest["config"]["vocab_size"]
    plan = manifest["variants"][variant]["functions"][function]
    (launch,) = plan["launches"]
    assert launch["grid"] == ([1, 1, 1] if function == "argmax" else ["v", 1, 1])
    assert launch["pods"] == ([] if function == "argmax" else ["v"])
    kernel = json.loads((folder / f"kernels-{variant}.json").read_text())[launch["kernel"]]
    kernel = {**kernel, "name": launch["kernel"]}
    order = [ref.get("input", "out") for ref in launch["buffers"]]
    rows = tie_rows(vocab)
    batches = [[row] for row in rows] if function == "argmax" else [rows]
    data = {f"rows{i}": f32(np.stack(batch)) for i, batch in enumerate(batches)}
    data["out"] = i32(np.zeros(len(rows)))
    # The kernel's scalars: v (argmax_rows') and packGridDimX, the x workgroup count less one.
    runs = [
        {
            "bind": {"logits": f"rows{i}", "out": "out"},
            "pods": [len(batch) - (p["name"] != "v") for p in kernel["pods"]],
            "groups": len(batch),
            "count": len(batch),
        }
        for i, batch in enumerate(batches)
    ]
    with open_variant(engine_page, folder, variant) as page:
        found = run_kernel(page, kernel, order, data, runs)
    assert [token for out in found for token in out] == [js_argmax(row) for row in rows]


def test_smollm2_device_argmax_equals_the_js_sampler_on_the_cpu(smollm2, engine_page):
    count = 16
    with engine_page(smollm2, backend="wasm", options={"speculation": False}) as page:
        prompt = page.evaluate(
            "(m) => engine.tokenizer.encode(engine.tokenizer.applyChatTemplate(m))",
            [{"role": "user", "content": "Name three colours of the sea."}],
        )
        add_js_engine(page)
        device = generate(page, prompt, count)
        js = generate(page, prompt, count, engine="jsEngine")
    assert device["tokens"] == js["tokens"] and len(device["tokens"]) == count
    # The prompt fits one prefill chunk: 4 bytes for it and for each decode step, where the
    # logits path reads 49,152 floats (196 KB) each.
    assert len(prompt) <= 128
    assert device["bytes"] == 4 * count
    assert js["bytes"] == 4 * 49152 * count
