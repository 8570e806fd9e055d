"""The runtime in real Chromium on WebGPU against transformers and the numpy reference."""

import json
import shutil

import numpy as np
import pytest
import torch
from compare import LOGPROB_TOLERANCE, logprob_error
from reference import ReferenceModel
from transformers import LlamaForCausalLM

from tools.browser import RECORD_DEVICES

PROMPT = [5, 17, 42, 100, 7, 8, 9, 10, 11, 12, 13, 60, 61, 62, 63, 64, 65, 66, 67]


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def browser_logits(page, ids):
    return np.array(
        page.evaluate("async (ids) => Array.from(await engine.forwardLogits(ids))", ids)
    )


def browser_greedy(page, ids, count):
    return page.evaluate(
        "async ([ids, n]) => (await engine.generate(ids, "
        "{temperature: 0, max_tokens: n, ignore_eos: true})).tokens",
        [ids, count],
    )


# Every kernel set runs on this machine: on its WebGPU adapter "software" (the one it picks)
# and "gpu" (dlight's schedules, forced here so that their plans are checked too), and the CPU
# backend's "wasm".
VARIANTS = pytest.mark.parametrize("variant", ["software", "gpu", "wasm"])


def open_variant(engine_page, folder, variant):
    if variant == "wasm":
        return engine_page(folder, backend="wasm")
    return engine_page(folder, variant)


@VARIANTS
def test_q0f32_matches_transformers(tiny_hf, tiny_built, engine_page, variant):
    hf = LlamaForCausalLM.from_pretrained(tiny_hf).eval()
    with torch.no_grad():
        expected = hf(torch.tensor([PROMPT])).logits[0, -1].numpy()
        hf_tokens = hf.generate(
            torch.tensor([PROMPT]), max_new_tokens=16, do_sample=False, eos_token_id=None
        )[0, len(PROMPT) :].tolist()
    with open_variant(engine_page, tiny_built("q0f32"), variant) as page:
        assert page.evaluate("async () => (await engine.runtimeStats()).variant") == variant
        assert logprob_error(browser_logits(page, PROMPT), expected) < LOGPROB_TOLERANCE
        assert browser_greedy(page, PROMPT, 16) == hf_tokens


@VARIANTS
def test_q4f32_matches_numpy_reference(tiny_built, engine_page, variant):
    folder = tiny_built("q4f32")
    ref = ReferenceModel(folder)
    with open_variant(engine_page, folder, variant) as page:
        assert rel_err(browser_logits(page, PROMPT), ref.forward(PROMPT)) < 1e-3
        assert browser_greedy(page, PROMPT, 16) == ref.greedy(PROMPT, 16)


def test_chat_completion_objects_and_streaming(tiny_built, engine_page):
    request = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something about WebGPU."},
        ],
        "max_tokens": 12,
        "temperature": 0,
    }
    with engine_page(tiny_built("q0f32")) as page:
        reply = page.evaluate("async (r) => await engine.chat.completions.create(r)", request)
        chunks = page.evaluate(
            """async (r) => {
                const out = [];
                for await (const c of await engine.chat.completions.create(
                    {...r, stream: true, stream_options: {include_usage: true}})) out.push(c);
                return out;
            }""",
            request,
        )
    assert reply["object"] == "chat.completion"
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = reply["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] <= 12
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert streamed == choice["message"]["content"]
    # With include_usage, a last chunk carries the usage and no choices; the others usage null.
    assert chunks[-2]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == usage["completion_tokens"]
    assert all(c["usage"] is None for c in chunks[:-1])


def test_temperature_sampling_is_seeded(tiny_built, engine_page):
    """A seed fixes the sampled reply; the temperature shapes it: near zero it is the greedy
    reply, at 2 the seeds give different replies, not all greedy."""
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    with engine_page(tiny_built("q0f32")) as page:
        texts = page.evaluate(
            """async (r) => {
                const reply = async (extra) => (await engine.chat.completions.create(
                    {...r, ...extra})).choices[0].message.content;
                const greedy = await reply({temperature: 0});
                const cold = await reply({temperature: 0.001, seed: 7});
                const hot = [];
                for (const seed of [7, 7, 8, 9, 10, 11]) {
                    hot.push(await reply({temperature: 2.0, top_p: 1.0, seed}));
                }
                return {greedy, cold, hot};
            }""",
            request,
        )
    hot = texts["hot"]
    assert hot[0] == hot[1]  # the same seed, the same reply
    assert texts["cold"] == texts["greedy"]
    assert len(set(hot)) > 1 and any(t != texts["greedy"] for t in hot), texts


def test_corrupt_shard_is_rejected(tiny_built, tmp_path, engine_page, browser):
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_built("q0f32"), folder)
    shard = folder / json.loads((folder / "manifest.json").read_text())["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(Exception, match="ShardIntegrityError|is corrupt"):
        with engine_page(folder):
            pass


@pytest.mark.parametrize(
    "request_body, field",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "top_p": 1.5}, "top_p"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
        (
            {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0},
            "max_completion_tokens",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        (
            {"messages": [{"role": "user", "content": "x"}], "frequency_penalty": 2.5},
            "frequency_penalty",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "presence_penalty": -3},
            "presence_penalty",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "repetition_penalty": 0},
            "repetition_penalty",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 101}}, "logit_bias"),
        (
            {"messages": [{"role": "user", "content": "x"}], "logit_bias": {"999999": 1}},
            "logit_bias",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
            "stop",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, "top_logprobs"),
        (
            {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "seed": 1.5}, "seed"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": []}, "tools"),
        ({"messages": [{"role": "user", "content": "x"}], "colour": "red"}, "colour"),
        ({"messages": [{"role": "user", "content": "x"}], "stream_options": {}}, "stream_options"),
        (
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}},
            "response_format.type",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "model": "nope"}, "model"),
    ],
)
def test_invalid_requests_are_rejected(tiny_built, engine_page, request_body, field):
    with engine_page(tiny_built("q0f32")) as page:
        error = page.evaluate(
            """async (r) => {
                try { await engine.chat.completions.create(r); return null; }
                catch (e) { return {name: e.name, param: e.param, message: e.message}; }
            }""",
            request_body,
        )
    assert error["name"] == ("ModelNotFoundError" if field == "model" else "InvalidRequestError")
    assert error["param"] == field


