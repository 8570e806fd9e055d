"""The Prompt API facade (web/src/prompt_api/) on the tiny model, as the explainer
(github.com/webmachinelearning/prompt-api) describes each method: its shapes, its errors, and
replies equal to what the engine's chat.completions gives for the same messages, greedily. The
runtime runs in Node.js (tools/node.py); the polyfill's install and streaming run in Chromium."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tools.browser import serve_folder
from tools.node import node_engine

SYSTEM = {"role": "system", "content": "Be brief."}


@pytest.fixture(scope="module")
def tiny(tiny_built):
    return tiny_built("q0f32")


@pytest.fixture(scope="module")
def node(tiny):
    with node_engine(tiny, backend="wasm") as node:
        # A LanguageModel bound to the engine the host loaded, whose replies are the reference.
        node.evaluate("() => { globalThis.LM = kiln.createLanguageModel(engine); }")
        yield node


def engine_reply(node, messages, **fields):
    return node.evaluate(
        """async ([messages, fields]) => (await engine.chat.completions.create(
            {messages, temperature: 0, ...fields})).choices[0].message.content""",
        [messages, fields],
    )


def run(node, body, arg=None):
    """Runs `body`, an async function's statements, with `arg` as `arg`."""
    return node.evaluate(f"async (arg) => {{ {body} }}", arg)


def test_methods_shapes_and_replies_equal_the_engines(node):
    got = run(
        node,
        """
        const loaded = [];
        const s = await LM.create({topK: 1, initialPrompts: [arg.system],
            monitor(m) { m.addEventListener("downloadprogress", (e) => loaded.push(e.loaded)); }});
        const afterInitial = s.contextUsage;
        const reply = await s.prompt("Tell me about the browser.");
        const g = await LM.create({temperature: 0});
        const chunks = [];
        for await (const chunk of g.promptStreaming([arg.system, {role: "user", content: "Hi"}]))
            chunks.push(chunk);
        const m = await LM.create({samplingMode: "most-predictable"});
        const measured = await m.measureContextUsage("Hello there");
        const constrained = await m.measureContextUsage("Hello there",
            {responseConstraint: {type: "object"}});
        await m.append("Hello there");
        return {availability: await LM.availability(), params: await LM.params(), loaded,
            afterInitial, reply, chunks, measured, constrained, appended: m.contextUsage,
            fields: [s.topK, s.temperature, s.samplingMode, s.contextWindow, s.inputQuota,
                     m.topK, m.temperature, m.samplingMode, typeof s.oncontextoverflow]};
        """,
        {"system": SYSTEM},
    )
    assert got["availability"] == "available"
    assert got["params"] == {
        "defaultTopK": 3,
        "maxTopK": 128,
        "defaultTemperature": 1,
        "maxTemperature": 2,
    }
    assert got["loaded"] == [0, 1]  # already loaded: the two events every create() fires
    assert got["fields"] == [1, 1, "balanced", 128, 128, 1, 0, "most-predictable", "object"]
    assert got["afterInitial"] > 0
    assert got["reply"] == engine_reply(
        node, [SYSTEM, {"role": "user", "content": "Tell me about the browser."}]
    )
    assert all(isinstance(c, str) and c for c in got["chunks"])
    assert "".join(got["chunks"]) == engine_reply(node, [SYSTEM, {"role": "user", "content": "Hi"}])
    # measureContextUsage counts what append adds; a schema put to the model counts too.
    assert got["appended"] == got["measured"] > 0
    assert got["constrained"] > got["measured"]


def test_append_then_prompt_equals_the_combined_prompt_and_prefills_only_the_new_turn(node):
    turns = [
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "A pear."},
    ]
    got = run(
        node,
        """
        const s = await LM.create({temperature: 0, initialPrompts: [arg.system]});
        await s.append(arg.turns);
        const held = s.contextUsage;
        const reply = await s.prompt("And a vegetable?");
        const stats = (await engine.runtimeStats()).last_request;
        const all = [arg.system, ...arg.turns, {role: "user", content: "And a vegetable?"}];
        const whole = engine.tokenizer.encode(engine.tokenizer.applyChatTemplate(all, true)).length;
        const once = await (await LM.create({temperature: 0})).prompt(all);
        return {reply, once, held, whole, prefilled: stats.prefill_tokens};
        """,
        {"system": SYSTEM, "turns": turns},
    )
    combined = [SYSTEM, *turns, {"role": "user", "content": "And a vegetable?"}]
    assert got["reply"] == got["once"] == engine_reply(node, combined)
    # append prefilled the conversation: the prompt prefilled its own turn alone.
    assert got["prefilled"] == got["whole"] - got["held"]


