"""An abort during a long prefill takes effect at once: the default model (as distributed), a
prompt of some 3,500 tokens, on both backends, in the page and in a Web Worker. The stream ends
within a second of the abort with finish_reason "abort" and the tokens prefilled by then, and
the engine answers the next request as a fresh one does. The aborts come a second into the
prefill, which takes several seconds on any machine of this kind (15 s or more here on the CPU),
and the test holds wherever in it they land (before the first chunk ends, too)."""

from __future__ import annotations

import pytest

from tools.browser import serve_folder

RUN = """async ([backend, inWorker]) => {
    const kiln = await import(location.origin + "/kiln.js");
    const engine = inWorker
        ? await kiln.CreateWebWorkerEngine(
              new Worker(location.origin + "/kiln-worker.js", {type: "module"}), "./", {backend})
        : await kiln.CreateEngine("./", {backend});
    const hello = {messages: [{role: "user", content: "Hello!"}], max_tokens: 6, temperature: 0};
    const controller = new AbortController();
    let abortedAt = null;
    setTimeout(() => ((abortedAt = performance.now()), controller.abort()), 1000);
    const chunks = [];
    const request = {
        messages: [{role: "user", content: "elephant ".repeat(3500)}],
        max_tokens: 8, stream: true, stream_options: {include_usage: true},
        signal: controller.signal,
    };
    for await (const chunk of await engine.chat.completions.create(request)) chunks.push(chunk);
    const latency = performance.now() - abortedAt;
    const after = await engine.chat.completions.create(hello);
    const interrupted = engine.chat.completions.create({...request, signal: undefined});
    setTimeout(() => engine.interruptGenerate(), 1000);
    const texts = [];
    for await (const chunk of await interrupted) texts.push(chunk);
    await engine.unload();
    const fresh = await kiln.CreateEngine("./", {backend});
    const expected = await fresh.chat.completions.create(hello);
    return {latency, chunks, after, expected, interrupted: texts};
}"""


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
@pytest.mark.parametrize("where", ["page", "worker"])
def test_abort_during_a_long_prefill_ends_the_stream_at_once(smollm2, browser, backend, where):
    page = browser.new_page()
    with serve_folder(smollm2) as url:
        page.goto(f"{url}/manifest.json")
        result = page.evaluate(RUN, [backend, where == "worker"])
    page.close()
    assert result["latency"] < 1000, result["latency"]
    last, usage = result["chunks"][-2:]
    assert last["choices"][0]["finish_reason"] == "abort"
    assert usage["usage"]["completion_tokens"] == 0
    prompt = usage["usage"]["prompt_tokens"]
    assert 3500 < prompt < 4096 - 8
    # The tokens prefilled before the abort: some, not all.
    assert 0 <= usage["usage"]["extra"]["prefill_tokens"] < prompt
    assert result["interrupted"][-2]["choices"][0]["finish_reason"] == "abort"
    assert result["after"]["choices"] == result["expected"]["choices"]
