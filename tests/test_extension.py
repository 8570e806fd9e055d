"""The Chrome extension: built from the tiny model, loaded unpacked in real Chromium (new
headless mode): its popup answering with the real model, its pages sharing the one engine of
its offscreen document in turns, and the Prompt API in its pages, on the CPU backend and
WebGPU."""

from __future__ import annotations

import json
import os
import re
import time
import zipfile

import jsonschema
import pytest
from fair_turns import ASK, OTHER, REQUEST, check_closed_mid_stream, check_rotation

from compiler.extension import CONTENT_SECURITY_POLICY, build_extension
from tools.browser import CHROMIUM, CHROMIUM_ARGS, serve_folder

SENTENCE = "Quillfeather counts nine violet herons."
QUESTION = "Who counts herons?"

# Connects an extension page to the extension's one engine (engine.js) as window.engine,
# with `backend` (null: "auto"); says whether the model was found loaded.
CONNECT = """async (backend) => {
    const { connectEngine } = await import(chrome.runtime.getURL("engine.js"));
    window.kiln = await import(chrome.runtime.getURL("kiln.js"));
    const progress = [];
    window.engine = await connectEngine({backend: backend ?? undefined,
        initProgressCallback: (p) => progress.push(p)});
    return {alreadyLoaded: progress.some((p) => p.alreadyLoaded),
            backend: (await engine.runtimeStats()).backend,
            weightCache: await caches.has(kiln.WEIGHT_CACHE)};
}"""

# Records every state of the answer being written, to tell a streamed answer from one that
# appears at once.
WATCH = """() => {
    window.answerStates = [];
    new MutationObserver(() => {
        const item = document.querySelector("#log li.assistant:last-child");
        if (item && item.textContent !== window.answerStates.at(-1))
            window.answerStates.push(item.textContent);
    }).observe(document.getElementById("log"),
               {childList: true, subtree: true, characterData: true});
}"""

STOP_ON_FIRST_WORDS = """() => {
    new MutationObserver((_, observer) => {
        const item = document.querySelector("#log li.assistant:last-child");
        if (item?.textContent && !document.getElementById("stop").hidden) {
            observer.disconnect();
            document.getElementById("stop").click();
        }
    }).observe(document.getElementById("log"),
               {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def extension(tiny_built, tmp_path_factory):
    return build_extension(tiny_built("q4f32"), tmp_path_factory.mktemp("ext") / "tiny-extension")


@pytest.fixture(scope="module")
def context(playwright, extension, tmp_path_factory):
    folder, _ = extension
    context = playwright.chromium.launch_persistent_context(
        tmp_path_factory.mktemp("profile"),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS
        + [
            f"--disable-extensions-except={folder}",
            f"--load-extension={folder}",
            # Lets the test click the toolbar button over CDP (Extensions.triggerAction).
            "--enable-unsafe-extension-debugging",
        ],
    )
    yield context
    context.close()


@pytest.fixture(scope="module")
def worker(context):
    workers = [w for w in context.service_workers if w.url.endswith("/background.js")]
    return workers[0] if workers else context.wait_for_event("serviceworker")


def wait_until(page, predicate: str, arg=None, timeout: float = 120) -> None:
    """Polls `predicate` (a JS function) with page.evaluate: the pages' CSP forbids the string
    evaluation wait_for_function uses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {predicate}")
        time.sleep(0.1)


def extension_id(worker) -> str:
    return worker.url.split("/")[2]


def open_popup(context, worker, query: str = ""):
    popup = context.new_page()
    popup.goto(f"chrome-extension://{extension_id(worker)}/popup.html{query}")
    wait_until(
        popup,
        "() => !document.getElementById('send').disabled"
        " || !document.getElementById('problem').hidden",
    )
    assert popup.locator("#problem").is_hidden(), popup.locator("#problem").text_content()
    popup.click("#settings summary")
    popup.fill("#max-tokens", "12")
    popup.fill("#temperature", "0")
    popup.evaluate(WATCH)
    return popup


