"""Headless Chromium with WebGPU and a local static server: used by the tests and the benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from compiler.serve import make_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--enable-unsafe-webgpu",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The engine's prefix cache's figures (runtimeStats().prefix_cache) once the writes to the
# browser's storage it was asked for are done.
PREFIX_CACHE_WRITTEN = """async () => {
    for (;;) {
        const held = (await engine.runtimeStats()).prefix_cache;
        if (held.pending_writes === 0) return held;
        await new Promise((resolve) => setTimeout(resolve, 20));
    }
}"""

# Run in a page or worker before an engine loads: every WebGPU device it opens is kept in
# `globalThis.__devices`, so that a test can destroy one (what a GPU reset looks like to the
# page) without a hook in the runtime.
RECORD_DEVICES = """(() => {
  const original = GPUAdapter.prototype.requestDevice;
  globalThis.__devices = [];
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await original.apply(this, args);
    globalThis.__devices.push(device);
    return device;
  };
})();"""


@contextlib.contextmanager
def serve_folder(
    root: Path, requests: list[str] | None = None, middlewares: tuple[Middleware, ...] = ()
) -> Iterator[str]:
    """Serves `root` with the project's own server on a free loopback port. If `requests` is
    given, the path of every request is appended to it: requests a service worker makes are
    not all seen by Playwright's page events. `middlewares` run before the server's own
    handler (tests use them to inject faults)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    app = make_app(root)
    if requests is not None:

        @web.middleware
        async def record(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            requests.append(request.path)
            return await handler(request)

        app.middlewares.append(record)
    app.middlewares.extend(web.middleware(m) for m in middlewares)
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def open_engine_page(
    browser,
    base_url: str,
    model_path: str = "/",
    variant: str | None = None,
    backend: str | None = None,
    threads: int | None = None,
    options: dict | None = None,
):
    """A page at the model folder with the engine loaded as `window.engine` (on `backend`,
    with `variant`'s kernels, the CPU backend on at most `threads` threads, where given, and the
    other engine `options`)."""
    page = browser.new_page()
    page.on(
        "console",
        lambda m: print("[browser]", m.text, file=sys.stderr) if m.type == "error" else None,
    )
    page.goto(f"{base_url}{model_path}manifest.json")
    page.evaluate(
        """async ([url, options]) => {
            const kiln = await import(url + "kiln.js");
            window.kiln = kiln;
            window.engine = await kiln.CreateEngine(url, options);
            window.engineArgs = [url, options];  // for a second engine of the same build
        }""",
        [
            f"{base_url}{model_path}",
            {
                **(options or {}),
                **{
                    k: v
                    for k, v in (("variant", variant), ("backend", backend), ("threads", threads))
                    if v is not None
                },
            },
        ],
    )
    return page


@contextlib.contextmanager
def engine_page_for(
    browser,
    folder: Path,
    variant: str | None = None,
    backend: str | None = None,
    options: dict | None = None,
):
    """Serves a built model folder and yields a page with its engine loaded as `window.engine`
    (with the engine `options` given)."""
    with serve_folder(folder) as url:
        page = open_engine_page(browser, url, variant=variant, backend=backend, options=options)
        try:
            yield page
        finally:
            page.close()
