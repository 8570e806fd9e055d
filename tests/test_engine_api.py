"""The OpenAI-style API on the tiny model: every request field against an independent
reference (the numpy model, transformers' logits processors, jsonschema, OpenAI's own object
types). The runtime runs in Node.js (tools/node.py), where these checks need no browser;
loading several models in one engine is checked in Chromium."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest
import torch
from openai_shapes import check_chat_completion, check_chunk, check_completion
from reference import ReferenceModel
from tokenizers import Tokenizer
from transformers import RepetitionPenaltyLogitsProcessor
from transformers.convert_slow_tokenizer import bytes_to_unicode

from tools.browser import serve_folder
from tools.node import node_engine

USER = [{"role": "user", "content": "Tell me about the browser."}]


@pytest.fixture(scope="module")
def tiny(tiny_built):
    return tiny_built("q0f32")


@pytest.fixture(scope="module")
def node(tiny):
    """The tiny model's engine in Node, on the CPU backend: what these tests check is the
    runtime's own logic, the same on either backend (tests/test_backends.py compares them)."""
    with node_engine(tiny, backend="wasm") as node:
        yield node


def create(node, request):
    return node.evaluate("async (r) => await engine.chat.completions.create(r)", request)


def stream(node, request, kind="chat"):
    api = "engine.chat.completions" if kind == "chat" else "engine.completions"
    return node.evaluate(
        f"""async (r) => {{
            const out = [];
            for await (const c of await {api}.create({{...r, stream: true}})) out.push(c);
            return out;
        }}""",
        request,
    )


def no_eos(node):
    """A logit_bias that keeps the tiny model from ending early."""
    eos = node.evaluate("engine.manifest.eos_token_ids")
    return {str(t): -100 for t in eos}


def prompt_ids(node, messages):
    return node.evaluate(
        "(m) => engine.tokenizer.encode(engine.tokenizer.applyChatTemplate(m))", messages
    )


def test_max_tokens_ends_with_length(node):
    bias = no_eos(node)
    for field in ["max_tokens", "max_completion_tokens"]:
        reply = create(node, {"messages": USER, field: 5, "temperature": 0, "logit_bias": bias})
        check_chat_completion(reply)
        assert reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"]["completion_tokens"] == 5


def test_stop_strings_cut_exactly(node):
    base = {"messages": USER, "max_tokens": 24, "temperature": 0, "logit_bias": no_eos(node)}
    full = create(node, base)["choices"][0]["message"]["content"]
    assert len(full) > 12
    stop = full[6:9]
    cut = full[: full.index(stop)]
    for request in [{**base, "stop": stop}, {**base, "stop": ["\u2603never", stop]}]:
        reply = create(node, request)
        check_chat_completion(reply)
        assert reply["choices"][0]["message"]["content"] == cut
        assert reply["choices"][0]["finish_reason"] == "stop"
        chunks = stream(node, request)
        for chunk in chunks:
            check_chunk(chunk)
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == cut
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def reference_generate(
    folder, prompt, count, *, repetition=1.0, frequency=0.0, presence=0.0, bias=None
):
    """Greedy decoding with the request's logit processing, done independently: transformers'
    RepetitionPenaltyLogitsProcessor and OpenAI's published formula for the other two."""
    ref = ReferenceModel(folder)
    logits = ref.forward(prompt)
    out, logprobs = [], []
    repeat = RepetitionPenaltyLogitsProcessor(repetition)
    for _ in range(count):
        scores = torch.tensor(logits[None], dtype=torch.float64)
        if repetition != 1.0:
            scores = repeat(torch.tensor([prompt + out]), scores)
        scores = scores[0].numpy().copy()
        counts = np.bincount(out, minlength=scores.size)
        scores -= counts * frequency + (counts > 0) * presence
        for token, value in (bias or {}).items():
            scores[int(token)] += value
        token = int(np.argmax(scores))
        shifted = scores - scores.max()
        logprobs.append(shifted - np.log(np.exp(shifted).sum()))
        out.append(token)
        logits = ref.forward([token])
    return out, logprobs


