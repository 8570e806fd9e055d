"""The product's default model, SmolLM2-135M-Instruct (q4f32), end to end in Chromium."""

import json

import jsonschema
import pytest
from openai_shapes import check_chat_completion
from reference import ReferenceModel
from tokenizers import Tokenizer

MESSAGES = [{"role": "user", "content": "Write a short poem about the sea."}]
TOKENS = 20


@pytest.fixture(scope="module")
def smollm2_page(smollm2_q4, browser):
    from tools.browser import engine_page_for

    with engine_page_for(browser, smollm2_q4) as page:
        yield page


def test_tokenizer_matches_python_tokenizers(smollm2_q4, smollm2_page):
    python = Tokenizer.from_file(str(smollm2_q4 / "tokenizer.json"))
    texts = [
        "Hello world 12345",
        "<|im_start|>user\nWhat's 2+2? Ça va? 你好 🙂<|im_end|>\n",
        "def f(x):\n    return x  # comment\n\n\n",
        "   leading and trailing   ",
    ]
    ids = smollm2_page.evaluate("(ts) => ts.map((t) => engine.tokenizer.encode(t))", texts)
    assert ids == [python.encode(t, add_special_tokens=False).ids for t in texts]


def test_greedy_reply_matches_reference(smollm2_q4, smollm2_page):
    prompt = smollm2_page.evaluate(
        "(m) => engine.tokenizer.encode(engine.tokenizer.applyChatTemplate(m))", MESSAGES
    )
    expected = ReferenceModel(smollm2_q4).greedy(prompt, TOKENS)
    tokens = smollm2_page.evaluate(
        "async ([p, n]) => (await engine.generate(p, {temperature: 0, max_tokens: n})).tokens",
        [prompt, TOKENS],
    )
    assert tokens == expected[: len(tokens)] and len(tokens) >= 16
    tokenizer = Tokenizer.from_file(str(smollm2_q4 / "tokenizer.json"))
    request = {"messages": MESSAGES, "max_tokens": TOKENS, "temperature": 0}
    reply = smollm2_page.evaluate("async (r) => await engine.chat.completions.create(r)", request)
    text = reply["choices"][0]["message"]["content"]
    assert text == tokenizer.decode(tokens, skip_special_tokens=True)
    streamed = smollm2_page.evaluate(
        """async (r) => {
            let text = "";
            for await (const c of await engine.chat.completions.create({...r, stream: true}))
                text += c.choices[0].delta.content ?? "";
            return text;
        }""",
        request,
    )
    assert streamed == text
    # The follow-up turn reuses the cached prefix: only the new tokens are prefilled.
    follow_up = {
        "messages": MESSAGES + [{"role": "assistant", "content": text}],
        "max_tokens": 2,
        "temperature": 0,
    }
    follow_up["messages"].append({"role": "user", "content": "Thanks!"})
    second = smollm2_page.evaluate(
        "async (r) => await engine.chat.completions.create(r)", follow_up
    )
    assert second["usage"]["extra"]["prefill_tokens"] < second["usage"]["prompt_tokens"] / 2
    print(json.dumps(reply["usage"]))


