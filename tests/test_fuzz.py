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

ROOT = Path(__file__).resolve().parent.parent
# The fuzzer, a module, and the request fields it imports (by their paths in the checkout).
FUZZ = "tests/fuzz_requests.js"
FUZZ_MODULES = [FUZZ, "web/src/api/request_fields.js"]
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
    for path in FUZZ_MODULES:  # where the page imports them, as they lie in the checkout
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, folder / path)
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
        result = node.evaluate(
            """async ([fuzz, folder, seed, count, normal]) => {
                const { fuzzRequests } = await import(fuzz);
                const summary = await fuzzRequests(engine, {seed, count, timeoutMs: 60000});
                const after = await engine.chat.completions.create(normal);
                const fresh = await kiln.CreateEngine(folder, {backend: "wasm"});
                const expected = await fresh.chat.completions.create(normal);
                return {summary, after: after.choices[0], expected: expected.choices[0]};
            }""",
            [(ROOT / FUZZ).as_uri(), str(site), 1, REQUESTS, NORMAL],
        )
    check(result)


def test_generated_requests_are_answered_or_named_in_a_worker(site, browser):
    with serve_folder(site) as url:
        page = browser.new_page()
        try:
            page.goto(f"{url}/manifest.json")
            result = page.evaluate(
                """async ([fuzz, seed, count, normal]) => {
                    const kiln = await import("./kiln.js");
                    const { fuzzRequests } = await import(fuzz);
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
                [f"./{FUZZ}", 2, REQUESTS, NORMAL],
            )
        finally:
            page.close()
    check(result)
