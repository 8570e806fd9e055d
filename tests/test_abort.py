"""An abort during a long prefill takes effect at once: the default model (as distributed), a
prompt of some 3,500 tokens, on both backends, in the page and in a Web Worker. Each abort comes
when the prefill has demonstrably begun, at its first progress report (the end of its first
chunk), and takes effect within a bounded amount of work, not time: at most one more chunk is
reported after it (in a worker, the chunk it may be running while the abort message is on its
way; in the page, none), the stream ends with finish_reason "abort" and the tokens prefilled
by then, those reported, and the engine answers the next request as a fresh one does. Both
an AbortSignal and interruptGenerate() are tried."""

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
    const request = {
        messages: [{role: "user", content: "elephant ".repeat(3500)}],
        max_tokens: 8, stream: true, stream_options: {include_usage: true},
    };
    // The chunks of a request aborted by `abort` at its first prefill progress report, and the
    // tokens prefilled by each report: the first, when it aborted, and any after it.
    const aborted = async (abort, fields = {}) => {
        const reports = [];
        const prefillProgressCallback = ({prefilled}) => {
            reports.push(prefilled);
            if (reports.length === 1) abort();
        };
        const chunks = [];
        for await (const chunk of await engine.chat.completions.create(
            {...request, ...fields, prefillProgressCallback})) chunks.push(chunk);
        return {chunks, reports};
    };
    const controller = new AbortController();
    const signalled = await aborted(() => controller.abort(), {signal: controller.signal});
    const after = await engine.chat.completions.create(hello);
    const interrupted = await aborted(() => engine.interruptGenerate());
    await engine.unload();
    const fresh = await kiln.CreateEngine("./", {backend});
    const expected = await fresh.chat.completions.create(hello);
    return {signalled, interrupted, after, expected};
}"""


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
@pytest.mark.parametrize("where", ["page", "worker"])
def test_abort_during_a_long_prefill_ends_the_stream_at_once(smollm2, browser, backend, where):
    page = browser.new_page()
    with serve_folder(smollm2) as url:
        page.goto(f"{url}/manifest.json")
        result = page.evaluate(RUN, [backend, where == "worker"])
    page.close()
    for aborted in (result["signalled"], result["interrupted"]):
        reports = aborted["reports"]
        # Aborted once the prefill had begun; at most one more chunk reported after that.
        assert 1 <= len(reports) <= 2, reports
        assert 0 < reports[0]
        last, usage = aborted["chunks"][-2:]
        assert last["choices"][0]["finish_reason"] == "abort"
        assert usage["usage"]["completion_tokens"] == 0
        prompt = usage["usage"]["prompt_tokens"]
        assert 3500 < prompt < 4096 - 8
        # The tokens prefilled before the abort took effect: those reported, not all.
        assert usage["usage"]["extra"]["prefill_tokens"] == reports[-1] < prompt
    assert result["after"]["choices"] == result["expected"]["choices"]
