"""A static file server for built folders (aiohttp), bound to 127.0.0.1 by default."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

mimetypes.add_type("text/wgsl", ".wgsl")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/octet-stream", ".bin")


def make_app(root: Path) -> web.Application:
    root = root.resolve()

    async def index(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/index.html")

    async def favicon(_: web.Request) -> web.StreamResponse:
        icon = root / "favicon.ico"
        return web.FileResponse(icon) if icon.is_file() else web.Response(status=204)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    # add_static refuses paths that resolve outside `root` (.., encoded dots, symlinks).
    app.router.add_static("/", root, follow_symlinks=False)
    return app


def serve(root: Path, port: int = 8000, host: str = "127.0.0.1") -> None:
    print(f"serving {root} on http://{host}:{port}/")
    web.run_app(make_app(root), host=host, port=port, print=None)