def test_prompt_longer_than_context_window(tiny_built, engine_page):
    long_text = "The quick brown fox jumps over the lazy dog. " * 40
    with engine_page(tiny_built("q0f32")) as page:
        error = page.evaluate(
            """async (text) => {
                try {
                    await engine.chat.completions.create(
                        {messages: [{role: "user", content: text}], max_tokens: 4});
                    return null;
                } catch (e) { return {name: e.name, code: e.code, message: e.message}; }
            }""",
            long_text,
        )
    assert error["name"] == "ContextWindowExceededError"
    assert error["code"] == "context_length_exceeded"
    assert "context window holds 128" in error["message"]


def test_picks_the_build_the_adapter_can_run(tiny_built, browser):
    """Of a q4f16 and a q4f32 build, the first one the adapter can run is loaded: on an
    adapter without shader-f16 (SwiftShader) the f32 one, and the f16 build alone fails with a
    message that names the missing feature; on one with it, the f16 one. The CPU backend
    takes the f32 one."""
    from tools.browser import serve_folder

    f16, f32 = tiny_built("q4f16"), tiny_built("q4f32")
    assert f16.parent == f32.parent
    with serve_folder(f16.parent) as url:
        page = browser.new_page()
        page.goto(f"{url}/q4f32/manifest.json")
        result = page.evaluate(
            """async (base) => {
                const kiln = await import(base + "q4f32/kiln.js");
                const builds = [base + "q4f16/", base + "q4f32/"];
                const appConfig = {model_list: [{model_id: "tiny", model: builds}]};
                const webgpu = {appConfig, backend: "webgpu"};
                const engine = await kiln.CreateEngine("tiny", webgpu);
                let error = null;
                try { await kiln.CreateEngine(base + "q4f16/", {backend: "webgpu"}); }
                catch (e) { error = {name: e.name, message: e.message}; }
                const hasF16 = (await navigator.gpu.requestAdapter()).features.has("shader-f16");
                const cpu = await kiln.CreateEngine("tiny", {appConfig, backend: "wasm"});
                return {picked: engine.manifest.quantization, error, hasF16,
                        cpu: cpu.manifest.quantization};
            }""",
            f"{url}/",
        )
        page.close()
    assert result["cpu"] == "q4f32"
    if result["hasF16"]:
        assert (result["picked"], result["error"]) == ("q4f16", None)
        return
    assert result["picked"] == "q4f32"
    assert result["error"]["name"] == "FeatureUnsupportedError"
    assert "shader-f16" in result["error"]["message"]


def test_concurrent_requests_each_match_their_own_run(tiny_built, engine_page):
    prompts = [f"Question number {i}?" for i in range(4)]
    with engine_page(tiny_built("q0f32")) as page:
        texts = page.evaluate(
            """async (prompts) => {
                const ask = (p) => engine.chat.completions.create(
                    {messages: [{role: "user", content: p}], max_tokens: 6, temperature: 0})
                    .then((r) => r.choices[0].message.content);
                const together = await Promise.all(prompts.map(ask));
                const alone = [];
                for (const p of prompts) alone.push(await ask(p));
                return {together, alone};
            }""",
            prompts,
        )
    assert texts["together"] == texts["alone"]


def test_device_loss_is_reported_and_reload_recovers(tiny_built, engine_page):
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}
    with engine_page(tiny_built("q0f32"), backend="webgpu") as page:
        page.evaluate(RECORD_DEVICES)
        folder = page.evaluate('location.href.replace("manifest.json", "")')
        page.evaluate("async (f) => await engine.reload(f, {backend: 'webgpu'})", folder)
        before = page.evaluate("async (r) => await engine.chat.completions.create(r)", request)
        result = page.evaluate(
            """async ([r, folder]) => {
                const device = __devices.at(-1);
                device.destroy();  // what a GPU reset looks like to the page
                await device.lost;  // the engine's handler, registered first, has run
                let error = null;
                try { await engine.chat.completions.create(r); }
                catch (e) { error = {name: e.name, message: e.message}; }
                await engine.reload(folder, {backend: "webgpu"});
                const after = await engine.chat.completions.create(r);
                return {error, after};
            }""",
            [request, folder],
        )
    assert result["error"]["name"] == "DeviceLostError"
    assert "Reload the model" in result["error"]["message"]
    assert result["after"]["choices"][0]["message"] == before["choices"][0]["message"]


def test_prefill_chunk_that_is_not_a_multiple_of_the_token_tile(tiny_hf, tmp_path, engine_page):
    from compiler.build import build

    folder = build(str(tiny_hf), "q4f32", tmp_path / "chunk6", context_window=64, prefill_chunk=6)
    ref = ReferenceModel(folder)
    with engine_page(folder) as page:
        assert rel_err(browser_logits(page, PROMPT), ref.forward(PROMPT)) < 1e-3
        assert browser_greedy(page, PROMPT, 8) == ref.greedy(PROMPT, 8)