def test_follow_up_reuses_the_cache_and_clones_are_independent(node):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    got = run(
        node,
        """
        const opts = {responseConstraint: arg.schema, omitResponseConstraintInput: true};
        const s = await LM.create({topK: 1, initialPrompts: [arg.system]});
        const twin = await s.clone();
        const first = await s.prompt("Is it?", opts);
        const second = await s.prompt("Sure?", opts);
        const prefilled = (await engine.runtimeStats()).last_request.prefill_tokens;
        const usage = s.contextUsage;
        const other = await twin.prompt("Is it not?", opts);
        return {first, second, prefilled, usage, other, twinUsage: twin.contextUsage};
        """,
        {"system": SYSTEM, "schema": schema},
    )
    fmt = {
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    }
    history = [SYSTEM, {"role": "user", "content": "Is it?"}]
    assert got["first"] == engine_reply(node, history, **fmt)
    history += [
        {"role": "assistant", "content": got["first"]},
        {"role": "user", "content": "Sure?"},
    ]
    assert got["second"] == engine_reply(node, history, **fmt)
    for reply in (got["first"], got["second"], got["other"]):
        jsonschema.validate(json.loads(reply), schema)
    whole = node.evaluate(
        "(m) => engine.tokenizer.encode(engine.tokenizer.applyChatTemplate(m, true)).length",
        history,
    )
    assert 0 < got["prefilled"] < whole  # the follow-up reused the first turn's cache
    # The clone holds the initial prompt alone: the original's turns are not in its history.
    assert got["other"] == engine_reply(
        node, [SYSTEM, {"role": "user", "content": "Is it not?"}], **fmt
    )
    assert got["twinUsage"] < got["usage"]


def test_errors_are_the_explainers(node):
    got = run(
        node,
        """
        const caught = async (f) => { try { await f(); return null; } catch (e) {
            return {name: e.name, requested: e.requested, quota: e.quota}; } };
        const ask = (input, opts) => caught(async () => (await LM.create()).prompt(input, opts));
        const user = (content) => ({role: "user", content});
        const s = await LM.create({temperature: 0});
        const before = s.contextUsage;
        const quota = await caught(() => s.prompt("word ".repeat(300)));
        const aborted = await caught(() => s.prompt("Hi", {signal: AbortSignal.abort()}));
        const controller = new AbortController();
        const streamed = [];
        const midStream = await caught(async () => {
            for await (const c of s.promptStreaming("Hi", {signal: controller.signal})) {
                streamed.push(c);
                controller.abort();
            }
        });
        const after = s.contextUsage;
        const pending = caught(() => s.prompt("Tell me a long story."));
        const queued = caught(() => s.prompt("And another."));
        s.destroy();
        return {before, after, quota, aborted, midStream, streamed: streamed.length,
            inFlight: await pending, queued: await queued,
            destroyed: [await caught(() => s.prompt("Hi")), await caught(() => s.append("Hi")),
                        await caught(() => s.clone()), await caught(() => s.promptStreaming("Hi"))],
            refused: [
                await caught(() => LM.create({topK: 0})),
                await caught(() => LM.create({temperature: -1})),
                await caught(() => LM.create({samplingMode: "creative", topK: 2})),
                await caught(() => LM.create({expectedInputs: [{type: "audio"}]})),
                await caught(() => LM.create({initialPrompts: [user("a"), arg.system]})),
                await ask([{role: "tool", content: "a"}]),
                await ask([user([{type: "image", value: new Uint8Array(4)}])]),
                await ask("a", {omitResponseConstraintInput: true}),
                await ask("a", {responseConstraint: /a+/}),
            ],
            audio: await LM.availability({expectedInputs: [{type: "audio"}]})};
        """,
        {"system": SYSTEM},
    )
    quota = got["quota"]
    assert quota["name"] == "QuotaExceededError" and quota["requested"] > quota["quota"] == 128
    assert got["aborted"]["name"] == "AbortError"
    assert got["midStream"]["name"] == "AbortError" and got["streamed"] == 1
    assert got["after"] == got["before"] == 0  # neither failed prompt joined the conversation
    assert got["inFlight"]["name"] == got["queued"]["name"] == "AbortError"
    assert [e["name"] for e in got["destroyed"]] == ["InvalidStateError"] * 4
    assert [e["name"] for e in got["refused"]] == [
        "RangeError",
        "RangeError",
        "TypeError",
        "NotSupportedError",
        "NotSupportedError",
        "TypeError",
        "NotSupportedError",
        "TypeError",
        "NotSupportedError",
    ]
    assert got["audio"] == "unavailable"


