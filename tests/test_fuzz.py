"""Request fuzzing: thousands of generated requests (tests/fuzz_requests.js: wrong types,
values at and past each field's range, huge strings, deep nesting, unknown fields, invalid
UTF-16, messages in wrong orders, empty arrays, NaN and Infinity, values that cannot cross
postMessage) through an engine in Node.js (tools/node.py) and one behind a worker in
Chromium (where requests also cross postMessage). Each is answered or fails with a
named error (an InvalidRequestError naming its `param`); nothing hangs, nothing is left
unhandled, and afterwards each engine answers a normal request as a fresh engine does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools.browser import serve_folder
from tools.node import node_engine

FUZZ = (Path(__file__).parent / "fuzz_requests.js").read_text()
REQUESTS = 2000

# A worker like kiln-worker.js that also posts to the page whatever the engine leaves
# unhandled in the worker (the page's own listeners cannot see it).
WORKER = """import { WebWorkerEngineHandler } from "./kiln.js";
const report = (what) => self.postMessage({ fuzz: what });
self.addEventListener("unhandledrejection", (event) =>
  report(`unhandled rejection in the worker: ${event.reason?.name}: ${event.reason?.message}`));
self.addEventListener("error", (event) => report(`error event in the worker: ${event.message}`));
new WebWorkerEngineHandler();
"""

NORMAL = {
    "messages": [{"role": "user", "content": "Tell me about the browser."}],
    "max_tokens": 12,
    "temperature": 0,
}


@pytest.fixture(scope="module")
def site(tiny_built, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz") / "model"
    shutil.copytree(tiny_built("q4f32"), folder)
    (folder / "fuzz-worker.js").write_text(WORKER)
    return folder


def check(result: dict) -> None:
    """Every request answered or refused by name, nothing stray, the engine fine afterwards."""
    summary = result["summary"]
    outcomes = summary["outcomes"]
    assert sum(outcomes.values()) == REQUESTS, outcomes
    assert summary["failureCount"] == 0, summary["failures"]
    assert summary["stray"] == []
    # The generator reaches every kind of outcome, not only refusals.
    for outcome in ("answered", "streamed", "InvalidRequestError", "ContextWindowExceededError"):
        assert outcomes.get(outcome, 0) >= 20, outcomes
    assert result["after"] == result["expected"]
    assert result["after"]["message"]["content"]


def test_generated_requests_are_answered_or_named_in_node(site):
    with node_engine(site, backend="wasm") as node:
        node.evaluate("(source) => { (0, eval)(source); }", FUZZ)  # defines fuzzRequests
        result = node.evaluate(
            """async ([folder, seed, count, normal]) => {
                const summary = await fuzzRequests(engine, {seed, count, timeoutMs: 60000});
                const after = await engine.chat.completions.create(normal);
                const fresh = await kiln.CreateEngine(folder, {backend: "wasm"});
                const expected = await fresh.chat.completions.create(normal);
                return {summary, after: after.choices[0], expected: expected.choices[0]};
            }""",
            [str(site), 1, REQUESTS, NORMAL],
        )
    check(result)


def test_generated_requests_are_answered_or_named_in_a_worker(site, browser):
    with serve_folder(site) as url:
        page = browser.new_page()
        try:
            page.goto(f"{url}/manifest.json")
            page.add_script_tag(content=FUZZ)
            result = page.evaluate(
                """async ([seed, count, normal]) => {
                    const kiln = await import("./kiln.js");
                    const background = [];
                    const worker = new Worker("./fuzz-worker.js", {type: "module"});
                    worker.addEventListener("message",
                        (e) => e.data?.fuzz && background.push(e.data.fuzz));
                    worker.addEventListener("error",
                        (e) => background.push(`worker error: ${e.message}`));
                    const engine = await kiln.CreateWebWorkerEngine(worker, "./");
                    const summary = await fuzzRequests(
                        engine, {seed, count, timeoutMs: 60000, background});
                    const after = await engine.chat.completions.create(normal);
                    const fresh = await kiln.CreateEngine("./");
                    const expected = await fresh.chat.completions.create(normal);
                    return {summary, after: after.choices[0], expected: expected.choices[0]};
                }""",
                [2, REQUESTS, NORMAL],
            )
        finally:
            page.close()
    check(result)
