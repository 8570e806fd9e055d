"""Prompt-lookup speculation (web/src/engine/prompt_lookup.js and generator.js, the build's
verify function): greedy replies equal plain decoding's token for token, on WebGPU and on the
CPU backend, with drafts both kept and rejected, each verify row's token picked on the device
(argmax_rows); seeded sampling gives valid, reproducible replies; max_tokens, stop strings and
an abort end a reply where plain decoding ends it. Plain decoding is the same engine's with
logprobs asked for, which keeps speculation off.

The tiny random model seldom repeats itself, so its engine drafts after a single matching token
(minMatch 1): most drafts are rejected, some kept."""

from __future__ import annotations

import pytest

TINY_OPTIONS = {"speculation": {"minMatch": 1, "maxMatch": 2, "adaptive": False}}
PROMPTS = [([7, 7, 7, 7, 7, 7], 100), ([5, 17, 42, 100, 7, 8, 9, 10, 11, 12, 5, 17, 42], 48)]

# The reply to `ids` and the request's speculation counters; `extra` request fields.
GENERATE = """async ([ids, extra]) => {
    await engine.resetChat();
    const before = (await engine.runtimeStats()).readback_bytes;
    const r = await engine.generate(ids, {temperature: 0, ignore_eos: true, ...extra});
    const stats = await engine.runtimeStats();
    return {tokens: r.tokens, text: r.text, finish: r.finish,
            speculation: stats.last_request.speculation, read: stats.readback_bytes - before};
}"""


def generate(page, ids, **extra):
    return page.evaluate(GENERATE, [ids, extra])


def tiny_page(engine_page, folder, variant):
    if variant == "wasm":
        return engine_page(folder, backend="wasm", options=TINY_OPTIONS)
    return engine_page(folder, variant, options=TINY_OPTIONS)


@pytest.mark.parametrize("variant", ["software", "wasm"])
def test_greedy_replies_equal_plain_decoding(tiny_built, engine_page, variant):
    drafted = accepted = 0
    with tiny_page(engine_page, tiny_built("q0f32"), variant) as page:
        for ids, count in PROMPTS:
            fast = generate(page, ids, max_tokens=count)
            plain = generate(page, ids, max_tokens=count, logprobs=True)
            assert fast["tokens"] == plain["tokens"] and len(fast["tokens"]) == count
            assert plain["speculation"]["draft_tokens"] == 0
            drafted += fast["speculation"]["draft_tokens"]
            accepted += fast["speculation"]["accepted_tokens"]
            # Every token picked on the device, a verify step's too (argmax_rows): 4 bytes a
            # token read (each step's, each verify row's, the prefill chunks'), no row of logits.
            steps = count + fast["speculation"]["draft_tokens"] + len(ids)
            assert 0 < fast["read"] <= 4 * steps
    # Both happened: drafts kept (rows of the verify step used), and drafts rejected (the
    # cache rewound past them, and written over by the steps after).
    assert 0 < accepted < drafted


def test_seeded_sampling_is_valid_and_reproducible(tiny_built, engine_page):
    folder = tiny_built("q0f32")
    with tiny_page(engine_page, folder, "wasm") as page:
        vocab = page.evaluate("async () => (await (await fetch('manifest.json')).json()).config")
        ids, count = PROMPTS[0]
        sampled = {"temperature": 0.8, "top_p": 0.95, "max_tokens": count}
        first = generate(page, ids, seed=11, **sampled)
        again = generate(page, ids, seed=11, **sampled)
        other = generate(page, ids, seed=12, **sampled)
    assert first["tokens"] == again["tokens"] and len(first["tokens"]) == count
    assert first["tokens"] != other["tokens"]
    assert all(0 <= t < vocab["vocab_size"] for t in first["tokens"] + other["tokens"])
    assert first["speculation"]["draft_tokens"] > 0


@pytest.mark.parametrize("variant", ["software", "wasm"])
def test_max_tokens_stop_strings_and_abort_end_where_plain_decoding_does(
    tiny_built, engine_page, variant
):
    ids, count = PROMPTS[0]
    with tiny_page(engine_page, tiny_built("q0f32"), variant) as page:
        plain = generate(page, ids, max_tokens=count, logprobs=True)
        for n in (1, 2, 9, 31):
            assert generate(page, ids, max_tokens=n)["tokens"] == plain["tokens"][:n]
        middle = len(plain["text"]) * 2 // 3
        stop = plain["text"][middle : middle + 2]
        assert stop.strip()
        stopped = generate(page, ids, max_tokens=count, stop=[stop])
        expected = generate(page, ids, max_tokens=count, stop=[stop], logprobs=True)
        assert (stopped["tokens"], stopped["text"], stopped["finish"]) == (
            expected["tokens"],
            expected["text"],
            "stop",
        )
        # Interrupted after 20 tokens, with drafts in flight; the next request (which reuses the
        # cached prompt) answers as plain decoding does.
        aborted = page.evaluate(
            """async ([ids, count]) => {
                await engine.resetChat();
                let seen = 0;
                const onToken = (id) => {
                    if (id !== null && ++seen === 20) engine.interruptGenerate();
                };
                const params = {temperature: 0, ignore_eos: true, max_tokens: count};
                return await engine.generate(ids, params, onToken);
            }""",
            [ids, count],
        )
        assert aborted["finish"] == "abort" and aborted["tokens"] == plain["tokens"][:20]
        after = page.evaluate(
            "async ([ids, n]) => (await engine.generate(ids, {temperature: 0, ignore_eos: true,"
            " max_tokens: n})).tokens",
            [ids, count],
        )
        assert after == plain["tokens"]


def test_smollm2_copying_its_prompt_keeps_drafts_on_the_cpu(smollm2, engine_page):
    code = (
        "def load_scores(path):\n    scores = {}\n    with open(path) as handle:\n"
        '        for line in handle:\n            name, value = line.strip().split(",")\n'
        "            scores.setdefault(name, []).append(float(value))\n    return scores\n"
    )
    message = f"Copy this Python code exactly:\n\n```python\n{code}```"
    # Every draft found checked: whether checking pays is DraftPolicy's (its unit tests).
    options = {"speculation": {"adaptive": False}}
    with engine_page(smollm2, backend="wasm", options=options) as page:
        ids = page.evaluate(
            "(m) => engine.tokenizer.encode(engine.tokenizer.applyChatTemplate(m))",
            [{"role": "user", "content": message}],
        )
        fast = generate(page, ids, max_tokens=32)
        plain = generate(page, ids, max_tokens=32, logprobs=True)
    assert fast["tokens"] == plain["tokens"] and len(fast["tokens"]) == 32
    assert "scores = {}" in fast["text"]
    assert fast["speculation"]["accepted_tokens"] >= 10
