"""Tool calling in chat.completions.create, on the tiny model with a Hermes-style chat
template of the tests' own (the format Qwen2.5's template asks for): calls forced by the
grammar parse and validate against their tool's parameters, streamed deltas rebuild the same
calls, a template without tools is refused, and tool results go back into the prompt; then
Qwen2.5-Coder with its own template. The runtime runs in Node.js (tools/node.py): parsing and
constraining calls needs no browser."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from compiler.build import build
from tools.node import node_engine

# Tools of the kinds apps give: enums, nested objects, arrays, bounded numbers, required fields
# (strings are enums: a random model's free strings are bytes that are not text).
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": ["Paris", "Lima", "Oslo"]},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add_event",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "enum": ["lunch", "call", "gym"]},
                    "when": {
                        "type": "object",
                        "properties": {
                            "day": {"type": "integer", "minimum": 1, "maximum": 31},
                            "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                        },
                        "required": ["day", "hour"],
                        "additionalProperties": False,
                    },
                    "guests": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["Ana", "Bo"]},
                        "maxItems": 2,
                    },
                },
                "required": ["title", "when"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_volume",
            "parameters": {
                "type": "object",
                "properties": {"level": {"type": "number", "minimum": 0, "maximum": 1}},
                "required": ["level"],
                "additionalProperties": False,
            },
        },
    },
]
# A Hermes-style template: tools named in a system turn (only named: the tiny model's context
# is short), calls and results as tags.
TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools:{%- for tool in tools %} {{ tool.function.name }}"
    "{%- endfor %}<|im_end|>\n{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}"
    "\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}"
    "{%- for call in message.tool_calls or [] %}\n<tool_call>\n"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}'
    "\n</tool_call>{%- endfor %}<|im_end|>\n{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tool_model(tiny_hf, tmp_path_factory):
    """The tiny model built with its whole context (256) and the template above."""
    folder = build(str(tiny_hf), "q0f32", tmp_path_factory.mktemp("tools") / "tiny-tools")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    return folder


def create(node, request: dict) -> dict:
    return node.evaluate(
        """async (r) => {
            try {
                if (!r.stream) return {reply: await engine.chat.completions.create(r)};
                const chunks = [];
                for await (const c of await engine.chat.completions.create(r)) chunks.push(c);
                return {chunks};
            } catch (e) { return {error: {name: e.name, param: e.param, message: e.message}}; }
        }""",
        request,
    )


def schema_of(name: str) -> dict:
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def rebuilt(chunks: list[dict]) -> tuple[str, list[dict], str]:
    """Content, calls and finish reason from a stream's deltas, as OpenAI's clients join them."""
    content, calls, finish = "", [], None
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk, strict=True)
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                if "id" in call:
                    calls.append(
                        {"id": call["id"], "name": call["function"]["name"], "arguments": ""}
                    )
                calls[call["index"]]["arguments"] += call["function"]["arguments"]
            finish = choice["finish_reason"] or finish
    return content, calls, finish


def test_required_and_named_calls_follow_their_parameters(tool_model):
    base = {"messages": USER, "tools": TOOLS, "max_tokens": 180, "temperature": 0}
    with node_engine(tool_model, backend="wasm") as node:
        required = create(node, {**base, "tool_choice": "required", "parallel_tool_calls": False})
        named = [
            create(node, {**base, "tool_choice": {"type": "function", "function": {"name": n}}})
            for n in ("add_event", "set_volume")
        ]
        streamed = create(
            node, {**base, "tool_choice": "required", "parallel_tool_calls": False, "stream": True}
        )
        # One call each: the random-weight model, free to add calls, may run to max_tokens
        # (which seed does depends on the generator, not on the engine).
        sampled = [
            create(
                node,
                {
                    **base,
                    "tool_choice": "required",
                    "parallel_tool_calls": False,
                    "temperature": 1,
                    "seed": s,
                },
            )
            for s in range(4)
        ]
    for out in [required, *named, *sampled]:
        assert "reply" in out, out
        reply = out["reply"]
        ChatCompletion.model_validate(reply, strict=True)
        choice = reply["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice
        assert choice["message"]["content"] is None
        for call in choice["message"]["tool_calls"]:
            assert call["type"] == "function" and call["id"].startswith("call_")
            jsonschema.validate(
                json.loads(call["function"]["arguments"]), schema_of(call["function"]["name"])
            )
    assert len(required["reply"]["choices"][0]["message"]["tool_calls"]) == 1
    for out, name in zip(named, ("add_event", "set_volume"), strict=True):
        assert [
            c["function"]["name"] for c in out["reply"]["choices"][0]["message"]["tool_calls"]
        ] == [name]
    content, calls, finish = rebuilt(streamed["chunks"])
    expected = required["reply"]["choices"][0]["message"]["tool_calls"]
    assert content == "" and finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in expected
    ]
    assert (
        sum(
            len(c.get("choices", [{}])[0].get("delta", {}).get("tool_calls") or [])
            for c in streamed["chunks"]
        )
        > 2
    )


def test_none_gives_text_and_results_go_back_into_the_prompt(tool_model):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
    }
    history = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    base = {"tools": TOOLS, "max_tokens": 8, "temperature": 0}
    with node_engine(tool_model, backend="wasm") as node:
        none = create(node, {**base, "messages": USER, "tool_choice": "none"})
        after = create(node, {**base, "messages": history, "tool_choice": "none"})
        prompt = node.evaluate(
            "(m) => engine.tokenizer.applyChatTemplate(m, true, null)",
            [
                {
                    **m,
                    "tool_calls": [
                        {**call, "function": {**call["function"], "arguments": {"city": "Paris"}}}
                    ],
                }
                if m.get("tool_calls")
                else m
                for m in history
            ],
        )
        bad = [
            create(
                node,
                {
                    **base,
                    "messages": USER,
                    "tool_choice": {"type": "function", "function": {"name": "nope"}},
                },
            ),
            create(
                node,
                {
                    **base,
                    "messages": USER,
                    "tools": [{"type": "function", "function": {"name": "a b"}}],
                },
            ),
            create(node, {**base, "messages": [*USER, {"role": "tool", "content": "x"}]}),
            create(
                node,
                {
                    **base,
                    "messages": [
                        {
                            "role": "assistant",
                            "content": "",
                            "tool_calls": [
                                {
                                    "id": "1",
                                    "type": "function",
                                    "function": {"name": "f", "arguments": "{oops"},
                                }
                            ],
                        }
                    ],
                },
            ),
        ]
    for out in (none, after):
        choice = out["reply"]["choices"][0]
        assert "tool_calls" not in choice["message"] and choice["finish_reason"] in (
            "stop",
            "length",
        )
        ChatCompletion.model_validate(out["reply"], strict=True)
    assert "<tool_response>\n18 degrees, sunny\n</tool_response>" in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert [b["error"]["param"] for b in bad] == [
        "tool_choice",
        "tools[0].function.name",
        "messages[1].tool_call_id",
        "messages[0].tool_calls[0].function.arguments",
    ]


def test_a_template_without_tools_is_refused_unless_one_is_given(tiny_hf, tmp_path):
    plain = build(str(tiny_hf), "q0f32", tmp_path / "plain")  # ChatML, no tools
    request = {
        "messages": USER,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "set_volume"}},
        "parallel_tool_calls": False,
        "max_tokens": 80,
    }
    with node_engine(plain, backend="wasm") as node:
        out = create(node, request)
        # The same model with a template that renders tools (appConfig's chat_template).
        given = node.evaluate(
            """async ([url, template, request]) => {
                const appConfig = {model_list: [
                    {model_id: "tiny", model: url, chat_template: template}]};
                const engine = await kiln.CreateEngine("tiny", {appConfig, backend: "wasm"});
                return (await engine.chat.completions.create(request)).choices[0];
            }""",
            [str(plain), TEMPLATE, request],
        )
    assert out["error"]["name"] == "InvalidRequestError" and out["error"]["param"] == "tools"
    assert given["finish_reason"] == "tool_calls", given
    (call,) = given["message"]["tool_calls"]
    assert call["function"]["name"] == "set_volume"
    jsonschema.validate(json.loads(call["function"]["arguments"]), schema_of("set_volume"))


# ---------------------------------------------------------------------------------------------
# Qwen2.5-Coder-0.5B-Instruct as distributed, whose chat template lists tools


def function(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


QWEN_TOOLS = [
    function(
        "get_weather",
        "Current weather in a city",
        {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        ["city", "unit"],
    ),
    function(
        "send_email",
        "Send an email",
        {
            "to": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
            "subject": {"type": "string", "maxLength": 60},
            "body": {"type": "string", "maxLength": 200},
        },
        ["to", "subject", "body"],
    ),
    function(
        "create_event",
        "Add an event to the calendar",
        {
            "title": {"type": "string"},
            "start": {
                "type": "object",
                "properties": {
                    "day": {"type": "integer", "minimum": 1, "maximum": 31},
                    "month": {"type": "integer", "minimum": 1, "maximum": 12},
                    "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                },
                "required": ["day", "month", "hour"],
                "additionalProperties": False,
            },
            "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 480},
        },
        ["title", "start"],
    ),
    function(
        "set_thermostat",
        "Set the heating temperature",
        {"temperature": {"type": "number", "minimum": 5, "maximum": 30}},
        ["temperature"],
    ),
    function(
        "search_files",
        "Search the user's files",
        {
            "query": {"type": "string"},
            "kinds": {
                "type": "array",
                "items": {"type": "string", "enum": ["pdf", "image", "text", "code"]},
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        },
        ["query"],
    ),
    function(
        "convert_currency",
        "Convert an amount of money",
        {
            "amount": {"type": "number", "minimum": 0},
            "from": {"type": "string", "enum": ["EUR", "USD", "GBP", "JPY"]},
            "to": {"type": "string", "enum": ["EUR", "USD", "GBP", "JPY"]},
        },
        ["amount", "from", "to"],
    ),
    function(
        "add_todo",
        "Add a task to the to-do list",
        {
            "task": {"type": "string"},
            "priority": {"type": "string", "enum": ["low", "normal", "high"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        },
        ["task"],
    ),
    function(
        "play_music",
        "Play music",
        {
            "artist": {"type": "string"},
            "shuffle": {"type": "boolean"},
            "volume": {"type": "number", "minimum": 0, "maximum": 1},
        },
        ["artist"],
    ),
    function(
        "translate",
        "Translate a text",
        {
            "text": {"type": "string"},
            "target": {"type": "string", "enum": ["en", "fr", "de", "es", "ja"]},
        },
        ["text", "target"],
    ),
    function(
        "book_table",
        "Book a restaurant table",
        {
            "restaurant": {"type": "string"},
            "party": {
                "type": "object",
                "properties": {
                    "adults": {"type": "integer", "minimum": 1, "maximum": 12},
                    "children": {"type": "integer", "minimum": 0, "maximum": 8},
                },
                "required": ["adults"],
                "additionalProperties": False,
            },
            "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
        },
        ["restaurant", "party", "time"],
    ),
]
QUESTIONS = {
    "get_weather": "What is the weather in Lisbon, in celsius?",
    "send_email": "Email bob@example.com that the meeting moved to Friday.",
    "create_event": "Put a dentist appointment on my calendar for March 3rd at 2pm.",
    "set_thermostat": "Set the heating to 21 degrees.",
    "convert_currency": "How much is 50 euros in dollars?",
    "book_table": "Book a table for 2 adults at Chez Anna at 19:30.",
}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def qwen_node(qwen):
    """One engine for the Qwen2.5 tests: their prompts share the ten tools' system prompt (its
    prefill, about 1,300 tokens, runs once) and their grammars (each compiled once)."""
    with node_engine(qwen, backend="wasm") as node:
        yield node


def test_qwen_calls_tools_with_valid_arguments(qwen_node):
    base = {"tools": QWEN_TOOLS, "max_tokens": 80, "temperature": 0}
    node = qwen_node
    required = {
        name: create(node, {**base, "messages": user(q), "tool_choice": "required"})
        for name, q in QUESTIONS.items()
    }
    named = create(
        node,
        {
            **base,
            "messages": user("Remind me to water the plants."),
            "tool_choice": {"type": "function", "function": {"name": "add_todo"}},
        },
    )
    none = create(node, {**base, "messages": user("Say hello."), "tool_choice": "none"})
    auto = [
        create(node, {**base, "messages": user(q)})
        for q in ("What is the weather in Rome, in fahrenheit?", "Write a haiku about rain.")
    ]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in QWEN_TOOLS}
    # "auto": text, or calls that validate (this small model answers the weather question in
    # text, a JSON block of its own, rather than with a call).
    for out in auto:
        ChatCompletion.model_validate(out["reply"], strict=True)
        message = out["reply"]["choices"][0]["message"]
        for call in message.get("tool_calls") or []:
            jsonschema.validate(
                json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]]
            )
        assert message.get("tool_calls") or message["content"].strip()
    chosen = {}
    for name, out in [*required.items(), ("add_todo", named)]:
        assert "reply" in out, out
        ChatCompletion.model_validate(out["reply"], strict=True)
        choice = out["reply"]["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice
        for call in choice["message"]["tool_calls"]:
            assert call["function"]["name"] in schemas
            arguments = json.loads(call["function"]["arguments"])
            jsonschema.validate(arguments, schemas[call["function"]["name"]])
        chosen[name] = choice["message"]["tool_calls"][0]["function"]["name"]
    assert chosen["add_todo"] == "add_todo"
    # The model picks the tool each question is about (it is free to choose among the ten).
    assert sum(chosen[name] == name for name in QUESTIONS) >= len(QUESTIONS) - 1, chosen
    reply = none["reply"]["choices"][0]
    assert "tool_calls" not in reply["message"] and reply["message"]["content"].strip()


def test_qwen_round_trip_streamed(qwen_node):
    question = user("What is the weather in Oslo, in celsius?")
    base = {"tools": QWEN_TOOLS, "max_tokens": 60, "temperature": 0, "stream": True}
    node = qwen_node
    first = create(node, {**base, "messages": question, "tool_choice": "required"})
    content, calls, finish = rebuilt(first["chunks"])
    assert finish == "tool_calls" and content == "" and len(calls) >= 1
    call = calls[0]
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"])["city"].lower() == "oslo"
    history = [
        *question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": -3}'},
    ]
    final = create(node, {**base, "messages": history})
    content, calls, finish = rebuilt(final["chunks"])
    assert finish == "stop" and not calls and "-3" in content, content
