"""Loading over a server that fails: every fault ends as a named error, and once the fault is
gone the next load succeeds in the same browser, with nothing cleared by hand (neither the
browser's HTTP cache nor the Cache API store), and nothing corrupt is ever cached."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from compiler.serve import etag_of
from tools.browser import serve_folder

LOAD = """async (base) => {
    const kiln = await import(base + "kiln.js");
    try {
        const engine = await kiln.CreateEngine(base);
        const reply = await engine.chat.completions.create(
            {messages: [{role: "user", content: "hi"}], max_tokens: 4, temperature: 0});
        const sources = Object.values(engine.weightSources)[0];
        await engine.unload();
        return {ok: true, text: reply.choices[0].message.content, sources};
    } catch (err) {
        return {ok: false, name: err.name, code: err.code, message: err.message};
    }
}"""

CACHED = """async ([base, file]) =>
    Boolean(await (await caches.open("kiln-weights-v1")).match(new URL(file, base).href))"""


@pytest.fixture
def model(tiny_built, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_built("q4f32"), folder)
    return folder


@pytest.fixture
def context(browser):
    context = browser.new_context()  # its own HTTP cache and Cache API store
    yield context
    context.close()


def shards(folder: Path) -> list[str]:
    return [s["file"] for s in json.loads((folder / "manifest.json").read_text())["shards"]]


class Faults:
    """A middleware that drops the connection half-way through the body of a file, the next
    `times` times it is asked for (range requests included), and records every request."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.drops: dict[str, int] = {}
        self.log: list[tuple[str, str | None]] = []

    async def __call__(self, request: web.Request, handler) -> web.StreamResponse:
        name = request.path.rsplit("/", 1)[-1]
        self.log.append((name, request.headers.get("Range")))
        if self.drops.get(name, 0) <= 0:
            return await handler(request)
        self.drops[name] -= 1
        path = self.folder / name
        data = path.read_bytes()
        response = web.StreamResponse(
            headers={
                "Content-Length": str(len(data)),
                "Content-Type": "application/octet-stream",
                "ETag": etag_of(path.stat()),
                "Cache-Control": "public, max-age=31536000, immutable",
            }
        )
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        request.transport.abort()
        return response


def test_truncated_shard_is_fetched_again_once_restored(model, context):
    shard = model / shards(model)[0]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    faults = Faults(model)
    with serve_folder(model, middlewares=(faults,)) as url:
        page = context.new_page()
        page.goto(f"{url}/manifest.json")
        base = f"{url}/"
        failed = page.evaluate(LOAD, base)
        assert failed["name"] == "ShardIntegrityError" and failed["code"] == "shard_integrity"
        assert shard.name in failed["message"]
        # The second try went past the HTTP cache to the server.
        assert [n for n, _ in faults.log].count(shard.name) == 2
        assert not page.evaluate(CACHED, [base, shard.name])

        shard.write_bytes(good)
        loaded = page.evaluate(LOAD, base)
        assert loaded["ok"], loaded
        assert loaded["sources"] == {"cache": len(shards(model)) - 1, "network": 1}
        assert page.evaluate(CACHED, [base, shard.name])


def test_dropped_connection_is_resumed_with_a_range(model, context):
    shard = shards(model)[0]
    faults = Faults(model)
    faults.drops[shard] = 1
    with serve_folder(model, middlewares=(faults,)) as url:
        page = context.new_page()
        page.goto(f"{url}/manifest.json")
        loaded = page.evaluate(LOAD, f"{url}/")
        assert loaded["ok"], loaded
        size = (model / shard).stat().st_size
        ranges = [r for name, r in faults.log if name == shard and r]
        assert ranges and all(r.startswith(f"bytes={size // 2}-") for r in ranges)
        fresh = context.browser.new_context()
        page = fresh.new_page()
        page.goto(f"{url}/manifest.json")
        assert page.evaluate(LOAD, f"{url}/")["text"] == loaded["text"]
        fresh.close()


def test_connection_that_keeps_dropping_is_a_model_load_error(model, context):
    shard = shards(model)[0]
    faults = Faults(model)
    faults.drops[shard] = 4
    with serve_folder(model, middlewares=(faults,)) as url:
        page = context.new_page()
        page.goto(f"{url}/manifest.json")
        base = f"{url}/"
        failed = page.evaluate(LOAD, base)
        assert failed["name"] == "ModelLoadError" and failed["code"] == "model_load_failed"
        assert shard in failed["message"] and "4 requests" in failed["message"]
        assert not page.evaluate(CACHED, [base, shard])
        loaded = page.evaluate(LOAD, base)
        assert loaded["ok"], loaded


class CachedErrors:
    """A middleware that answers a file with a 500 marked cacheable for a minute (as a CDN may),
    while `failing` is set, and counts the requests for it that reach the server."""

    def __init__(self, name: str):
        self.name = name
        self.failing = True
        self.requests = 0

    async def __call__(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path.rsplit("/", 1)[-1] != self.name:
            return await handler(request)
        self.requests += 1
        if not self.failing:
            return await handler(request)
        return web.Response(status=500, text="busy", headers={"Cache-Control": "max-age=60"})


@pytest.mark.parametrize("file", ["shard", "manifest"])
def test_cacheable_errors_are_retried_at_the_server(model, context, file):
    name = shards(model)[0] if file == "shard" else "manifest.json"
    errors = CachedErrors(name)
    with serve_folder(model, middlewares=(errors,)) as url:
        page = context.new_page()
        page.goto(f"{url}/tokenizer_config.json")
        base = f"{url}/"
        failed = page.evaluate(LOAD, base)
        assert failed["name"] == "ModelLoadError", failed
        # Every retry reached the server, and the error counts them.
        assert errors.requests == 4 and "(4 requests)" in failed["message"], failed
        # A later load in the same browser asks the server again rather than its cache.
        page.evaluate(LOAD, base)
        assert errors.requests == 8
        errors.failing = False
        loaded = page.evaluate(LOAD, base)
        assert loaded["ok"], loaded
        assert errors.requests == 9


@pytest.mark.parametrize("fault", ["manifest-not-json", "kernels-missing", "tokenizer-cut"])
def test_bad_model_files_are_model_load_errors(model, context, fault):
    manifest = json.loads((model / "manifest.json").read_text())
    kernels = [model / variant["kernels"] for variant in manifest["variants"].values()]
    targets = {
        "manifest-not-json": [model / "manifest.json"],
        "kernels-missing": kernels,  # whichever set the backend picks
        "tokenizer-cut": [model / manifest["tokenizer"]],
    }[fault]
    good = [target.read_bytes() for target in targets]
    faults = Faults(model)
    if fault == "manifest-not-json":
        targets[0].write_text("<html>not a manifest</html>")
    elif fault == "kernels-missing":
        for target in targets:
            target.unlink()
    else:
        faults.drops[targets[0].name] = 4
    with serve_folder(model, middlewares=(faults,)) as url:
        page = context.new_page()
        page.goto(f"{url}/tokenizer_config.json")
        failed = page.evaluate(LOAD, f"{url}/")
        assert failed["name"] == "ModelLoadError", failed
        assert any(target.name in failed["message"] for target in targets)
        for target, data in zip(targets, good, strict=True):
            target.write_bytes(data)
        loaded = page.evaluate(LOAD, f"{url}/")
        assert loaded["ok"], loaded