@pytest.mark.parametrize(
    "settings",
    [
        {"repetition_penalty": 1.5},
        {"frequency_penalty": 1.2, "presence_penalty": 0.7},
        {"presence_penalty": -1.5, "repetition_penalty": 0.8, "logit_bias": {"40": 3.5, "41": -2}},
    ],
)
def test_penalties_and_logit_bias_match_the_reference(node, tiny, settings):
    prompt = prompt_ids(node, USER)
    bias = {**no_eos(node), **settings.get("logit_bias", {})}
    got = node.evaluate(
        "async ([ids, s]) => (await engine.generate(ids, s)).tokens",
        [prompt, {**settings, "logit_bias": bias, "temperature": 0, "max_tokens": 12}],
    )
    want, _ = reference_generate(
        tiny,
        prompt,
        12,
        repetition=settings.get("repetition_penalty", 1.0),
        frequency=settings.get("frequency_penalty", 0.0),
        presence=settings.get("presence_penalty", 0.0),
        bias=bias,
    )
    assert got == want


def test_logprobs_match_the_reference(node, tiny):
    bias = no_eos(node)
    request = {
        "messages": USER,
        "max_tokens": 6,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
        "logit_bias": bias,
    }
    reply = create(node, request)
    check_chat_completion(reply)
    content = reply["choices"][0]["logprobs"]["content"]
    tokens, logprobs = reference_generate(tiny, prompt_ids(node, USER), 6, bias=bias)
    # The bytes of each token, from the tokenizer's own byte-level alphabet.
    vocab = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
    assert len(content) == 6
    for entry, token, lp in zip(content, tokens, logprobs, strict=True):
        assert entry["bytes"] == [byte_of[ch] for ch in vocab.id_to_token(token)]
        assert entry["logprob"] == pytest.approx(lp[token], abs=1e-2)
        top = [t["logprob"] for t in entry["top_logprobs"]]
        assert top == sorted(top, reverse=True) and len(top) == 5
        assert top == pytest.approx(np.sort(lp)[::-1][:5].tolist(), abs=1e-2)
    chunks = stream(node, request)
    streamed = [
        e
        for c in chunks
        if c["choices"] and c["choices"][0]["logprobs"]
        for e in c["choices"][0]["logprobs"]["content"]
    ]
    assert [e["token"] for e in streamed] == [e["token"] for e in content]


def test_n_choices_and_seed(node):
    request = {"messages": USER, "max_tokens": 8, "temperature": 1.0, "seed": 11, "n": 3}
    first, second = create(node, request), create(node, request)
    check_chat_completion(first)
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in first["choices"]]
    assert texts == [c["message"]["content"] for c in second["choices"]]
    assert len(set(texts)) > 1
    assert first["usage"]["completion_tokens"] <= 24
    # The seed, not chance, fixes them: another seed draws others. The temperature shapes
    # them: near 0, the same seed gives the greedy reply three times over.
    other = create(node, {**request, "seed": 12})
    assert [c["message"]["content"] for c in other["choices"]] != texts
    greedy = create(node, {**request, "n": 1, "temperature": 0})["choices"][0]["message"]
    cold = create(node, {**request, "temperature": 0.01})["choices"]
    assert [c["message"]["content"] for c in cold] == [greedy["content"]] * 3
    chunks = stream(node, request)
    for chunk in chunks:
        check_chunk(chunk)
    for index, text in enumerate(texts):
        parts = [
            c["choices"][0]["delta"].get("content", "")
            for c in chunks
            if c["choices"][0]["index"] == index
        ]
        assert "".join(parts) == text


def test_top_k_draws_from_the_k_most_likely_tokens(node):
    def picks(top_k):
        request = {"messages": USER, "max_tokens": 3, "temperature": 2.0, "seed": 5, "n": 12}
        request |= {"logprobs": True, "top_logprobs": 2, "logit_bias": no_eos(node)}
        reply = create(node, request if top_k is None else {**request, "top_k": top_k})
        steps = [e for c in reply["choices"] for e in c["logprobs"]["content"]]
        return [e["token"] in {t["token"] for t in e["top_logprobs"]} for e in steps]

    assert all(picks(2))
    assert not all(picks(None))  # hot sampling strays past the two best without it
    greedy = create(node, {"messages": USER, "max_tokens": 6, "temperature": 0})
    one = create(node, {"messages": USER, "max_tokens": 6, "temperature": 2.0, "top_k": 1})
    assert one["choices"][0]["message"] == greedy["choices"][0]["message"]