def ask(popup, question: str, button: str = "#send") -> str:
    """Asks from the popup and waits for the whole answer."""
    answers = popup.locator("#log li.assistant").count()
    assert popup.locator("#problem").is_hidden()
    popup.evaluate("window.answerStates = []")
    popup.fill("#prompt", question)
    popup.click(button)
    wait_until(
        popup,
        """(n) => (document.querySelectorAll('#log li.assistant').length > n
                   && document.getElementById('stop').hidden)
                  || !document.getElementById('problem').hidden""",
        answers,
    )
    assert popup.locator("#problem").is_hidden(), popup.locator("#problem").text_content()
    return popup.locator("#log li.assistant").last.text_content()


def prompt_tokens(popup) -> int:
    return int(re.match(r"(\d+) prompt tokens", popup.text_content("#stats")).group(1))


def test_package_holds_model_runtime_and_strict_manifest(extension, tiny_built):
    folder, archive = extension
    assert folder.name == "tiny-extension" and archive == folder.with_name("tiny-extension.zip")
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("manifest.json"))
    assert names == {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert manifest["manifest_version"] == 3
    assert sorted(manifest["permissions"]) == ["activeTab", "offscreen", "scripting", "storage"]
    assert "host_permissions" not in manifest and "content_scripts" not in manifest
    assert manifest["content_security_policy"] == {"extension_pages": CONTENT_SECURITY_POLICY}
    assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert manifest["background"] == {"service_worker": "background.js", "type": "module"}
    assert manifest["action"]["default_popup"] == "popup.html"
    # The model folder under model/, its files those its manifest names.
    model = json.loads((tiny_built("q4f32") / "manifest.json").read_text())
    assert json.loads((folder / "model" / "manifest.json").read_text()) == model
    for shard in model["shards"]:
        assert f"model/{shard['file']}" in names
    assert {"model/tokenizer.json", "model/kernels-software.json", "kiln.js"} <= names
    # Every runtime chunk, none of the chat site's page.
    assert any(re.fullmatch(r"kiln-chunk-.*\.js", n) for n in names)
    assert not names & {"index.html", "chat.js", "chat.css", "model/kiln.js", "model/index.html"}
    assert {"popup.html", "popup.js", "offscreen.html", "offscreen.js", "background.js"} <= names
    assert {"engine.js", "prompt_api.js"} <= names
    # No inline script or style in the extension's pages.
    for page in ("popup.html", "offscreen.html"):
        html = (folder / page).read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son\w+=", html)
    assert not list(folder.parent.glob(".tiny-extension.*")), "staging folder left behind"


def test_popup_streams_an_answer_and_the_model_stays_loaded(context, worker):
    popup = open_popup(context, worker)
    answer = ask(popup, "Tell me about WebGPU.")
    assert answer
    # The offscreen document is cross-origin isolated (the manifest's COOP/COEP), so the CPU
    # backend that SwiftShader leads to runs a thread per core.
    stats = popup.locator("#stats").text_content()
    threads = min(os.cpu_count() or 1, 16)
    expected = f"backend: wasm (CPU, {threads} threads)" if threads > 1 else "backend: wasm"
    assert expected in stats
    states = popup.evaluate("window.answerStates")
    assert len(states) >= 3 and states[-1] == answer  # written piece by piece
    assert all(answer.startswith(s) for s in states)
    first = popup.evaluate(CONNECT)
    # Loaded once, by the popup; read from model/, with no copy in the Cache API.
    assert first == {"alreadyLoaded": True, "backend": "wasm", "weightCache": False}
    popup.close()

    # The popup closed, the engine did not: a new popup carries on without loading again.
    popup = open_popup(context, worker)
    assert popup.locator("#log li.assistant").count() == 1  # the conversation was kept
    assert ask(popup, "And what else?")
    assert popup.evaluate(CONNECT) == first
    offscreen = worker.evaluate(
        "chrome.runtime.getContexts({contextTypes: ['OFFSCREEN_DOCUMENT']}).then((c) => c.length)"
    )
    assert offscreen == 1

    # Stop aborts the request in progress; what was written stays, marked as stopped. The
    # popup clicks it as its first words arrive: the tiny model writes 100 tokens on the CPU
    # backend faster than a click from here could follow them.
    popup.fill("#max-tokens", "100")
    popup.click("#new-chat")
    popup.evaluate(STOP_ON_FIRST_WORDS)
    popup.fill("#prompt", "Write a long story.")
    popup.click("#send")
    popup.wait_for_selector("#log li.assistant.aborted", timeout=60_000)
    assert popup.locator("#log li.assistant").last.text_content()
    assert popup.locator("#stop").is_hidden()
    popup.close()


def test_ask_about_this_page_reads_the_active_tab(context, worker, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(f"<!doctype html><title>Herons</title><p>{SENTENCE}</p>")
    tab_ids = "chrome.tabs.query({}).then((tabs) => tabs.map((t) => t.id))"
    with serve_folder(site) as url:
        before = set(worker.evaluate(tab_ids))
        page = context.new_page()
        page.goto(f"{url}/index.html")
        (tab_id,) = set(worker.evaluate(tab_ids)) - before
        popup = open_popup(context, worker, f"?tab={tab_id}")

        # No host permissions: until the user clicks the toolbar button on the page, the
        # extension cannot read it.
        popup.click("#new-chat")
        popup.fill("#prompt", QUESTION)
        popup.click("#ask-page")
        popup.wait_for_selector("#problem:not([hidden])")
        assert "Cannot read this page" in popup.text_content("#problem")

        # The toolbar button, clicked over CDP: Chrome opens the real popup and grants
        # activeTab for the page's tab.
        page.bring_to_front()  # the user looks at the page and clicks the button
        cdp = context.browser.new_browser_cdp_session()
        targets = cdp.send("Target.getTargets", {"filter": [{"type": "tab"}]})["targetInfos"]
        (target,) = [t for t in targets if t["url"] == f"{url}/index.html"]
        ext_id = extension_id(worker)
        cdp.send("Extensions.triggerAction", {"id": ext_id, "targetId": target["targetId"]})
        popup_url = f"chrome-extension://{ext_id}/popup.html"
        deadline = time.monotonic() + 10
        while not any(
            t["url"] == popup_url
            for t in cdp.send("Target.getTargets", {"filter": [{"type": "page"}]})["targetInfos"]
        ):
            assert time.monotonic() < deadline, "the toolbar button opened no popup"
            time.sleep(0.1)

        popup.click("#new-chat")
        ask(popup, QUESTION)  # the same question, without the page, for its prompt's size
        plain_tokens = prompt_tokens(popup)
        popup.click("#new-chat")
        answer = ask(popup, QUESTION, "#ask-page")
        page.close()
    assert answer
    assert len(popup.evaluate("window.answerStates")) >= 2
    assert SENTENCE in popup.text_content("#page-text")
    assert popup.evaluate(CONNECT)["alreadyLoaded"]
    # The conversation as the model saw it: the page quoted in the question, every token of it
    # counted in the reply's usage.
    sent = popup.evaluate(
        """async () => {
            const {conversation} = await chrome.storage.session.get("conversation");
            const messages = conversation.map(({role, content}) => ({role, content}));
            const prompt = engine.tokenizer.applyChatTemplate(messages.slice(0, -1), true);
            return {content: messages.at(-2).content,
                    tokens: engine.tokenizer.encode(prompt).length};
        }"""
    )
    assert SENTENCE in sent["content"] and QUESTION in sent["content"]
    assert "Herons" in sent["content"]
    assert sent["tokens"] == prompt_tokens(popup) > plain_tokens + 10
    popup.close()


def test_structured_output_runs_under_the_csp(context, worker):
    """The grammar engine compiles its wasm (the CSP's 'wasm-unsafe-eval' is enough for it)
    and the streamed reply is JSON that its schema accepts."""
    popup = open_popup(context, worker)
    popup.evaluate(CONNECT)
    reply = popup.evaluate(
        """async (schema) => {
            const stream = await engine.chat.completions.create({max_tokens: 60, temperature: 0,
                messages: [{role: "user", content: "A JSON object, please."}], stream: true,
                response_format: {type: "json_schema",
                                  json_schema: {name: "answer", schema, strict: true}}});
            let text = "", finishReason = null;
            for await (const chunk of stream) {
                text += chunk.choices[0]?.delta.content ?? "";
                finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
            }
            return {text, finishReason};
        }""",
        SCHEMA,
    )
    popup.close()
    assert reply["finishReason"] == "stop", reply
    jsonschema.validate(json.loads(reply["text"]), SCHEMA)


SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["n"],
}


def test_build_web_extension_flag(tiny_hf, tmp_path, capsys):
    from compiler.cli import main

    out = tmp_path / "tiny"
    args = [str(tiny_hf), "-o", str(out), "--context-window", "64", "--prefill-chunk", "8"]
    assert main([*args, "--extension"]) == 0
    model_id = json.loads((out / "manifest.json").read_text())["model_id"]
    folder = tmp_path / f"{model_id}-extension"
    printed = capsys.readouterr().out.split()
    assert str(folder) in printed and f"{folder}.zip" in printed
    assert (folder / "model" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    with zipfile.ZipFile(f"{folder}.zip") as z:
        assert json.loads(z.read("manifest.json"))["permissions"]
    assert not list(tmp_path.glob(".*")), "staging left behind"


# (the backend a page asks for, the one that runs): "auto" takes the CPU backend on
# SwiftShader's fallback adapter; WebGPU runs there when asked for.
BACKENDS = [
    pytest.param(None, "wasm", id="cpu"),
    pytest.param("webgpu", "webgpu", id="webgpu"),
]


def extension_page(context, worker):
    """A page of the extension's origin that does nothing by itself (one of its files, as
    Chrome shows it), with the extension's APIs: the popup would connect its own client."""
    page = context.new_page()
    page.goto(f"chrome-extension://{extension_id(worker)}/model/manifest.json")
    return page


@pytest.mark.parametrize(("backend", "runs"), BACKENDS)
def test_extension_pages_share_one_engine_in_turns(context, worker, backend, runs):
    first, second, third = (extension_page(context, worker) for _ in range(3))
    connected = [page.evaluate(CONNECT, backend) for page in (first, second, third)]
    assert {c["backend"] for c in connected} == {runs}
    # One instance: the pages after the first found the model loaded.
    assert [c["alreadyLoaded"] for c in connected[1:]] == [True, True]
    offscreen = "chrome.runtime.getContexts({contextTypes: ['OFFSCREEN_DOCUMENT']})"
    assert len(worker.evaluate(offscreen)) == 1
    # What each request gets alone, greedily: the reference for the answers given in turns.
    expected = {"request": first.evaluate(ASK, REQUEST), "other": second.evaluate(ASK, OTHER)}
    assert third.evaluate(ASK, REQUEST) == expected["request"]

    check_rotation(first, second, third, expected)
    check_closed_mid_stream(first, second, third, expected)
    assert len(worker.evaluate(offscreen)) == 1
    second.close()
    third.close()


PROMPT_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


@pytest.mark.parametrize(("backend", "runs"), BACKENDS)
def test_prompt_api_in_an_extension_page(context, worker, backend, runs):
    """The LanguageModel the extension ships (prompt_api.js), over its one engine: each
    method's shapes, replies equal to the engine's own for the same messages, the explainer's
    errors, and a constrained reply that parses."""
    page = extension_page(context, worker)
    page.evaluate(CONNECT, backend)  # the reference: the same engine's chat.completions
    got = page.evaluate(
        """async ([backend, system, schema]) => {
            const api = await import(chrome.runtime.getURL("prompt_api.js"));
            const LM = api.extensionLanguageModel({backend: backend ?? undefined});
            const native = globalThis.LanguageModel;
            const installed = api.installLanguageModel();
            const caught = async (f) => { try { await f(); return null; } catch (e) {
                return {name: e.name, requested: e.requested, quota: e.quota}; } };
            const reference = async (messages, fields = {}) => (await engine.chat.completions
                .create({messages, temperature: 0, ...fields})).choices[0].message.content;
            const before = await LM.availability();
            const loaded = [];
            const s = await LM.create({topK: 1, initialPrompts: [system], monitor(m) {
                m.addEventListener("downloadprogress", (e) => loaded.push(e.loaded)); }});
            const afterInitial = s.inputUsage;
            const reply = await s.prompt("Tell me about the browser.");
            const chunks = [];
            const g = await LM.create({temperature: 0});
            for await (const chunk of g.promptStreaming([system, {role: "user", content: "Hi"}]))
                chunks.push(chunk);
            const m = await LM.create({temperature: 0});
            const measured = await m.measureInputUsage("Hello there");
            await m.append("Hello there");
            const appended = m.inputUsage;
            const twin = await m.clone();
            const twinUsage = twin.inputUsage;
            const json = await twin.prompt("Is it?",
                {responseConstraint: schema, omitResponseConstraintInput: true});
            const quotaSession = await LM.create({temperature: 0});
            const quota = await caught(() => quotaSession.prompt("word ".repeat(300)));
            const aborted = await caught(() => g.prompt("Hi", {signal: AbortSignal.abort()}));
            const controller = new AbortController();
            const midStream = await caught(async () => {
                for await (const c of g.promptStreaming("Hi", {signal: controller.signal}))
                    controller.abort();
            });
            const createAborted = await caught(() => LM.create({signal: AbortSignal.abort()}));
            m.destroy();
            return {
                kept: native === undefined ? installed === globalThis.LanguageModel : true,
                before, after: await LM.availability(), params: await LM.params(), loaded,
                afterInitial, inputQuota: s.inputQuota, reply, chunks, measured,
                appended, twinUsage, json,
                quota, aborted, midStream, createAborted, usageAfterErrors: quotaSession.inputUsage,
                destroyed: await caught(() => m.prompt("Hi")),
                fields: [s.topK, s.temperature, g.topK, g.temperature],
                backend: (await engine.runtimeStats()).backend,
                expected: {
                    reply: await reference([system,
                                            {role: "user", content: "Tell me about the browser."}]),
                    chunks: await reference([system, {role: "user", content: "Hi"}]),
                    json: await reference([{role: "user", content: "Hello there"},
                                           {role: "user", content: "Is it?"}],
                        {response_format: {type: "json_schema",
                                           json_schema: {name: "r", schema}}}),
                },
            };
        }""",
        [backend, SYSTEM, PROMPT_SCHEMA],
    )
    page.close()
    assert got["backend"] == runs
    assert got["kept"]
    assert got["before"] in ("downloadable", "available") and got["after"] == "available"
    assert got["params"]["maxTopK"] >= 1
    assert got["loaded"][0] == 0 and got["loaded"][-1] == 1
    assert got["loaded"] == sorted(got["loaded"])
    assert got["fields"] == [1, 1, got["params"]["defaultTopK"], 0]
    assert got["inputQuota"] == 128 and got["afterInitial"] > 0
    assert got["reply"] == got["expected"]["reply"]
    assert all(isinstance(c, str) and c for c in got["chunks"])
    assert "".join(got["chunks"]) == got["expected"]["chunks"]
    assert got["appended"] == got["twinUsage"] == got["measured"] > 0
    assert got["json"] == got["expected"]["json"]
    jsonschema.validate(json.loads(got["json"]), PROMPT_SCHEMA)
    quota = got["quota"]
    assert quota["name"] == "QuotaExceededError" and quota["requested"] > quota["quota"]
    assert got["usageAfterErrors"] == 0
    assert got["aborted"]["name"] == got["midStream"]["name"] == "AbortError"
    assert got["createAborted"]["name"] == "AbortError"
    assert got["destroyed"]["name"] == "InvalidStateError"


SYSTEM = {"role": "system", "content": "Be brief."}