def test_overflow_drops_the_oldest_turns_and_keeps_the_initial_prompts(node):
    got = run(
        node,
        """
        const s = await LM.create({topK: 1, initialPrompts: [arg.system]});
        let events = 0, handled = 0;
        s.addEventListener("contextoverflow", () => events++);
        s.oncontextoverflow = () => handled++;
        await s.prompt("Tell me about the browser.");  // the tiny model talks to the window's end
        const full = s.contextUsage;
        const reply = await s.prompt("Again.");
        return {events, handled, full, reply};
        """,
        {"system": SYSTEM},
    )
    assert got["full"] >= 128 and got["events"] == got["handled"] == 1
    assert got["reply"] == engine_reply(node, [SYSTEM, {"role": "user", "content": "Again."}])


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_polyfill_in_chromium_installs_once_and_streams(browser, tiny, backend):
    """In a page, on each backend: the polyfill, a streamed reply equal to the engine's."""
    with serve_folder(tiny) as url:
        page = browser.new_page()
        page.goto(f"{url}/manifest.json")
        got = page.evaluate(
            """async ([url, system, backend]) => {
                const kiln = await import(url + "kiln.js");
                // Where the page has a LanguageModel (the browser's own, or this stand-in), the
                // polyfill leaves it.
                const native = globalThis.LanguageModel;
                globalThis.LanguageModel = {standIn: true};
                const kept = kiln.installLanguageModel(url, {backend}).standIn === true;
                delete globalThis.LanguageModel;
                const ours = kiln.installLanguageModel(url, {backend});
                const before = await ours.availability();
                const installed = globalThis.LanguageModel;
                const again = kiln.installLanguageModel("elsewhere/") === installed;
                const loaded = [];
                const s = await LanguageModel.create({temperature: 0, initialPrompts: [system],
                    monitor(m) {
                        m.addEventListener("downloadprogress", (e) => loaded.push(e.loaded));
                    }});
                const chunks = [];
                const reader = s.promptStreaming("Hi").getReader();
                for (let r = await reader.read(); !r.done; r = await reader.read())
                    chunks.push(r.value);
                const engine = await kiln.CreateEngine(url, {backend});
                const expected = (await engine.chat.completions.create({temperature: 0,
                    messages: [system, {role: "user", content: "Hi"}]})).choices[0].message.content;
                const missing = await kiln.createLanguageModel(url + "missing/").availability();
                const after = await LanguageModel.availability();
                return {native: native === undefined ? "none" : typeof native, kept, before,
                    missing, after, again, loaded, chunks, expected,
                    isStream: s.promptStreaming("Hi") instanceof ReadableStream,
                    backend: (await engine.runtimeStats()).backend};
            }""",
            [url + "/", SYSTEM, backend],
        )
        page.close()
    print("the browser's own LanguageModel:", got["native"])
    assert got["kept"] and got["again"]
    assert (got["before"], got["after"], got["missing"]) == (
        "downloadable",
        "available",
        "unavailable",
    )
    assert got["loaded"][0] == 0 and got["loaded"][-1] == 1
    assert got["loaded"] == sorted(got["loaded"]) and len(got["loaded"]) > 2
    assert got["isStream"] and len(got["chunks"]) > 1
    assert "".join(got["chunks"]) == got["expected"] and got["backend"] == backend