SCHEMAS = [
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}},
        "required": ["color"],
    },
    {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 99},
            "flag": {"type": "boolean"},
        },
        "required": ["n", "flag"],
    },
    {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
    {
        "type": "object",
        "properties": {"word": {"type": "string", "maxLength": 4}},
        "required": ["word"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_json_schema_output_validates(node, schema):
    for response_format in [
        {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        },
        {"type": "json_object", "schema": json.dumps(schema)},
    ]:
        reply = create(
            node,
            {
                "messages": USER,
                "max_tokens": 60,
                "temperature": 0,
                "response_format": response_format,
            },
        )
        check_chat_completion(reply)
        text = reply["choices"][0]["message"]["content"]
        assert reply["choices"][0]["finish_reason"] == "stop", text
        jsonschema.validate(json.loads(text), schema)


def test_hostile_schemas_are_refused_and_the_grammar_engine_recovers(node):
    """Schemas past the documented depth (64 levels of JSON, or of groups in a pattern),
    holding what JSON cannot, breaking the JSON Schema meta-schema or whose $refs loop with no
    way out are refused up front, before the grammar engine runs; one within the limits that
    still crashes XGrammar's wasm (a chain of 1,000 $refs) restarts it, and schemas never
    compiled before work afterwards. The grammar engine is XGrammar's wasm, which the crash
    leaves unmade: every WebAssembly instantiation is counted, and the refusals, sent after the
    crash, make none, while the next schema that reaches the grammar engine makes it afresh."""
    result = node.evaluate(
        """async (r) => {
            const nest = (n, make, s) => {
                for (let i = 0; i < n; i++) s = make(s);
                return s;
            };
            const object = (s) => ({type: "object", properties: {a: s}, required: ["a"]});
            let deepArray = [];
            for (let i = 0; i < 10000; i++) deepArray = [deepArray];
            const cyclic = {type: "object", properties: {}};
            cyclic.properties.self = cyclic;
            const groups = "(".repeat(1000) + "a" + ")".repeat(1000);
            const chain = {};
            for (let i = 0; i < 1000; i++) chain["d" + i] = {"$ref": "#/$defs/d" + (i + 1)};
            chain.d1000 = {type: "string"};
            const cases = {
                "$ref chain": {...object({"$ref": "#/$defs/d0"}), $defs: chain},
                deep: nest(40, object, {type: "string"}),
                "deep text": JSON.stringify(nest(40, object, {type: "string"})),
                "10,000-deep array": deepArray,
                "10,000-deep array text": "[".repeat(10000) + "]".repeat(10000),
                cyclic,
                "not JSON": "{type: object}",
                infinite: {type: "integer", maximum: Infinity},
                "nested groups": object({type: "string", pattern: groups}),
                "type 42": {type: 42},
                "minimum text": object({type: "integer", minimum: "0"}),
                "endless $ref": {type: "object", properties: {next: {"$ref": "#"}},
                                 required: ["next"]},
                "after: within the limit": nest(12, object, {type: "boolean"}),
                "after: new": {type: "object", properties: {n: {type: "integer"}}, required: ["n"]},
            };
            let instances = 0;
            const {instantiate, instantiateStreaming, Instance} = WebAssembly;
            const wasm = {instantiate, instantiateStreaming, Instance};
            WebAssembly.instantiate = (...args) => (instances++, wasm.instantiate(...args));
            WebAssembly.instantiateStreaming =
                (...args) => (instances++, wasm.instantiateStreaming(...args));
            WebAssembly.Instance = new Proxy(wasm.Instance,
                {construct: (Instance, args) => (instances++, new Instance(...args))});
            const out = {};
            try {
                for (const [name, schema] of Object.entries(cases)) {
                    const before = instances;
                    try {
                        const reply = await engine.chat.completions.create({...r, response_format:
                            {type: "json_schema", json_schema: {name: "x", schema}}});
                        out[name] = {text: reply.choices[0].message.content};
                    } catch (e) {
                        out[name] = {name: e.name, param: e.param, message: e.message};
                    }
                    out[name].instances = instances - before;
                }
            } finally {
                Object.assign(WebAssembly, wasm);
            }
            return out;
        }""",
        {"messages": USER, "max_tokens": 200, "temperature": 0},
    )
    too_deep = ["deep", "deep text", "cyclic", "nested groups"]
    refused = [*too_deep, "10,000-deep array", "10,000-deep array text", "not JSON", "infinite"]
    for name in refused:
        assert result[name]["name"] == "InvalidRequestError", (name, result[name])
        assert result[name]["param"] == "response_format.json_schema.schema"
        assert result[name]["instances"] == 0  # refused before the grammar engine ran
    for name in too_deep:
        assert "deeper than 64 levels" in result[name]["message"]
    assert result["$ref chain"]["param"] == "response_format"
    assert "starts afresh" in result["$ref chain"]["message"]
    # The grammar engine, unmade by the crash, is made afresh by the next schema it compiles:
    # none was made while the refusals above were made.
    assert result["after: within the limit"]["instances"] >= 1
    # Schemas that break the JSON Schema meta-schema, or loop with no way out, are refused
    # before the grammar engine sees them, naming the place.
    field = "response_format.json_schema.schema"
    places = {
        "type 42": f"{field}.type",
        "minimum text": f"{field}.properties.a.minimum",
        "endless $ref": f"{field}.properties.next.$ref",
    }
    for name, place in places.items():
        assert (result[name]["name"], result[name]["param"]) == ("InvalidRequestError", place)
        assert result[name]["instances"] == 0
    assert "must be equal to one of the allowed values" in result["type 42"]["message"]
    assert "no way out" in result["endless $ref"]["message"]
    value = json.loads(result["after: within the limit"]["text"])
    for _ in range(12):
        value = value["a"]
    assert isinstance(value, bool)
    jsonschema.validate(
        json.loads(result["after: new"]["text"]),
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )


def test_abort_mid_stream_then_next_request_works(node):
    request = {"messages": USER, "max_tokens": 40, "temperature": 0, "logit_bias": no_eos(node)}
    result = node.evaluate(
        """async (r) => {
            const controller = new AbortController();
            const chunks = [];
            // A slow reader: the generation waits for it rather than running to its end.
            for await (const c of await engine.chat.completions.create(
                {...r, stream: true, signal: controller.signal})) {
                chunks.push(c);
                await new Promise((resolve) => setTimeout(resolve, 50));
                if (chunks.length === 4) controller.abort();
            }
            const interrupted = engine.chat.completions.create(r);
            // A message, not a timer: timers set after the reader's nested timers are clamped
            // to 4 ms, in which the tiny model on the CPU can finish all 40 tokens.
            const channel = new MessageChannel();
            channel.port1.onmessage = () => engine.interruptGenerate();
            channel.port2.postMessage(null);
            const already = new AbortController();
            already.abort();
            return {
                chunks,
                interrupted: await interrupted,
                before: await engine.chat.completions.create({...r, signal: already.signal}),
                after: await engine.chat.completions.create(r),
            };
        }""",
        request,
    )
    for chunk in result["chunks"]:
        check_chunk(chunk)
    assert result["chunks"][-1]["choices"][0]["finish_reason"] == "abort"
    assert len(result["chunks"]) < 10
    assert result["interrupted"]["choices"][0]["finish_reason"] == "abort"
    assert result["interrupted"]["usage"]["completion_tokens"] < 40
    assert result["before"]["choices"][0]["finish_reason"] == "abort"
    assert result["before"]["choices"][0]["message"]["content"] == ""
    after = result["after"]
    assert after["choices"][0]["finish_reason"] == "length"
    assert after == {
        **create(node, request),
        "id": after["id"],
        "created": after["created"],
        "usage": after["usage"],
    }


def test_ten_requests_at_once_complete_in_order(node):
    requests = [
        {
            "messages": [{"role": "user", "content": f"Question {i}?"}],
            "max_tokens": 4 + i % 3,
            "temperature": 0,
        }
        for i in range(10)
    ]
    result = node.evaluate(
        """async (requests) => {
            const order = [];
            const replies = await Promise.all(requests.map((r, i) =>
                engine.chat.completions.create(r).then((reply) => (order.push(i), reply))));
            return {order, replies};
        }""",
        requests,
    )
    assert result["order"] == list(range(10))
    for request, reply in zip(requests, result["replies"], strict=True):
        check_chat_completion(reply)
        alone = create(node, request)
        assert reply["choices"][0]["message"] == alone["choices"][0]["message"]


def test_text_completions(node, tiny):
    ids = prompt_ids(node, USER)
    text = node.evaluate("(ids) => engine.tokenizer.decode(ids)", ids)
    bias = no_eos(node)
    request = {"prompt": ids, "max_tokens": 6, "temperature": 0, "logit_bias": bias}
    reply = node.evaluate("async (r) => await engine.completions.create(r)", request)
    check_completion(reply)
    want, _ = reference_generate(tiny, ids, 6, bias=bias)
    assert reply["choices"][0]["text"] == node.evaluate("(t) => engine.tokenizer.decode(t)", want)
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["prompt_tokens"] == len(ids)
    echoed = node.evaluate(
        "async (r) => await engine.completions.create(r)", {**request, "echo": True, "logprobs": 2}
    )
    check_completion(echoed)
    choice = echoed["choices"][0]
    assert choice["text"] == text + reply["choices"][0]["text"]
    assert len(choice["logprobs"]["tokens"]) == 6
    assert choice["logprobs"]["text_offset"][0] == len(text)
    assert all(len(top) == 2 for top in choice["logprobs"]["top_logprobs"])
    chunks = stream(node, {**request, "stream_options": {"include_usage": True}}, kind="text")
    for chunk in chunks:
        check_completion(chunk, chunk=True)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == reply["choices"][0]["text"]
    assert chunks[-1]["usage"]["completion_tokens"] == 6


def test_context_window_and_truncation(node):
    window = node.evaluate("engine.manifest.context_window")
    long = [
        {"role": "system", "content": "Be brief."},
        *[
            {"role": ["user", "assistant"][i % 2], "content": f"Turn {i} " + "words " * 12}
            for i in range(12)
        ],
        {"role": "user", "content": "And now?"},
    ]
    assert len(prompt_ids(node, long)) >= window
    errors = node.evaluate(
        """async (m) => {
            const failure = async (request) => {
                try { await request; }
                catch (e) { return {name: e.name, code: e.code, param: e.param}; }
            };
            const words = "words ".repeat(400);
            return [
                await failure(engine.chat.completions.create({messages: m, max_tokens: 2})),
                await failure(engine.completions.create({prompt: words, max_tokens: 2})),
            ];
        }""",
        long,
    )
    for error, param in zip(errors, ["messages", "prompt"], strict=True):
        assert error == {
            "name": "ContextWindowExceededError",
            "code": "context_length_exceeded",
            "param": param,
        }
    reply = create(node, {"messages": long, "max_tokens": 2, "truncation": "auto"})
    check_chat_completion(reply)
    # What is kept: the system message and the most recent turns, whole, as many as leave
    # room for max_tokens.
    kept = next(
        long[:1] + long[i:]
        for i in range(1, len(long))
        if len(prompt_ids(node, long[:1] + long[i:])) <= window - 2
    )
    assert reply["usage"]["prompt_tokens"] == len(prompt_ids(node, kept))


CONVERSATION = """(count) => [{role: "system", content: "Be brief."}, ...Array.from(
    {length: count}, (_, i) => ({role: ["user", "assistant"][i % 2], content: `m${i}`}))]"""


def test_truncation_leaves_room_for_the_reply(node):
    """Truncation keeps max_tokens free for the reply, or a quarter of the window without."""
    window = node.evaluate("engine.manifest.context_window")
    replies = node.evaluate(
        f"""async (bias) => {{
            const messages = ({CONVERSATION})(2000);
            const request = {{messages, truncation: "auto", logit_bias: bias}};
            return [
                await engine.chat.completions.create({{...request, max_tokens: 8}}),
                await engine.chat.completions.create({{...request, max_tokens: 40}}),
                await engine.chat.completions.create(request),
            ];
        }}""",
        no_eos(node),
    )
    for reply, room in zip(replies, [8, 40, window // 4], strict=True):
        check_chat_completion(reply)
        assert reply["usage"]["prompt_tokens"] <= window - room
        assert reply["usage"]["prompt_tokens"] > window - room - 16  # turns of a few tokens
    for reply, tokens in zip(replies[:2], [8, 40], strict=True):
        assert reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"]["completion_tokens"] == tokens


def test_truncation_of_twenty_thousand_messages_is_quick_and_aborts(node):
    """Truncation costs a few tokenizations of what it keeps, lets the node run (its event loop
    turns at least once every 16 tokenizations), and an abort meanwhile reports the prompt it
    made."""
    window = node.evaluate("engine.manifest.context_window")
    result = node.evaluate(
        f"""async () => {{
            const messages = ({CONVERSATION})(20000);
            const tokenizer = engine.tokenizer;
            const [render, encode] = [tokenizer.applyChatTemplate, tokenizer.encode];
            let renders = 0;
            let encoded = 0;
            let encodes = 0;
            // The most tokenizations in a row with no turn of the event loop between them (an
            // immediate re-armed each turn runs once a turn, before the engine's own immediates
            // queued after it), while the first request truncates.
            let run = 0;
            let longestRun = 0;
            let ticking = true;
            const tick = () => ((run = 0), ticking && setImmediate(tick));
            setImmediate(tick);
            tokenizer.applyChatTemplate = (...args) => (renders++, render.apply(tokenizer, args));
            tokenizer.encode = (text) => {{
                [encoded, encodes, run] = [encoded + text.length, encodes + 1, run + 1];
                longestRun = Math.max(longestRun, run);
                return encode.call(tokenizer, text);
            }};
            try {{
                const request = {{messages, max_tokens: 4, truncation: "auto"}};
                const reply = await engine.chat.completions.create(request);
                const counted = {{renders, encoded, encodes, longestRun}};
                // Aborted by a message, which comes before the engine's first step.
                const controller = new AbortController();
                const channel = new MessageChannel();
                channel.port1.onmessage = () => controller.abort();
                const pending = engine.chat.completions.create(
                    {{...request, signal: controller.signal}});
                channel.port2.postMessage(null);
                const aborted = await pending;
                // A request made after one that truncates does not overtake it.
                const order = [];
                const short = {{messages: messages.slice(-1), max_tokens: 1}};
                await Promise.all([
                    engine.chat.completions.create(request).then(() => order.push("long")),
                    engine.chat.completions.create(short).then(() => order.push("short")),
                ]);
                return {{reply, counted, aborted, order}};
            }} finally {{
                ticking = false;
                [tokenizer.applyChatTemplate, tokenizer.encode] = [render, encode];
            }}
        }}"""
    )
    kept = result["reply"]["usage"]["prompt_tokens"]
    assert window - 4 - 8 < kept <= window - 4
    # A few renders of the kept turns, never of the whole conversation (rendered, some 600,000
    # characters).
    assert result["counted"]["renders"] <= 6, result["counted"]
    assert result["counted"]["encoded"] < 20_000, result["counted"]
    # The node runs at least once every 16 tokenizations (and they were more than that).
    assert result["counted"]["encodes"] > 16, result["counted"]
    assert result["counted"]["longestRun"] <= 16, result["counted"]
    aborted = result["aborted"]
    check_chat_completion(aborted)
    assert aborted["choices"][0]["finish_reason"] == "abort"
    assert aborted["usage"]["completion_tokens"] == 0
    assert aborted["usage"]["prompt_tokens"] == kept
    assert aborted["usage"]["extra"]["prefill_tokens"] == 0
    assert result["order"] == ["long", "short"]


def test_seeds_use_every_bit(node):
    draws = node.evaluate(
        """async (bias) => {
            const draw = async (seed) => (await engine.chat.completions.create({
                messages: [{role: "user", content: "Hi"}], max_tokens: 12, temperature: 1.5,
                seed, logit_bias: bias})).choices[0].message.content;
            const seeds = [1, 2 ** 32 + 1, 7, 2 ** 40 + 7, 0, 2 ** 32, 2 ** 53 - 1];
            const texts = [];
            for (const seed of seeds) texts.push(await draw(seed));
            let refused = null;
            try { await draw(2 ** 53); } catch (e) { refused = {name: e.name, param: e.param}; }
            return {texts, again: await draw(2 ** 32 + 1), refused};
        }""",
        no_eos(node),
    )
    texts = draws["texts"]
    assert len(set(texts)) == len(texts), texts
    assert draws["again"] == texts[1]
    assert draws["refused"] == {"name": "InvalidRequestError", "param": "seed"}


def test_follow_up_turn_prefills_only_new_tokens_and_reset(node):
    first = [{"role": "user", "content": "Hello there, how are you?"}]
    a = create(node, {"messages": first, "max_tokens": 5, "temperature": 0})
    second = first + [
        {"role": "assistant", "content": a["choices"][0]["message"]["content"]},
        {"role": "user", "content": "Good."},
    ]
    b = create(node, {"messages": second, "max_tokens": 5, "temperature": 0})
    # At least the whole first prompt came from the cache (the reply's tokens too, where
    # re-encoding its text gives the same tokens).
    reused = b["usage"]["prompt_tokens"] - b["usage"]["extra"]["prefill_tokens"]
    assert reused >= a["usage"]["prompt_tokens"]
    stats = node.evaluate("engine.runtimeStatsText()")
    assert stats.startswith("prefill: ") and "tok/s, decode: " in stats
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] == reused
    node.evaluate("engine.resetChat()")
    c = create(node, {"messages": second, "max_tokens": 5, "temperature": 0})
    # The conversation is forgotten; the prefix cache's snapshot of the first turn, kept when
    # the second turn wrote past it, stays: at most its rows (the prompt and the reply's tokens
    # decoded) are reused.
    cached = c["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert c["usage"]["extra"]["prefill_tokens"] == c["usage"]["prompt_tokens"] - cached
    assert cached <= a["usage"]["prompt_tokens"] + a["usage"]["completion_tokens"] - 1
    assert c["choices"][0]["message"] == b["choices"][0]["message"]


def test_several_models_in_one_engine(browser, tiny_built):
    q0 = tiny_built("q0f32")
    tiny_built("q4f32")  # built next to it
    request = {"messages": USER, "max_tokens": 6, "temperature": 0}
    with serve_folder(q0.parent) as url:
        page = browser.new_page()
        page.goto(f"{url}/q0f32/manifest.json")
        result = page.evaluate(
            """async ([base, r]) => {
                const kiln = await import(base + "q0f32/kiln.js");
                const appConfig = {model_list: [
                    {model_id: "tiny-f32", model: base + "q0f32/"},
                    {model_id: "tiny-q4", model: base + "q4f32/"},
                ]};
                const progress = [];
                const both = await kiln.CreateEngine(["tiny-f32", "tiny-q4"],
                    {appConfig, initProgressCallback: (p) => progress.push(p.progress)});
                const ask = async (engine, model) => {
                    const reply = await engine.chat.completions.create({...r, model});
                    return [reply.model, reply.choices[0].message.content];
                };
                const one = async (model) => {
                    const engine = await kiln.CreateEngine(model, {appConfig});
                    const answer = await ask(engine, undefined);
                    await engine.unload();
                    return answer;
                };
                let unnamed = null;
                try { await both.chat.completions.create(r); }
                catch (e) { unnamed = {name: e.name, param: e.param}; }
                return {
                    loaded: both.loadedModels,
                    fromBoth: [await ask(both, "tiny-q4"), await ask(both, "tiny-f32")],
                    alone: [await one("tiny-q4"), await one("tiny-f32")],
                    unnamed,
                    progressEnd: progress[progress.length - 1],
                };
            }""",
            [f"{url}/", request],
        )
        page.close()
    assert result["loaded"] == ["tiny-f32", "tiny-q4"]
    assert result["fromBoth"] == result["alone"]
    assert [m for m, _ in result["fromBoth"]] == ["tiny-q4", "tiny-f32"]
    assert result["unnamed"] == {"name": "InvalidRequestError", "param": "model"}
    assert result["progressEnd"] == 1


def test_type_declarations_name_what_the_runtime_exports(node):
    from pathlib import Path

    declared = re.findall(
        r"^export (?:class|function) (\w+)",
        (Path(__file__).parent.parent / "web" / "types" / "kiln.d.ts").read_text(),
        re.M,
    )
    exported = node.evaluate("Object.keys(kiln)")
    assert declared and set(declared) <= set(exported), set(declared) - set(exported)
