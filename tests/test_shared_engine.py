"""One engine for every page of an origin (web/src/workers/shared.js), in real Chromium with
the tiny model on the CPU backend: three pages load the model once (the server's log shows one
download), answer as an engine of their own would, take turns in rotation, and go on when the
page whose stream runs is closed; with a leader tab, closing the leader hands the engine to
another page, which loads the model again and answers the requests that waited."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fair_turns import (
    ANSWERS,
    ASK,
    HOLD,
    OTHER,
    REQUEST,
    SEND,
    check_closed_mid_stream,
    check_rotation,
)

from tools.browser import serve_folder

IMPORT = "const kiln = await import(location.origin + '/kiln.js');"
# useCache: false, so that every load of the weights shows in the server's log.
CONNECT = f"""async (host) => {{
    {IMPORT}
    const progress = [];
    window.engine = await kiln.CreateSharedWorkerEngine(null, "./",
        {{host, backend: "wasm", useCache: false, initProgressCallback: (p) => progress.push(p)}});
    return {{host: engine.host, leading: engine.leading,
             alreadyLoaded: progress.some((p) => p.alreadyLoaded),
             cores: navigator.hardwareConcurrency}};
}}"""


@pytest.fixture(scope="module")
def site(tiny_built, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shared") / "site"
    shutil.copytree(tiny_built("q0f32"), folder)
    (folder / "blank.html").write_text("<!doctype html><title>shared</title>")
    return folder


@pytest.fixture(scope="module")
def server(site) -> Iterator[tuple[str, list[str]]]:
    log: list[str] = []
    with serve_folder(site, log) as url:
        yield url, log


@pytest.fixture(scope="module")
def expected(server, browser) -> dict[str, list]:
    """The replies of an engine of a page's own, on the same backend."""
    url, _ = server
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{url}/blank.html")
    replies = page.evaluate(
        f"""async ([a, b]) => {{
            {IMPORT}
            const engine = await kiln.CreateEngine(location.origin + "/", {{backend: "wasm"}});
            return [(await engine.chat.completions.create(a)).choices,
                    (await engine.chat.completions.create(b)).choices];
        }}""",
        [REQUEST, OTHER],
    )
    context.close()
    return {"request": replies[0], "other": replies[1]}


@pytest.fixture
def pages(browser):
    """Opens `n` pages of the empty page in one fresh browser context (one origin's pages)."""
    contexts = []

    def open_pages(url: str, n: int) -> list:
        context = browser.new_context()
        contexts.append(context)
        opened = []
        for _ in range(n):
            page = context.new_page()
            page.on(
                "console",
                lambda m: (
                    print("[browser]", m.text, file=sys.stderr) if m.type == "error" else None
                ),
            )
            page.goto(f"{url}/blank.html")
            opened.append(page)
        return opened

    yield open_pages
    for context in contexts:
        context.close()


def weight_loads(log: list[str]) -> int:
    return sum(p.endswith(".bin") for p in log)


def test_shared_worker_one_load_fair_turns_and_a_page_that_closes(server, expected, pages):
    url, log = server
    first, second, third = pages(url, 3)
    before = weight_loads(log)
    connected = [page.evaluate(CONNECT, "shared-worker") for page in (first, second, third)]
    assert [c["host"] for c in connected] == ["shared-worker"] * 3
    assert [c["alreadyLoaded"] for c in connected] == [False, True, True]
    assert weight_loads(log) == before + 1  # one download, one load, for three pages
    for page in (first, second, third):
        assert page.evaluate(ASK, REQUEST) == expected["request"]
    # Errors keep their class across.
    error = third.evaluate(
        f"""async (r) => {{
            {IMPORT}
            try {{ await engine.chat.completions.create({{...r, temperature: 3}}); }}
            catch (e) {{ return [e.name, e.param, e instanceof kiln.InvalidRequestError]; }}
        }}""",
        REQUEST,
    )
    assert error == ["InvalidRequestError", "temperature", True]

    check_rotation(first, second, third, expected)
    check_closed_mid_stream(first, second, third, expected)
    assert weight_loads(log) == before + 1


def test_leader_tab_serves_the_others_and_hands_over(server, expected, pages):
    url, log = server
    leader, second, third = pages(url, 3)
    before = weight_loads(log)
    connected = [page.evaluate(CONNECT, "auto") for page in (leader, second, third)]
    # The shared worker has no threads for the CPU backend here: with more than one core,
    # "auto" takes a leader tab, the first page.
    assert [c["host"] for c in connected] == (
        ["tab"] * 3 if connected[0]["cores"] > 1 else ["shared-worker"] * 3
    )
    if connected[0]["host"] != "tab":
        pytest.skip("one core: the shared worker holds the engine")
    assert [c["leading"] for c in connected] == [True, False, False]
    assert [c["alreadyLoaded"] for c in connected] == [False, True, True]
    assert weight_loads(log) == before + 1
    for page in (leader, second, third):
        assert page.evaluate(ASK, REQUEST) == expected["request"]

    # The leader closes during its stream, with the others' requests waiting for their turn:
    # another page takes the engine, loads the model again and answers them.
    leader.evaluate(HOLD, REQUEST)
    second.evaluate(SEND, [REQUEST])
    third.evaluate(SEND, [OTHER])
    leader.close()
    assert second.evaluate(ANSWERS) == [expected["request"]]
    assert third.evaluate(ANSWERS) == [expected["other"]]
    assert sorted(page.evaluate("engine.leading") for page in (second, third)) == [False, True]
    assert weight_loads(log) == before + 2
    for page in (second, third):
        assert page.evaluate(ASK, OTHER) == expected["other"]


def test_auto_takes_the_shared_worker_for_webgpu(server, pages):
    """The shared worker has WebGPU here: "auto" puts a WebGPU engine there, and it answers
    as a WebGPU engine of the page's own."""
    url, _ = server
    (page,) = pages(url, 1)
    result = page.evaluate(
        f"""async (r) => {{
            {IMPORT}
            const shared = await kiln.CreateSharedWorkerEngine(null, "./", {{backend: "webgpu"}});
            const own = await kiln.CreateEngine(location.origin + "/", {{backend: "webgpu"}});
            return {{host: shared.host,
                     shared: (await shared.chat.completions.create(r)).choices,
                     stats: await shared.runtimeStats(),
                     own: (await own.chat.completions.create(r)).choices}};
        }}""",
        REQUEST,
    )
    assert result["host"] == "shared-worker"
    assert result["stats"]["backend"] == "webgpu"
    assert result["shared"] == result["own"]
