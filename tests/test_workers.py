"""The engine in a Web Worker and in a service worker (web/src/workers/), in real Chromium
on WebGPU with the tiny model: the same text as the engine in the page, progress, error
classes and aborts across the boundary, and a service-worker engine that a page reload finds
still loaded."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.browser import RECORD_DEVICES, serve_folder

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something about WebGPU."},
]
# ignore_eos: the random-weight model could end early, and the abort test needs a long reply.
REQUEST = {"messages": MESSAGES, "max_tokens": 12, "temperature": 0, "ignore_eos": True}

# Runs in the page; `kiln` is the runtime as the page imports it.
IMPORT = "const kiln = await import(location.origin + '/kiln.js');"
WORKER = "new Worker(location.origin + '/kiln-worker.js', {type: 'module'})"


@pytest.fixture(scope="module")
def site(tiny_built, tmp_path_factory) -> Path:
    """The tiny q4f32 build plus an empty page to run the tests from (a service worker
    registered at /kiln-sw.js controls the whole origin, one at /sub/kiln-sw.js only /sub/)."""
    folder = tmp_path_factory.mktemp("workers") / "site"
    shutil.copytree(tiny_built("q4f32"), folder)
    (folder / "blank.html").write_text("<!doctype html><title>workers</title>")
    # kiln-sw.js is one file: a copy in a subfolder is a service worker whose scope does not
    # cover the page.
    (folder / "sub").mkdir()
    shutil.copy(folder / "kiln-sw.js", folder / "sub" / "kiln-sw.js")
    # A worker like kiln-worker.js that also destroys its GPU device when told to (what a
    # GPU reset looks like to it) and says so once the loss is handled, for the device-loss
    # test; the runtime has no such hook.
    (folder / "lossy-worker.js").write_text(LOSSY_WORKER.replace("RECORD_DEVICES", RECORD_DEVICES))
    return folder


LOSSY_WORKER = """import { WebWorkerEngineHandler } from "./kiln.js";
RECORD_DEVICES
new WebWorkerEngineHandler();
self.addEventListener("message", async (event) => {
  if (event.data?.test !== "lose-device") return;
  const device = globalThis.__devices.at(-1);
  device.destroy();
  await device.lost;  // the engine's handler, registered first, has run
  new BroadcastChannel("kiln-test").postMessage("lost");
});
"""


@pytest.fixture(scope="module")
def server(site) -> Iterator[tuple[str, list[str]]]:
    """The site's URL and the paths of the requests it has answered, service workers' too."""
    log: list[str] = []
    with serve_folder(site, log) as url:
        yield url, log


@pytest.fixture
def new_page(browser):
    """Opens the empty page in a fresh browser context (its own service workers and caches);
    pages opened on one context share them."""
    contexts = []

    def open_page(url: str, context=None):
        if context is None:
            context = browser.new_context()
            contexts.append(context)
        page = context.new_page()
        page.on(
            "console",
            lambda m: print("[browser]", m.text, file=sys.stderr) if m.type == "error" else None,
        )
        page.goto(f"{url}/blank.html")
        return page

    yield open_page
    for context in contexts:
        context.close()


def test_web_worker_gives_the_in_page_text(server, new_page):
    url, _ = server
    page = new_page(url)
    result = page.evaluate(
        f"""async (r) => {{
            {IMPORT}
            const progress = [];
            // A relative URL means the page's folder, as in the page, not the worker's.
            const worker = await kiln.CreateWebWorkerEngine({WORKER}, "./",
                {{initProgressCallback: (p) => progress.push(p)}});
            const inPage = await kiln.CreateEngine(location.origin + "/");
            const run = async (engine) => {{
                const chunks = [];
                for await (const c of await engine.chat.completions.create({{...r, stream: true}}))
                    chunks.push(c);
                const text = await engine.completions.create(
                    {{prompt: "Once upon a time", max_tokens: 8, temperature: 0}});
                return {{
                    reply: await engine.chat.completions.create(r),
                    chunks,
                    text,
                    stats: await engine.runtimeStatsText(),
                    loaded: engine.loadedModels,
                }};
            }};
            return {{
                page: await run(inPage),
                worker: await run(worker),
                progress,
                isWorkerEngine: worker instanceof kiln.WebWorkerEngine,
            }};
        }}""",
        REQUEST,
    )
    inpage, worker = result["page"], result["worker"]
    assert result["isWorkerEngine"]
    assert worker["loaded"] == inpage["loaded"] != []
    assert worker["reply"]["object"] == "chat.completion"
    assert worker["reply"]["choices"] == inpage["reply"]["choices"]
    assert worker["reply"]["choices"][0]["message"]["content"]
    for key in ("prompt_tokens", "completion_tokens"):
        assert worker["reply"]["usage"][key] == inpage["reply"]["usage"][key]
    assert worker["text"]["object"] == "text_completion"
    assert worker["text"]["choices"] == inpage["text"]["choices"]
    # Streamed: one message per chunk, the deltas make up the same text.
    for run in (inpage, worker):
        chunks = run["chunks"]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert streamed == inpage["reply"]["choices"][0]["message"]["content"]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert [c["choices"] for c in worker["chunks"]] == [c["choices"] for c in inpage["chunks"]]
    assert worker["stats"].startswith("prefill: ") and "tok/s" in worker["stats"]
    # Progress reports crossed over as plain objects: the weights' bytes, then the end (the
    # tiny model's one shard may arrive in one piece).
    progress = result["progress"]
    assert all(isinstance(p["text"], str) and 0 <= p["progress"] <= 1 for p in progress)
    assert any(p.get("total") == p.get("loaded") > 0 for p in progress)
    assert progress[-1]["progress"] == 1
    assert "Loaded" in progress[-1]["text"]


def test_errors_keep_their_class(server, new_page):
    url, _ = server
    page = new_page(url)
    result = page.evaluate(
        f"""async (messages) => {{
            {IMPORT}
            const engine = await kiln.CreateWebWorkerEngine({WORKER}, "./");
            const caught = async (f) => {{
                try {{ await f(); return null; }}
                catch (e) {{
                    return {{name: e.name, code: e.code ?? null, param: e.param ?? null,
                             message: e.message, sameClass: e instanceof kiln[e.name],
                             kilnError: e instanceof kiln.KilnError}};
                }}
            }};
            const ask = (fields) => engine.chat.completions.create({{messages, ...fields}});
            const out = {{
                temperature: await caught(() => ask({{temperature: 3}})),
                streamed: await caught(() => ask({{stream: true, top_p: 2}})),
                model: await caught(() => ask({{model: "nope"}})),
                missing: await caught(() => engine.reload("./missing/")),
            }};
            // The failed reload left nothing loaded; the next one loads again.
            out.unloaded = await caught(() => ask({{max_tokens: 2}}));
            await engine.reload("./");
            out.reloaded = (await ask({{max_tokens: 2}})).choices[0].finish_reason;
            return out;
        }}""",
        MESSAGES,
    )
    for key, param in (("temperature", "temperature"), ("streamed", "top_p")):
        error = result[key]
        assert error["name"] == "InvalidRequestError", error
        assert error["param"] == param
        assert error["code"] == "invalid_request_error"
        assert error["sameClass"] and error["kilnError"]
        assert f"'{param}'" in error["message"]
    assert result["model"]["name"] == "ModelNotFoundError"
    assert result["model"]["param"] == "model"
    assert result["model"]["sameClass"]
    assert result["missing"]["name"] == "ModelLoadError"
    assert result["missing"]["code"] == "model_load_failed"
    assert "/missing/manifest.json" in result["missing"]["message"]
    assert result["unloaded"]["name"] == "ModelLoadError"
    assert result["reloaded"] == "length"


def test_abort_mid_stream_then_next_request_works(server, new_page):
    url, _ = server
    page = new_page(url)
    request = {**REQUEST, "max_tokens": 60}
    result = page.evaluate(
        f"""async (r) => {{
            {IMPORT}
            const engine = await kiln.CreateWebWorkerEngine({WORKER}, "./");
            const full = await engine.chat.completions.create(r);
            const controller = new AbortController();
            const chunks = [];
            for await (const c of await engine.chat.completions.create(
                {{...r, stream: true, signal: controller.signal}})) {{
                chunks.push(c);
                if (chunks.length === 4) controller.abort();
            }}
            const already = new AbortController();
            already.abort();
            const before = await engine.chat.completions.create({{...r, signal: already.signal}});
            // Leaving the loop early ends the generation in the worker too.
            for await (const c of await engine.chat.completions.create({{...r, stream: true}}))
                break;
            const interrupted = [];
            for await (const c of await engine.chat.completions.create({{...r, stream: true}})) {{
                interrupted.push(c);
                if (interrupted.length === 3) await engine.interruptGenerate();
            }}
            const next = await engine.chat.completions.create(r);
            return {{full, chunks, before, interrupted, next}};
        }}""",
        request,
    )
    full = result["full"]["choices"][0]
    assert full["finish_reason"] == "length"
    assert result["full"]["usage"]["completion_tokens"] == 60
    chunks = result["chunks"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "abort"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert full["message"]["content"].startswith(streamed)
    assert len(chunks) < 30  # stopped long before the 60 tokens
    assert result["before"]["choices"][0]["finish_reason"] == "abort"
    assert result["before"]["usage"]["completion_tokens"] == 0
    assert result["interrupted"][-1]["choices"][0]["finish_reason"] == "abort"
    assert len(result["interrupted"]) < 30
    assert result["next"]["choices"] == result["full"]["choices"]


# Registers kiln-sw.js (once per context), then loads the model in it or finds it loaded.
SERVICE_WORKER_ENGINE = f"""async () => {{
    {IMPORT}
    await navigator.serviceWorker.register(location.origin + "/kiln-sw.js", {{type: "module"}});
    const progress = [];
    // useCache: false, so that a second load of the weights would show in the server's log.
    window.engine = await kiln.CreateServiceWorkerEngine("./",
        {{initProgressCallback: (p) => progress.push(p), useCache: false}});
    return {{progress, isServiceWorkerEngine: window.engine instanceof kiln.ServiceWorkerEngine,
             loaded: window.engine.loadedModels}};
}}"""
ASK = "async (r) => (await engine.chat.completions.create(r))"


def weight_requests(log: list[str]) -> list[str]:
    return [p for p in log if p.endswith((".bin", "manifest.json")) or "/kernels-" in p]


def test_service_worker_engine_survives_page_reload(server, new_page):
    url, log = server
    log.clear()
    page = new_page(url)
    first = page.evaluate(SERVICE_WORKER_ENGINE)
    assert first["isServiceWorkerEngine"]
    assert first["progress"][-1]["progress"] == 1
    assert not first["progress"][-1].get("alreadyLoaded")
    loads = weight_requests(log)
    assert "/manifest.json" in loads and any(p.endswith(".bin") for p in loads)
    reply = page.evaluate(ASK, REQUEST)
    assert reply["object"] == "chat.completion"
    assert page.evaluate("!!navigator.serviceWorker.controller")

    page.reload()
    again = page.evaluate(SERVICE_WORKER_ENGINE)
    assert again["loaded"] == first["loaded"]
    assert [p.get("alreadyLoaded") for p in again["progress"]] == [True]
    assert page.evaluate(ASK, REQUEST)["choices"] == reply["choices"]
    assert weight_requests(log) == loads  # the model was not loaded again
    # Streaming and aborts cross the service-worker boundary too.
    chunks = page.evaluate(
        """async (r) => {
            const controller = new AbortController();
            const chunks = [];
            for await (const c of await engine.chat.completions.create(
                {...r, max_tokens: 60, stream: true, signal: controller.signal})) {
                chunks.push(c);
                // A slow reader: the worker's generation waits for it.
                await new Promise((resolve) => setTimeout(resolve, 50));
                if (chunks.length === 4) controller.abort();
            }
            return chunks;
        }""",
        REQUEST,
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "abort"
    assert 4 <= len(chunks) < 15
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    answer = reply["choices"][0]["message"]["content"]  # the same greedy text, 12 tokens long
    assert streamed and (answer.startswith(streamed) or streamed.startswith(answer))

    # A second page shares the worker's engine; the replies of concurrent requests (the
    # pages' request ids collide) go to the page that asked.
    other = new_page(url, page.context)
    assert [p.get("alreadyLoaded") for p in other.evaluate(SERVICE_WORKER_ENGINE)["progress"]] == [
        True
    ]
    longer = {**REQUEST, "max_tokens": 20}
    other.evaluate("(r) => { window.pending = engine.chat.completions.create(r); }", longer)
    mine = page.evaluate(ASK, REQUEST)
    theirs = other.evaluate("async () => await pending")
    assert weight_requests(log) == loads

    inpage = new_page(url)
    expected = inpage.evaluate(
        f"""async ([a, b]) => {{
            {IMPORT}
            const engine = await kiln.CreateEngine(location.origin + "/");
            return [await engine.chat.completions.create(a),
                    await engine.chat.completions.create(b)];
        }}""",
        [REQUEST, longer],
    )
    assert mine["choices"] == expected[0]["choices"] == reply["choices"]
    assert theirs["choices"] == expected[1]["choices"]
    assert theirs["usage"]["completion_tokens"] == 20

    # A page closed in the middle of a stream, unread, does not hold the shared engine: the
    # worker finds the page gone and ends that generation.
    other.evaluate(
        """async (r) => {
            const stream = await engine.chat.completions.create(
                {...r, max_tokens: 60, stream: true});
            window.left = stream[Symbol.asyncIterator]();
            await left.next();
        }""",
        REQUEST,
    )
    other.close()
    answered = page.evaluate(
        """async (r) => await Promise.race([engine.chat.completions.create(r),
            new Promise((resolve) => setTimeout(() => resolve("no answer in 20 s"), 20_000))])""",
        REQUEST,
    )
    assert answered != "no answer in 20 s"
    assert answered["choices"] == reply["choices"]


def test_service_worker_that_does_not_control_the_page(server, new_page):
    url, _ = server
    page = new_page(url)
    result = page.evaluate(
        f"""async (r) => {{
            {IMPORT}
            const registration = await navigator.serviceWorker.register(
                location.origin + "/sub/kiln-sw.js", {{type: "module"}});
            const worker = registration.installing ?? registration.waiting ?? registration.active;
            if (worker.state !== "activated")
                await new Promise((resolve) => worker.addEventListener(
                    "statechange", () => worker.state === "activated" && resolve()));
            const engine = new kiln.ServiceWorkerEngine(registration.active);
            await engine.reload("./");
            return {{controlled: !!navigator.serviceWorker.controller,
                     reply: await engine.chat.completions.create(r)}};
        }}""",
        REQUEST,
    )
    assert not result["controlled"]
    assert result["reply"]["choices"][0]["finish_reason"] == "length"
    assert result["reply"]["usage"]["completion_tokens"] == REQUEST["max_tokens"]


def test_values_of_the_wrong_type_are_named_in_both_engines(server, new_page):
    """Values a JSON request cannot hold (a fake signal, a Symbol, a null-prototype object, a
    10,000-deep array, a function) fail up front as InvalidRequestError with `param`, in the
    page's engine and the worker's alike, and a normal request still works afterwards."""
    url, _ = server
    page = new_page(url)
    result = page.evaluate(
        f"""async (r) => {{
            {IMPORT}
            let deep = [];
            for (let i = 0; i < 10000; i++) deep = [deep];
            const bad = {{
                signal: {{...r, signal: {{aborted: false}}}},
                "model symbol": {{...r, model: Symbol("m")}},
                "model null-prototype": {{...r, model: Object.create(null)}},
                "model deep array": {{...r, model: deep}},
                "stop function": {{...r, stop: () => "x"}},
            }};
            const engines = {{
                page: await kiln.CreateEngine(location.origin + "/"),
                worker: await kiln.CreateWebWorkerEngine({WORKER}, "./"),
            }};
            const out = {{}};
            for (const [where, engine] of Object.entries(engines)) {{
                for (const [name, request] of Object.entries(bad)) {{
                    try {{
                        await engine.chat.completions.create(request);
                        out[`${{where}} ${{name}}`] = "answered";
                    }} catch (err) {{
                        out[`${{where}} ${{name}}`] = [err.name, err.param];
                    }}
                }}
                const reply = await engine.chat.completions.create(r);
                out[`${{where}} then`] = reply.choices[0].message.content;
            }}
            return out;
        }}""",
        REQUEST,
    )
    for where in ("page", "worker"):
        assert result[f"{where} signal"] == ["InvalidRequestError", "signal"]
        for name in ("symbol", "null-prototype", "deep array"):
            assert result[f"{where} model {name}"] == ["InvalidRequestError", "model"]
        assert result[f"{where} then"]
    assert result["page stop function"] == ["InvalidRequestError", "stop"]
    assert result["worker stop function"] == ["InvalidRequestError", "stop"]
    assert result["page then"] == result["worker then"]


def test_device_loss_in_a_worker_is_reported_and_reload_recovers(server, new_page):
    url, _ = server
    page = new_page(url)
    result = page.evaluate(
        f"""async (r) => {{
            {IMPORT}
            const worker = new Worker(location.origin + "/lossy-worker.js", {{type: "module"}});
            const engine = await kiln.CreateWebWorkerEngine(worker, "./", {{backend: "webgpu"}});
            const before = await engine.chat.completions.create(r);
            const lost = new Promise((resolve) => {{
                const channel = new BroadcastChannel("kiln-test");
                channel.onmessage = () => (channel.close(), resolve());
            }});
            worker.postMessage({{test: "lose-device"}});
            await lost;
            let error = null;
            try {{ await engine.chat.completions.create(r); }}
            catch (e) {{ error = {{name: e.name, code: e.code, message: e.message,
                                   isClass: e instanceof kiln.DeviceLostError}}; }}
            await engine.reload("./", {{backend: "webgpu"}});
            const after = await engine.chat.completions.create(r);
            return {{before: before.choices, error, after: after.choices}};
        }}""",
        REQUEST,
    )
    assert result["error"]["name"] == "DeviceLostError" and result["error"]["isClass"]
    assert result["error"]["code"] == "device_lost"
    assert "Reload the model" in result["error"]["message"]
    assert result["after"] == result["before"]