# Twenty schemas of the kinds apps ask for; strings are bounded so that a reply fits in
# max_tokens whatever the model's taste for long names.
NAME = {"type": "string", "minLength": 1, "maxLength": 12}
SCHEMAS = [
    {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]},
    {
        "type": "object",
        "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
    },
    {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}},
        "required": ["color"],
    },
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": NAME, "minItems": 1, "maxItems": 3}},
        "required": ["tags"],
    },
    {
        "type": "object",
        "properties": {"city": NAME, "country": NAME},
        "required": ["city", "country"],
    },
    {
        "type": "object",
        "properties": {
            "x": {"type": "integer", "minimum": -10, "maximum": 10},
            "y": {"type": "integer", "minimum": -10, "maximum": 10},
        },
        "required": ["x", "y"],
    },
    {
        "type": "object",
        "properties": {
            "sentiment": {"enum": ["positive", "negative", "neutral"]},
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["sentiment", "score"],
    },
    {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "maximum": 999},
                    "name": NAME,
                },
                "required": ["id", "name"],
            }
        },
        "required": ["user"],
    },
    {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 9},
        "minItems": 2,
        "maxItems": 4,
    },
    {
        "type": "object",
        "properties": {"title": NAME, "done": {"type": "boolean"}},
        "required": ["title", "done"],
    },
    {
        "type": "object",
        "properties": {
            "language": {"enum": ["python", "javascript", "rust"]},
            "year": {"type": "integer", "minimum": 1950, "maximum": 2030},
        },
        "required": ["language", "year"],
    },
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "reason": {"anyOf": [NAME, {"type": "null"}]}},
        "required": ["ok", "reason"],
    },
    {
        "type": "object",
        "properties": {
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}},
                    "required": ["x"],
                },
                "minItems": 1,
                "maxItems": 2,
            }
        },
        "required": ["points"],
    },
    {
        "type": "object",
        "properties": {"word": {"type": "string", "pattern": "^[a-z]{2,8}$"}},
        "required": ["word"],
    },
    {
        "type": "object",
        "properties": {
            "unit": {"const": "celsius"},
            "value": {"type": "integer", "minimum": -50, "maximum": 50},
        },
        "required": ["unit", "value"],
    },
    {
        "type": "object",
        "properties": {"first": NAME, "last": NAME, "email": {"type": "string", "maxLength": 24}},
        "required": ["first", "last"],
    },
    {
        "type": "object",
        "properties": {"steps": {"type": "array", "items": NAME, "minItems": 2, "maxItems": 2}},
        "required": ["steps"],
    },
    {
        "type": "object",
        "properties": {
            "is_question": {"type": "boolean"},
            "topic": {"enum": ["math", "music", "sports", "other"]},
        },
        "required": ["is_question", "topic"],
    },
    {
        "type": "object",
        "properties": {"price": {"type": "number", "minimum": 0, "maximum": 100}},
        "required": ["price"],
    },
    {
        "type": "object",
        "properties": {
            "animal": NAME,
            "legs": {"type": "integer", "minimum": 0, "maximum": 8},
            "can_fly": {"type": "boolean"},
        },
        "required": ["animal", "legs", "can_fly"],
    },
]
PROMPTS = ["Describe a cat.", "Tell me about Paris.", "Is the sea blue?", "Give an example."]


def test_twenty_json_schemas_parse_and_validate(smollm2_page):
    requests = [
        {
            "messages": [
                {"role": "system", "content": "You answer in JSON."},
                {"role": "user", "content": PROMPTS[i % len(PROMPTS)]},
            ],
            "max_tokens": 64,
            "temperature": 0,
            # Both forms users meet: OpenAI's json_schema, and json_object with a schema.
            "response_format": (
                {
                    "type": "json_schema",
                    "json_schema": {"name": f"s{i}", "schema": s, "strict": True},
                }
                if i % 2 == 0
                else {"type": "json_object", "schema": json.dumps(s)}
            ),
        }
        for i, s in enumerate(SCHEMAS)
    ]
    replies = smollm2_page.evaluate(
        """async (requests) => {
            const out = [];
            for (const r of requests) out.push(await engine.chat.completions.create(r));
            return out;
        }""",
        requests,
    )
    for schema, reply in zip(SCHEMAS, replies, strict=True):
        check_chat_completion(reply)
        text = reply["choices"][0]["message"]["content"]
        assert reply["choices"][0]["finish_reason"] == "stop", text
        jsonschema.validate(json.loads(text), schema)
    any_json = smollm2_page.evaluate(
        "async (m) => await engine.chat.completions.create("
        "{messages: m, max_tokens: 64, temperature: 0, response_format: {type: 'json_object'}})",
        [{"role": "user", "content": "Give me a JSON object with your name."}],
    )
    assert isinstance(json.loads(any_json["choices"][0]["message"]["content"]), dict)


def test_stop_string_and_seed_on_the_real_model(smollm2_page):
    base = {"messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    create = "async (r) => await engine.chat.completions.create(r)"
    full = smollm2_page.evaluate(create, base)["choices"][0]["message"]["content"]
    stop = full.split()[3]
    cut = smollm2_page.evaluate(create, {**base, "stop": [stop]})
    check_chat_completion(cut)
    assert cut["choices"][0]["message"]["content"] == full[: full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    sampled = [
        smollm2_page.evaluate(create, {**base, "temperature": 0.8, "seed": seed})
        for seed in (3, 3, 4)
    ]
    texts = [r["choices"][0]["message"]["content"] for r in sampled]
    assert texts[0] == texts[1] != texts[2]
