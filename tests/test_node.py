"""The runtime in Node.js: `node app.mjs` importing the bundled runtime answers the same
requests as Chromium on the CPU backend, token for token. Each request set is one JavaScript
function, run once by Node (the model folder read from a path, a file: URL or an HTTP URL) and
once in a Chromium page (served over HTTP), both on the WebAssembly kernels."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_tools import TEMPLATE
from tiny_bert import make_bert

from compiler.build import build
from tools.browser import serve_folder
from tools.node import RUNTIME

# A function whose arguments have few forms, asked for in a short question, so that the random
# model's call (about a token a byte) closes within the tiny build's context.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "set_mode",
            "parameters": {
                "type": "object",
                "properties": {"mode": {"enum": ["on", "off"]}},
                "required": ["mode"],
                "additionalProperties": False,
            },
        },
    }
]

# The requests, as one function of the runtime's module, a model location and options; what
# it returns is compared between Node and Chromium. Greedy everywhere, so that the two sides
# must pick the same tokens; logprobs name the tokens picked and their values.
CHAT_REQUESTS = """async (kiln, url, {template, tools}) => {
  const appConfig = {model_list: [{model_id: "tiny", model: url, chat_template: template}]};
  const engine = await kiln.CreateEngine("tiny", {appConfig, backend: "wasm"});
  const messages = [{role: "user", content: "Write a haiku about Node."}];
  const greedy = {temperature: 0, max_tokens: 12};
  const chat = await engine.chat.completions.create({messages, ...greedy, logprobs: true});
  const chunks = [];
  for await (const c of await engine.chat.completions.create({messages, ...greedy, stream: true}))
    chunks.push(c.choices[0]?.delta?.content ?? "");
  const completion = await engine.completions.create({prompt: "Once upon a time", ...greedy,
                                                      logprobs: 2});
  const ids = await engine.generate([5, 17, 42, 100, 7, 8, 9, 10, 11],
                                    {temperature: 0, max_tokens: 16, ignore_eos: true});
  const schema = {type: "object", properties: {name: {type: "string", maxLength: 8},
                  age: {type: "integer", minimum: 0, maximum: 120}},
                  required: ["name", "age"], additionalProperties: false};
  const structured = await engine.chat.completions.create({messages, temperature: 0,
    max_tokens: 60, response_format: {type: "json_schema", json_schema: {name: "p", schema}}});
  const tool = await engine.chat.completions.create({
    messages: [{role: "user", content: "Mode?"}], tools, temperature: 0, max_tokens: 90,
    tool_choice: {type: "function", function: {name: "set_mode"}}, parallel_tool_calls: false});
  const stats = await engine.runtimeStats();
  return {
    chat: chat.choices[0].message.content,
    chat_finish: chat.choices[0].finish_reason,
    chat_tokens: chat.choices[0].logprobs.content.map((t) => [t.token, t.logprob]),
    streamed: chunks.join(""),
    completion: completion.choices[0].text,
    completion_logprobs: completion.choices[0].logprobs.top_logprobs,
    generated: ids.tokens,
    structured: structured.choices[0].message.content,
    structured_finish: structured.choices[0].finish_reason,
    tool_finish: tool.choices[0].finish_reason,
    tool_calls: (tool.choices[0].message.tool_calls ?? []).map((c) => [c.function.name,
                                                                       c.function.arguments]),
    backend: stats.backend,
    threads: stats.threads,
  };
}"""

EMBED_REQUESTS = """async (kiln, url) => {
  const engine = await kiln.CreateEngine(url, {backend: "wasm"});
  const input = ["The quick brown fox.", "fox", "Über Café naïve façade", "数据 模型"];
  const {data, usage} = await engine.embeddings.create({input});
  const b64 = await engine.embeddings.create({input: "fox", encoding_format: "base64"});
  return {vectors: data.map((d) => d.embedding), usage, base64: b64.data[0].embedding,
          backend: (await engine.runtimeStats()).backend};
}"""

SMOLLM2_REQUESTS = """async (kiln, url) => {
  const engine = await kiln.CreateEngine(url, {backend: "wasm"});
  const reply = await engine.chat.completions.create({
    messages: [{role: "user", content: "What is the capital of France?"}],
    temperature: 0, max_tokens: 6, logprobs: true});
  return {content: reply.choices[0].message.content,
          tokens: reply.choices[0].logprobs.content.map((t) => [t.token, t.logprob]),
          backend: (await engine.runtimeStats()).backend};
}"""


def run_node(requests: str, location: str, options: dict | None = None) -> dict:
    """`requests` run by a Node script that imports the bundled runtime by its path; the
    script is plain `node app.mjs`, no flags."""
    script = (
        f"import * as kiln from {json.dumps(RUNTIME.as_uri())};\n"
        f"const requests = {requests};\n"
        "const [location, options] = [process.argv[2], JSON.parse(process.argv[3])];\n"
        "process.stdout.write(JSON.stringify(await requests(kiln, location, options)));\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
    with tempfile.TemporaryDirectory() as scratch:
        app = Path(scratch) / "app.mjs"
        app.write_text(script)
        done = subprocess.run(
            ["node", str(app), location, json.dumps(options or {})],
            capture_output=True,
            text=True,
            timeout=120,  # a script that finishes must end: idle threads hold no process
            env=env,
        )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_chromium(browser, folder: Path, requests: str, options: dict | None = None) -> dict:
    """The same `requests` in a Chromium page, the folder served over HTTP."""
    page = browser.new_page()
    try:
        with serve_folder(folder) as url:
            page.goto(f"{url}/manifest.json")
            return page.evaluate(
                f"""async ([url, options]) => {{
                    const kiln = await import(url + "kiln.js");
                    return ({requests})(kiln, url, options);
                }}""",
                [f"{url}/", options or {}],
            )
    finally:
        page.close()


def assert_same_tokens(node: list, chromium: list) -> None:
    """The same tokens, with log-probabilities equal up to float32 rounding."""
    assert [t for t, _ in node] == [t for t, _ in chromium]
    np.testing.assert_allclose([p for _, p in node], [p for _, p in chromium], atol=1e-4)


def test_node_answers_as_chromium_on_the_cpu(tiny_built, browser):
    folder = tiny_built("q0f32")
    # Kernels that Node 20 compiles only with V8's relaxed-SIMD flag, which the runtime sets.
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "relaxed-simd" in manifest["variants"]["wasm"]["wasm"]["features"]
    options = {"template": TEMPLATE, "tools": TOOLS}
    chromium = run_chromium(browser, folder, CHAT_REQUESTS, options)
    node = run_node(CHAT_REQUESTS, str(folder), options)
    assert node["backend"] == chromium["backend"] == "wasm"
    # One thread per core, through worker_threads (the page, cross-origin isolated, likewise).
    assert node["threads"] == chromium["threads"] == min(len(os.sched_getaffinity(0)), 16)
    assert_same_tokens(node["chat_tokens"], chromium["chat_tokens"])
    assert len(node["chat_tokens"]) == 12 and node["chat_finish"] == "length"
    for key in ("chat", "streamed", "completion", "generated", "structured", "tool_calls"):
        assert node[key] == chromium[key], key
    assert node["streamed"] == node["chat"]
    top = zip(node["completion_logprobs"], chromium["completion_logprobs"], strict=True)
    for ours, theirs in top:
        assert ours.keys() == theirs.keys()
        np.testing.assert_allclose(list(ours.values()), [theirs[k] for k in ours], atol=1e-4)
    # Structured output and the tool call hold to their schemas in Node too.
    assert node["structured_finish"] == "stop"
    person = json.loads(node["structured"])
    assert set(person) == {"name", "age"} and 0 <= person["age"] <= 120
    assert node["tool_finish"] == "tool_calls"
    ((name, arguments),) = node["tool_calls"]
    assert name == "set_mode" and json.loads(arguments) in ({"mode": "on"}, {"mode": "off"})


def test_node_reads_a_folder_from_a_file_url_and_over_http(tiny_built):
    folder = tiny_built("q0f32")
    options = {"template": TEMPLATE, "tools": TOOLS}
    from_path = run_node(CHAT_REQUESTS, str(folder), options)
    from_file_url = run_node(CHAT_REQUESTS, folder.as_uri() + "/", options)
    with serve_folder(folder) as url:
        over_http = run_node(CHAT_REQUESTS, f"{url}/", options)
    assert from_file_url == from_path
    assert over_http == from_path


def test_node_asked_for_webgpu_or_a_missing_folder(tiny_built, tmp_path):
    """Without WebGPU (no `webgpu` package here), asking for it is the named error; a folder
    that is not there is a ModelLoadError naming the file."""
    errors = run_node(
        """async (kiln, url) => {
            const out = [];
            for (const [where, backend] of [[url, "webgpu"], [url + "/missing", "auto"]]) {
                try { await kiln.CreateEngine(where, {backend}); out.push(null); }
                catch (e) { out.push({name: e.name, message: e.message}); }
            }
            return out;
        }""",
        str(tiny_built("q0f32")),
    )
    assert errors[0]["name"] == "WebGPUUnavailableError"
    assert "Node.js" in errors[0]["message"] and 'backend: "wasm"' in errors[0]["message"]
    assert errors[1]["name"] == "ModelLoadError"
    assert "missing/manifest.json" in errors[1]["message"] and "404" in errors[1]["message"]


@pytest.fixture(scope="module")
def tiny_bert_built(tmp_path_factory) -> Path:
    folder = make_bert(tmp_path_factory.mktemp("bert") / "hf", seed=5)
    return build(str(folder), None, tmp_path_factory.mktemp("built") / "tiny-bert")


def test_node_embeddings_as_chromium(tiny_bert_built, browser):
    node = run_node(EMBED_REQUESTS, str(tiny_bert_built))
    chromium = run_chromium(browser, tiny_bert_built, EMBED_REQUESTS)
    assert node["backend"] == chromium["backend"] == "wasm"
    assert node["usage"] == chromium["usage"]
    np.testing.assert_allclose(node["vectors"], chromium["vectors"], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(node["vectors"], axis=1), 1, atol=1e-5)
    assert node["base64"] == chromium["base64"]


def test_node_smollm2_greedy_as_chromium(smollm2, browser):
    """The default model: a few greedy tokens, the same in Node and in Chromium."""
    node = run_node(SMOLLM2_REQUESTS, str(smollm2))
    chromium = run_chromium(browser, smollm2, SMOLLM2_REQUESTS)
    assert node["backend"] == chromium["backend"] == "wasm"
    assert_same_tokens(node["tokens"], chromium["tokens"])
    assert node["content"] == chromium["content"] and len(node["tokens"]) > 0
