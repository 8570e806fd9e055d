"""A static file server for built folders (aiohttp), bound to 127.0.0.1 by default.

What it does, and why:

- Only GET and HEAD, only regular files under the served folder. A request path is decoded
  once; a path with `..` or `.` segments, empty segments (`//etc/passwd`), backslashes, NUL
  or other control characters, or segments starting with a dot (the staging and `.old`
  folders build-web leaves while it swaps a build in) is refused with 404. What is left is
  resolved (symlinks followed) and served only if it still lies inside the folder, so a
  symlink pointing out of the folder is a 404 and one pointing inside is served.
- `/` and `DIR/` serve `index.html`; a folder without one is a 404; `DIR` redirects to
  `DIR/` so that the page's relative URLs work.
- Content types come from the table below, not from the system's mime.types, so every
  machine serves `.wgsl`, `.wasm` or `.mjs` alike; `X-Content-Type-Options: nosniff` on
  every response.
- Caching: a strong ETag from inode, size and modification time (nanoseconds) on every
  file, with Last-Modified; If-None-Match and If-Modified-Since answer 304. Files whose
  names say their content (HASHED_NAME) are `immutable` for a year; every other file is
  `no-cache`, that is revalidated by ETag on each use, because a rebuild rewrites
  manifest.json, kernels and tokenizer under the same names.
- Ranges: one byte range (`a-b`, `a-`, `-n`) answers 206 with Content-Range; an
  unsatisfiable one 416 with `Content-Range: bytes */SIZE`. A request with several ranges
  gets the whole file with 200, which RFC 9110 allows (a server may ignore Range) and is
  all the runtime needs; so do malformed ranges and units other than bytes. If-Range (an
  ETag, compared strongly, or a date equal to Last-Modified) keeps the range only if the
  file is unchanged, else the whole file is sent.
- One log line per request on the logger `kiln.serve`: method, path, status, bytes, ms.
- Cross-origin: every response allows any origin to read it (`Access-Control-Allow-Origin:
  *`, with the headers the runtime reads exposed) and to embed it
  (`Cross-Origin-Resource-Policy: cross-origin`), and OPTIONS answers CORS preflights for
  GET and HEAD (a resumed shard download sends `If-Range`, which is not CORS-safelisted).
  So an app on another origin, itself cross-origin isolated (COEP `require-corp` refuses
  cross-origin files without CORP or CORS), loads a model folder from here the way it
  would from a CDN. `*` never covers credentialed requests (no cookies or HTTP auth are
  sent or honoured), and what is served is a folder of files built to be published (model
  folders, the chat site): while it runs, a page of any origin open in a browser on this
  machine may read them, which is the point of serving a model folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate, parsedate_to_datetime
from html import escape
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes

from aiohttp import web

log = logging.getLogger("kiln.serve")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wgsl": "text/wgsl; charset=utf-8",
    ".wasm": "application/wasm",
    ".bin": "application/octet-stream",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".zip": "application/zip",
}
DEFAULT_TYPE = "application/octet-stream"

# The exact rule for "content-hashed": a file name made by one of the two writers that put a
# hash of the content into it, and nothing else.
# - web/build.mjs: esbuild's `chunkNames: "kiln-[name]-[hash]"`; esbuild's [hash] is 8
#   characters of base32 (A-Z, 2-7), e.g. kiln-lib-QC5PHZZO.js, kiln-chunk-QM4VHNWN.js.
# - compiler/weights.py: `params_shard_N.<first 16 hex digits of the shard's sha256>.bin`.
# Entry points (kiln.js, index.html) and model files (manifest.json, kernels, tokenizer)
# keep fixed names that a rebuild rewrites, so they must not be cached as immutable.
HASHED_NAME = re.compile(
    r"kiln-[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*-[A-Z2-7]{8}\.js"
    r"|params_shard_[0-9]+\.[0-9a-f]{16}\.bin"
)
IMMUTABLE = "public, max-age=31536000, immutable"
# Response headers other origins' scripts may read beyond the safelisted ones: the runtime
# checks Content-Range and keeps the ETag to resume a shard with If-Range.
EXPOSED_HEADERS = "Content-Range, ETag, Accept-Ranges"
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, HEAD",
    "Access-Control-Allow-Headers": "Range, If-Range, If-None-Match, If-Modified-Since",
    "Access-Control-Max-Age": "86400",
}
REVALIDATE = "no-cache"

CHUNK = 1 << 20
_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_REFUSED_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")

_ERROR_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{status} {reason}'
    "</title></head>\n<body><h1>{status} {reason}</h1><p>{detail}</p></body></html>\n"
)


def is_content_hashed(name: str) -> bool:
    """Whether a file name carries a hash of its content (see HASHED_NAME)."""
    return HASHED_NAME.fullmatch(name) is not None


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), DEFAULT_TYPE)


def resolve_request_path(root: Path, raw_path: str) -> Path | None:
    """The file or folder under `root` that the percent-encoded URL path names, or None when
    the path is refused or leads outside `root`. `root` must be resolved already."""
    if not raw_path.startswith("/"):
        return None
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _REFUSED_CHARS.search(path):
        return None
    segments = path[1:].split("/")
    if segments[-1] == "":
        segments.pop()  # a trailing slash names a folder; its index is looked up later
    if any(s == "" or s.startswith(".") for s in segments):
        return None  # also catches "." and ".."
    try:
        target = root.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, a name too long
        return None
    return target if target.is_relative_to(root) else None


def etag_of(stat: os.stat_result) -> str:
    # Strong: any rewrite changes the modification time in nanoseconds or the size, and a
    # build swapped in by rename gets new inodes.
    return f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"'


def _etag_list(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def _not_modified(request: web.Request, etag: str, mtime: float) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        # Weak comparison, as RFC 9110 asks for If-None-Match.
        tags = [t.removeprefix("W/") for t in _etag_list(if_none_match)]
        return "*" in tags or etag in tags
    if_modified_since = request.headers.get("If-Modified-Since")
    if if_modified_since:
        try:
            return int(mtime) <= parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError):
            return False
    return False


def _range_still_valid(request: web.Request, etag: str, last_modified: str) -> bool:
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith('"'):
        return if_range == etag  # strong comparison: a W/ tag never matches
    if if_range.startswith("W/"):
        return False
    return if_range == last_modified


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive) for one satisfiable byte range; "unsatisfiable"; or None when
    the header is to be ignored (malformed, another unit, or several ranges)."""
    match = _SINGLE_RANGE.fullmatch(header.strip().replace(" ", ""))
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(size - suffix, 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


def _error_page(status: int, detail: str) -> web.Response:
    reason = HTTPStatus(status).phrase
    body = _ERROR_PAGE.format(status=status, reason=reason, detail=escape(detail))
    return web.Response(
        status=status,
        body=body.encode(),
        headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"},
    )


class _FileResponse(web.StreamResponse):
    """A file streamed from the handler; counts the body bytes written, for the log."""

    body_bytes = 0


async def _send_file(request: web.Request, path: Path, name: str) -> web.StreamResponse:
    # Open first, then stat the open file: headers and bytes then describe the same file
    # even if a rebuild renames a new folder into place meanwhile.
    file = await asyncio.to_thread(open, path, "rb")
    try:
        stat = os.fstat(file.fileno())
        size = stat.st_size
        etag = etag_of(stat)
        last_modified = formatdate(stat.st_mtime, usegmt=True)
        headers = {
            "Content-Type": content_type(name),
            "ETag": etag,
            "Last-Modified": last_modified,
            "Cache-Control": IMMUTABLE if is_content_hashed(name) else REVALIDATE,
            "Accept-Ranges": "bytes",
        }
        if _not_modified(request, etag, stat.st_mtime):
            del headers["Content-Type"]
            return web.Response(status=304, headers=headers)

        start, length, status = 0, size, 200
        range_header = request.headers.get("Range")
        if range_header is not None and _range_still_valid(request, etag, last_modified):
            byte_range = parse_range(range_header, size)
            if isinstance(byte_range, str):  # "unsatisfiable"
                response = _error_page(416, "The requested range is outside the file.")
                response.headers["Content-Range"] = f"bytes */{size}"
                return response
            if byte_range is not None:
                start, end = byte_range
                length, status = end - start + 1, 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"

        streamed = _FileResponse(status=status, headers=headers)
        streamed.content_length = length
        await streamed.prepare(request)
        if request.method == "GET":
            await asyncio.to_thread(file.seek, start)
            left = length
            while left > 0:
                data = await asyncio.to_thread(file.read, min(CHUNK, left))
                if not data:  # truncated after the stat: the connection ends short
                    raise ConnectionError(f"{path} shrank while it was sent")
                try:
                    await streamed.write(data)
                except ConnectionResetError:
                    # The client went away (a cancelled fetch, a closed tab): not an error
                    # of ours; the log line shows how much it got.
                    return streamed
                left -= len(data)
                streamed.body_bytes += len(data)
        await streamed.write_eof()
        return streamed
    finally:
        file.close()


def make_app(root: Path) -> web.Application:
    """The server for the folder `root`, as an aiohttp application (see the module doc)."""
    root = root.resolve()

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers=PREFLIGHT_HEADERS)
        if request.method not in ("GET", "HEAD"):
            response = _error_page(405, "Only GET and HEAD are served.")
            response.headers["Allow"] = "GET, HEAD"
            return response
        raw_path = request.rel_url.raw_path
        if raw_path.endswith("/"):
            # Resolved and checked like any other path: index.html may be a symlink too.
            raw_path += "index.html"
        target = resolve_request_path(root, raw_path)
        if target is not None and target.is_dir():
            location = raw_path + "/"
            if request.rel_url.raw_query_string:
                location += "?" + request.rel_url.raw_query_string
            return web.Response(status=301, headers={"Location": location})
        if target is None or not target.is_file():
            if raw_path == "/favicon.ico":
                return web.Response(status=204)  # keeps the browser console quiet
            return _error_page(404, "There is no such file here.")
        # Type and caching follow the name in the URL, not a symlink's target: an alias
        # such as latest.bin -> params_shard_0.<hash>.bin must not be cached as immutable.
        return await _send_file(request, target, unquote(raw_path.rsplit("/", 1)[-1]))

    @web.middleware
    async def log_requests(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        status, sent = 500, 0
        try:
            try:
                response = await handler(request)
            except web.HTTPException as err:  # aiohttp's own errors get the same page
                response = _error_page(err.status, err.reason)
            status = response.status
            if isinstance(response, _FileResponse):
                sent = response.body_bytes
            elif request.method != "HEAD" and isinstance(response, web.Response):
                body = response.body
                sent = len(body) if isinstance(body, bytes | bytearray) else 0
            return response
        finally:
            log.info(
                "%s %s %d %d B %.1f ms",
                request.method,
                request.rel_url.raw_path,
                status,
                sent,
                (time.perf_counter() - started) * 1000,
            )

    async def security_headers(_: web.Request, response: web.StreamResponse) -> None:
        # On every response, just before its headers go out (file responses are sent from
        # inside the handler, before a middleware could add a header). The pages are
        # cross-origin isolated, which the CPU backend's threads need (shared memory).
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
        # Readable and embeddable from any origin, as a CDN serves static files (see the
        # module doc): an app elsewhere loads a model folder from here.
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"

    app = web.Application(middlewares=[log_requests])
    app.on_response_prepare.append(security_headers)
    app.router.add_route("*", "/{path:.*}", handle)
    return app


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def _serve_forever(root: Path, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(root), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0][1]  # the real port when `port` is 0
        print(f"serving {root} on {url_of(host, bound)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(root: Path, port: int = 8000, host: str = "127.0.0.1") -> None:
    """Serves `root` until SIGINT or SIGTERM; port 0 picks a free port (printed)."""
    asyncio.run(_serve_forever(root, host, port))
