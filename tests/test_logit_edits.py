"""A request's penalties, biases and grammar mask applied on the device (compiler/logit_edits.py's
edit, run between the step and its argmax or sample): the kernels of every target make, from the
edit rows JS writes, the very float32 logits JS makes of them (web/src/engine/logits.js
`LogitsProcessor.apply`, then the grammar's mask as web/src/text/grammar.js applies it); and a
request with such fields, greedy or sampled, grammar or not, draws on the device the reply the
JS path draws from the logits read back, reading back 4 bytes a token. (test_engine_api.py holds
the penalties and biases to transformers' processors, and the grammar's replies to their JSON
schemas.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from kernel_page import as_floats, as_text, f32, i32, run_kernel
from test_greedy_on_device import SHORT, add_js_engine, open_variant

from compiler.logit_edits import EDIT_COLUMNS, EDITS, edit_func, mask_words
from compiler.targets import TARGETS

LOGITS_JS = Path(__file__).resolve().parent.parent / "web" / "src" / "engine" / "logits.js"

# The edit rows of a request's fields after the prompt and some generated tokens, and the row of
# logits JS makes of `logits` with them and the mask (a bit per token; bit clear: -Infinity).
JS_EDITS = """
import { LogitsProcessor, editRows } from %s;
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString());
const processor = new LogitsProcessor(input.fields, input.prompt);
for (const token of input.generated) processor.accept(token);
const logits = Float32Array.from(input.logits);
const rows = editRows(processor.edits(), input.mask !== null);
processor.apply(logits);
if (input.mask !== null) {
  const mask = Int32Array.from(input.mask);
  for (let id = 0; id < logits.length; id++)
    if (((mask[id >> 5] >>> (id & 31)) & 1) === 0) logits[id] = -Infinity;
}
const text = (a) => Array.from(a, (v) => (Number.isFinite(v) ? v : String(v)));
process.stdout.write(JSON.stringify({ rows: text(rows), logits: text(logits) }));
"""


def js_edits(logits: np.ndarray, fields: dict, prompt, generated, mask) -> tuple:
    done = subprocess.run(
        ["node", "--input-type=module", "-e", JS_EDITS % json.dumps(LOGITS_JS.as_uri())],
        input=json.dumps(
            {
                "logits": as_text(logits),
                "fields": fields,
                "prompt": prompt,
                "generated": generated,
                "mask": None if mask is None else mask.tolist(),
            }
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(done.stdout)
    rows = np.zeros((EDITS + 1, EDIT_COLUMNS), np.float32)
    used = as_floats(out["rows"]).reshape(-1, EDIT_COLUMNS)
    rows[: len(used)] = used
    return rows, as_floats(out["logits"])


FIELDS = [
    {"repetition_penalty": 1.3},
    {"frequency_penalty": 0.7, "presence_penalty": -0.4, "logit_bias": {"3": 2.5, "7": -100}},
    {"repetition_penalty": 0.85, "frequency_penalty": 0.3, "logit_bias": {"0": 1.25}},
]


def edit_cases(vocab: int) -> list:
    """Logits of both signs (and a few -Infinity ones), the edits of each of FIELDS, with and
    without a mask."""
    rng = np.random.default_rng(0)
    cases = []
    for i, fields in enumerate(FIELDS):
        logits = (rng.standard_normal(vocab) * 4).astype(np.float32)
        logits[rng.integers(0, vocab, 3)] = -np.inf
        prompt = rng.integers(0, vocab, 40).tolist()
        generated = rng.integers(0, vocab, 25).tolist() + prompt[:5]
        mask = rng.integers(-(2**31), 2**31, mask_words(vocab), dtype=np.int64).astype(np.int32)
        cases.append((logits, fields, prompt, generated, None if i == 1 else mask))
    return cases


@pytest.mark.parametrize("vocab", [1000, 49152 + 3])
def test_cpu_kernel_edits_as_js_does(vocab):
    func = edit_func(vocab, TARGETS["wasm"]).with_attr("global_symbol", "edit")
    lib = tvm.tirx.build(tvm.IRModule({"edit": func}), target="llvm")
    for logits, fields, prompt, generated, mask in edit_cases(vocab):
        rows, expected = js_edits(logits, fields, prompt, generated, mask)
        out = tvm.runtime.tensor(np.zeros((1, 1, vocab), np.float32))
        words = np.zeros(mask_words(vocab), np.int32) if mask is None else mask
        lib["edit"](
            tvm.runtime.tensor(logits[None, None]),
            tvm.runtime.tensor(words),
            tvm.runtime.tensor(rows),
            out,
        )
        np.testing.assert_array_equal(out.numpy()[0, 0], expected)
        assert int(rows[0, 1]) > 20  # the cases edit many tokens


@pytest.mark.parametrize("variant", ["software", "gpu"])
def test_webgpu_kernel_edits_as_js_does(tiny_built, engine_page, variant):
    folder = tiny_built("q4f32")
    manifest = json.loads((folder / "manifest.json").read_text())
    vocab = manifest["config"]["vocab_size"]
    (launch,) = manifest["variants"][variant]["functions"]["edit"]["launches"]
    assert launch["grid"] == [1, 1, 1]
    order = [ref.get("input", "out") for ref in launch["buffers"]]
    assert sorted(order) == ["edits", "logits", "mask", "out"]
    kernel = json.loads((folder / f"kernels-{variant}.json").read_text())[launch["kernel"]]
    kernel = {**kernel, "name": launch["kernel"]}
    data = {"out": f32(np.zeros(vocab))}
    runs, expected = [], []
    for j, (logits, fields, prompt, generated, mask) in enumerate(edit_cases(vocab)):
        rows, edited = js_edits(logits, fields, prompt, generated, mask)
        words = np.zeros(mask_words(vocab), np.int32) if mask is None else mask
        data.update({f"logits{j}": f32(logits), f"mask{j}": i32(words), f"edits{j}": f32(rows)})
        bind = {"logits": f"logits{j}", "mask": f"mask{j}", "edits": f"edits{j}", "out": "out"}
        runs.append({"bind": bind, "pods": [0] * len(kernel["pods"]), "groups": 1, "count": vocab})
        expected.append(edited)
    with engine_page(folder, variant) as page:
        found = run_kernel(page, kernel, order, data, runs)
    for out, edited in zip(found, expected, strict=True):
        np.testing.assert_array_equal(as_floats(out), edited)


# A completion of token ids: its choices' texts and ends, and the bytes read back meanwhile
# (the KV cache emptied first), from the page's `engine` or `jsEngine`.
COMPLETE = """async ([request, name]) => {
    const engine = window[name];
    const read = async () => (await engine.runtimeStats()).readback_bytes;
    await engine.resetChat();
    const before = await read();
    const r = await engine.completions.create(request);
    const choices = r.choices.map((c) => [c.text, c.finish_reason]);
    return {choices, bytes: (await read()) - before};
}"""

SCHEMA = {
    "type": "object",
    "properties": {"word": {"type": "string", "maxLength": 6}, "n": {"type": "integer"}},
    "required": ["word", "n"],
}


@pytest.mark.parametrize("variant", ["software", "gpu", "wasm"])
def test_edited_requests_pick_on_the_device_as_the_js_path_does(tiny_built, engine_page, variant):
    """Penalties and biases, greedy and seeded sampled, and a JSON schema's grammar: the device's
    reply equals the one drawn in JS from the logits read back (by an engine made so), reading
    back 4 bytes a token instead of the vocabulary's floats."""
    folder = tiny_built("q4f32")
    vocab = json.loads((folder / "manifest.json").read_text())["config"]["vocab_size"]
    sampled = {"temperature": 1.1, "top_p": 0.95, "seed": 5}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    requests = [
        ({"repetition_penalty": 1.4, "logit_bias": {"9": 3}, "temperature": 0}, 16),
        ({"frequency_penalty": 0.9, "presence_penalty": 0.5, **sampled, "n": 2}, 16),
        ({"response_format": response_format, "temperature": 0}, 40),
        ({"response_format": response_format, "repetition_penalty": 1.2, **sampled}, 40),
    ]
    with open_variant(engine_page, folder, variant) as page:
        add_js_engine(page)
        for fields, count in requests:
            request = {"prompt": SHORT, "max_tokens": count, "ignore_eos": True, **fields}
            device = page.evaluate(COMPLETE, [request, "engine"])
            js = page.evaluate(COMPLETE, [request, "jsEngine"])
            assert device["choices"] == js["choices"]
            # The same steps (SHORT is one prefill chunk): 4 bytes each, where the JS path reads
            # the vocabulary's floats.
            assert device["bytes"] > 0 and js["bytes"] == vocab * device["bytes"]
