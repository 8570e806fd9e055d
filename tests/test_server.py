"""The local server (compiler/serve.py) over real HTTP: no way out of the served folder,
content types, byte ranges, ETags and caching, index pages and 404s, the request log, the
`build-web serve DIR` command, a built model loading from it in Chromium, and many clients at
once beside a slow one."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from compiler.build import RUNTIME_DIR
from compiler.serve import is_content_hashed
from tools.browser import serve_folder

SECRET = "KILN-SECRET-6f1d0c"
SHARD = bytes(range(256)) * 40  # 10,240 bytes, every offset distinguishable
SHARD_NAME = f"params_shard_0.{hashlib.sha256(SHARD).hexdigest()[:16]}.bin"
CHUNK_NAME = "kiln-lib-QC5PHZZO.js"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A served folder with one file of each kind, and a secret file and folder beside it."""
    base = tmp_path_factory.mktemp("server")
    (base / "secret.txt").write_text(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text(SECRET)
    root = base / "site"
    root.mkdir()
    files = {
        "index.html": "<!doctype html><title>root index</title>",
        "manifest.json": json.dumps({"format": 2, "shards": [{"file": SHARD_NAME}]}),
        "kiln.js": "export const x = 1;",
        CHUNK_NAME: "export const y = 2;",
        "kernels.wgsl": "@compute @workgroup_size(1) fn main() {}",
        "style.css": "body{}",
        "module.mjs": "export {};",
        "grammar.wasm": b"\0asm\1\0\0\0",
        "logo.png": b"\x89PNG\r\n\x1a\n",
        "logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>",
        "bundle.zip": b"PK\5\6" + b"\0" * 18,
        "empty.bin": b"",
        SHARD_NAME: SHARD,
        ".hidden": SECRET,
        "sub/index.html": "<!doctype html><title>sub index</title>",
        "sub/inner.json": "[]",
        "noindex/data.json": "{}",
    }
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    (root / "link-out.txt").symlink_to(base / "secret.txt")
    (root / "link-out-dir").symlink_to(base / "outside")
    (root / "link-in.json").symlink_to(root / "manifest.json")
    (root / "alias.bin").symlink_to(root / SHARD_NAME)
    (root / "outdex").mkdir()
    (root / "outdex" / "index.html").symlink_to(base / "secret.txt")
    return root


@pytest.fixture(scope="module")
def server(site):
    with serve_folder(site) as url:
        yield urlsplit(url).port


def get(port: int, path: str, method: str = "GET", **headers: str):
    """(status, headers, body) of one request made with http.client."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def raw_request(port: int, target: bytes) -> tuple[int, bytes]:
    """Sends the request line exactly as given (clients would normalize `..`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


ATTACKS = [
    b"/../secret.txt",
    b"/sub/../../secret.txt",
    b"/./../secret.txt",
    b"/%2e%2e/secret.txt",
    b"/%2E%2E%2Fsecret.txt",
    b"/..%2fsecret.txt",
    b"/sub%2f..%2f..%2fsecret.txt",
    b"/%252e%252e/secret.txt",
    b"/%252e%252e%252fsecret.txt",
    b"/..\\secret.txt",
    b"/%5c..%5csecret.txt",
    b"/sub\\..\\..\\secret.txt",
    b"//etc/passwd",
    b"/%2Fetc/passwd",
    b"/%2F%2E%2E/secret.txt",
    b"/secret.txt%00.json",
    b"/manifest.json%00",
    b"/\x00",
    b"/%c0%ae%c0%ae/secret.txt",  # overlong UTF-8 dots
    b"/link-out.txt",
    b"/link-out-dir/secret.txt",
    b"/link-out-dir/",
    b"/.hidden",
    b"/outdex/",  # index.html there is a symlink out
    b"http://localhost/../secret.txt",
]


@pytest.mark.parametrize("target", ATTACKS, ids=[a.decode("latin-1") for a in ATTACKS])
def test_no_way_out_of_the_folder(server, target):
    status, data = raw_request(server, target)
    assert status in (400, 404), data[:300]
    assert SECRET.encode() not in data and b"root:" not in data


def test_absolute_path_of_a_file_outside(server, site):
    secret = (site.parent / "secret.txt").as_posix().encode()
    for target in [b"/" + secret, b"/%2F" + secret[1:], b"/" + secret.replace(b"/", b"%2F")]:
        status, data = raw_request(server, target)
        assert status == 404 and SECRET.encode() not in data


def test_symlink_inside_the_folder_is_served(server, site):
    status, _, body = get(server, "/link-in.json")
    assert status == 200 and body == (site / "manifest.json").read_bytes()
    # Caching follows the URL's name: an alias of a hashed shard is not immutable.
    status, headers, body = get(server, "/alias.bin")
    assert status == 200 and body == SHARD and headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(
    "name, media_type",
    [
        ("kernels.wgsl", "text/wgsl"),
        (SHARD_NAME, "application/octet-stream"),
        ("manifest.json", "application/json"),
        ("kiln.js", "text/javascript"),
        ("module.mjs", "text/javascript"),
        ("grammar.wasm", "application/wasm"),
        ("index.html", "text/html"),
        ("style.css", "text/css"),
        ("logo.png", "image/png"),
        ("logo.svg", "image/svg+xml"),
        ("bundle.zip", "application/zip"),
    ],
)
def test_content_types(server, site, name, media_type):
    status, headers, body = get(server, f"/{name}")
    assert status == 200 and body == (site / name).read_bytes()
    assert headers["Content-Type"].split(";")[0] == media_type
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "header, start, stop",
    [
        ("bytes=0-9", 0, 10),
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=10000-", 10000, len(SHARD)),
        ("bytes=-100", len(SHARD) - 100, len(SHARD)),
        ("bytes=-99999", 0, len(SHARD)),
        ("bytes=5-5", 5, 6),
        ("bytes=10200-99999", 10200, len(SHARD)),
    ],
)
def test_single_range(server, header, start, stop):
    status, headers, body = get(server, f"/{SHARD_NAME}", Range=header)
    assert status == 206
    assert body == SHARD[start:stop]
    assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(SHARD)}"
    assert int(headers["Content-Length"]) == stop - start
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=99999-100000", "bytes=-0"])
def test_unsatisfiable_range(server, header):
    status, headers, _ = get(server, f"/{SHARD_NAME}", Range=header)
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(SHARD)}"


def test_any_range_of_an_empty_file_is_unsatisfiable(server):
    status, headers, _ = get(server, "/empty.bin", Range="bytes=0-")
    assert status == 416 and headers["Content-Range"] == "bytes */0"


@pytest.mark.parametrize(
    "header",
    ["bytes=0-1,4-5", "bytes=0-1, 100-200", "bytes=9-2", "items=0-1", "bytes=x-y", "bytes=-"],
)
def test_several_or_malformed_ranges_get_the_whole_file(server, header):
    """Several ranges, or a range that cannot be read, are ignored (RFC 9110 allows it)."""
    status, headers, body = get(server, f"/{SHARD_NAME}", Range=header)
    assert status == 200 and body == SHARD and "Content-Range" not in headers


def test_head(server, site):
    for path, size in [(f"/{SHARD_NAME}", len(SHARD)), ("/manifest.json", None)]:
        status, headers, body = get(server, path, method="HEAD")
        full = get(server, path)
        assert status == 200 and body == b""
        assert int(headers["Content-Length"]) == (size or len(full[2]))
        assert headers["ETag"] == full[1]["ETag"]
        assert headers["Content-Type"] == full[1]["Content-Type"]
    status, headers, body = get(server, f"/{SHARD_NAME}", method="HEAD", Range="bytes=0-9")
    assert status == 206 and body == b"" and headers["Content-Range"].startswith("bytes 0-9/")
    assert get(server, "/missing.json", method="HEAD")[0] == 404


def test_strong_etag_and_304(server):
    status, headers, _ = get(server, "/manifest.json")
    etag = headers["ETag"]
    assert re.fullmatch(r'"[^"]+"', etag)  # quoted, and strong: no W/
    for value in [etag, f'"other", {etag}', f"W/{etag}", "*"]:
        status, headers304, body = get(server, "/manifest.json", **{"If-None-Match": value})
        assert status == 304 and body == b"", value
        assert headers304["ETag"] == etag and headers304["Cache-Control"] == "no-cache"
        assert headers304["X-Content-Type-Options"] == "nosniff"
    status, _, body = get(server, "/manifest.json", **{"If-None-Match": '"stale"'})
    assert status == 200 and body
    last_modified = headers["Last-Modified"]
    status, _, _ = get(server, "/manifest.json", **{"If-Modified-Since": last_modified})
    assert status == 304


def test_etag_changes_when_the_file_changes(server, site):
    path = site / "sub" / "inner.json"
    before = get(server, "/sub/inner.json")[1]["ETag"]
    path.write_text("[1]")
    status, headers, body = get(server, "/sub/inner.json", **{"If-None-Match": before})
    assert status == 200 and body == b"[1]" and headers["ETag"] != before


def test_if_range(server):
    headers = get(server, f"/{SHARD_NAME}", method="HEAD")[1]
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    for validator, partial in [
        (etag, True),
        (last_modified, True),
        ('"changed"', False),
        (f"W/{etag}", False),  # If-Range compares strongly
        ("Thu, 01 Jan 1970 00:00:00 GMT", False),
    ]:
        status, _, body = get(
            server, f"/{SHARD_NAME}", Range="bytes=0-9", **{"If-Range": validator}
        )
        assert (status, body) == ((206, SHARD[:10]) if partial else (200, SHARD)), validator


def test_cache_control_for_hashed_and_plain_files(server):
    for name in [SHARD_NAME, CHUNK_NAME]:
        assert get(server, f"/{name}")[1]["Cache-Control"] == "public, max-age=31536000, immutable"
    for name in ["manifest.json", "kiln.js", "index.html", "kernels.wgsl", "empty.bin", ""]:
        assert get(server, f"/{name}")[1]["Cache-Control"] == "no-cache", name


def test_hashed_name_rule():
    for name in [
        "kiln-lib-QC5PHZZO.js",
        "kiln-chunk-QM4VHNWN.js",
        "params_shard_0.0123456789abcdef.bin",
        "params_shard_12.fedcba9876543210.bin",
    ]:
        assert is_content_hashed(name), name
    for name in [
        "kiln.js",
        "chat.js",
        "kiln-lib-qc5phzzo.js",  # esbuild's hash is upper-case base32
        "kiln-lib-QC5PHZZ1.js",  # 1 is not a base32 digit
        "kiln-lib-QC5PHZZOX.js",
        "params_shard_0.bin",
        "params_shard_0.0123456789abcde.bin",
        "params_shard_0.0123456789ABCDEF.bin",
        "x-params_shard_0.0123456789abcdef.bin",
        "manifest.json",
        "kernels-gpu.json",
    ]:
        assert not is_content_hashed(name), name
    # The runtime's own chunks, as esbuild names them today, are recognized; its entry scripts
    # (web/build.mjs), whose names never change, are not.
    entries = {"kiln.js", "kiln-worker.js", "kiln-shared-worker.js", "kiln-thread.js", "kiln-sw.js"}
    names = {p.name for p in RUNTIME_DIR.glob("kiln*.js")}
    assert entries <= names
    chunks = names - entries
    assert chunks and all(is_content_hashed(n) for n in chunks)
    assert not any(is_content_hashed(n) for n in entries)


def test_index_pages_redirects_and_404(server, site):
    status, headers, body = get(server, "/")
    assert status == 200 and body == (site / "index.html").read_bytes()
    assert get(server, "/?model=x")[2] == body  # the query does not change the file
    status, _, body = get(server, "/sub/")
    assert status == 200 and b"sub index" in body
    status, headers, _ = get(server, "/sub?x=1")
    assert status == 301 and headers["Location"] == "/sub/?x=1"
    assert get(server, "/noindex/")[0] == 404
    assert get(server, "/noindex/data.json")[0] == 200
    status, headers, body = get(server, "/missing.json")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert b"404" in body and b"<html" in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert get(server, "/favicon.ico")[0] == 204
    status, headers, _ = get(server, "/manifest.json", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_one_log_line_per_request(server):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("kiln.serve")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        get(server, f"/{SHARD_NAME}", Range="bytes=0-99")
        get(server, "/missing.json", method="HEAD")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [r.getMessage() for r in records]
    assert len(lines) == 2, lines
    assert re.fullmatch(rf"GET /{re.escape(SHARD_NAME)} 206 100 B [\d.]+ ms", lines[0])
    assert re.fullmatch(r"HEAD /missing\.json 404 0 B [\d.]+ ms", lines[1])


BUILD_WEB = [sys.executable, "-m", "compiler.cli"]


def test_serve_command(site):
    process = subprocess.Popen(
        [*BUILD_WEB, "serve", str(site), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + process.stderr.read()
        status, headers, body = get(int(match.group(1)), "/manifest.json")
        assert status == 200 and json.loads(body) == json.loads(
            (site / "manifest.json").read_text()
        )
        assert headers["Content-Type"] == "application/json"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert re.search(r"GET /manifest\.json 200 \d+ B [\d.]+ ms", stderr), stderr


def test_serve_command_errors(tmp_path):
    missing = subprocess.run(
        [*BUILD_WEB, "serve", str(tmp_path / "absent")], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"build-web: error: {tmp_path / 'absent'} is not a folder"
    ]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [*BUILD_WEB, "serve", str(tmp_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert busy.returncode == 1
    lines = busy.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"build-web: error: cannot serve on 127.0.0.1:{port}"
    )


def test_built_model_loads_and_answers_in_chromium(tiny_built, page):
    folder = tiny_built("q4f32")
    manifest = json.loads((folder / "manifest.json").read_text())
    for shard in manifest["shards"]:
        assert (
            shard["file"]
            == f"params_shard_{manifest['shards'].index(shard)}.{shard['sha256'][:16]}.bin"
        )
        assert is_content_hashed(shard["file"])
        assert hashlib.sha256((folder / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    with serve_folder(folder) as url:
        page.goto(f"{url}/manifest.json")
        reply = page.evaluate(
            """async (url) => {
                const { CreateEngine } = await import(url + "/kiln.js");
                const engine = await CreateEngine(url + "/");
                return await engine.chat.completions.create(
                    {messages: [{role: "user", content: "hi"}], max_tokens: 3});
            }""",
            url,
        )
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert reply["usage"]["completion_tokens"] >= 1


def test_concurrent_ranges_beside_a_slow_client(tmp_path):
    """200 concurrent range requests each get their bytes while a client that reads one byte
    a second holds a large download open (its handler waits on that socket alone)."""
    big = bytes(range(256)) * 32768  # 8 MiB, every offset distinguishable
    name = f"params_shard_0.{hashlib.sha256(big).hexdigest()[:16]}.bin"
    (tmp_path / name).write_bytes(big)
    with serve_folder(tmp_path) as url:
        port = urlsplit(url).port
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(f"GET /{name} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        received = slow.recv(1)
        stop = threading.Event()

        def trickle() -> None:  # one byte a second until the others are done
            nonlocal received
            while not stop.wait(1.0):
                received += slow.recv(1)

        reader = threading.Thread(target=trickle)
        reader.start()

        def fetch(i: int) -> bool:
            start = i * 40961 % (len(big) - 4096)
            status, headers, body = get(port, f"/{name}", Range=f"bytes={start}-{start + 4095}")
            return status == 206 and body == big[start : start + 4096]

        try:
            with ThreadPoolExecutor(max_workers=200) as pool:
                answered = list(pool.map(fetch, range(200)))
        finally:
            stop.set()
            reader.join()
        assert all(answered), answered.count(False)
        while len(received) < 12:  # the slow download goes on where it was
            received += slow.recv(1)
        assert received.startswith(b"HTTP/1.1 200")
        slow.close()


def test_any_origin_may_read_and_embed(server):
    """A model folder served here loads into an app on another origin, as from a CDN."""
    for path, headers in [
        ("/manifest.json", {}),
        (f"/{SHARD_NAME}", {"Range": "bytes=10-19"}),
        ("/missing.json", {}),
    ]:
        status, got, _ = get(server, path, Origin="http://elsewhere.test", **headers)
        assert status in (200, 206, 404), path
        assert got["Access-Control-Allow-Origin"] == "*"
        assert got["Cross-Origin-Resource-Policy"] == "cross-origin"
        exposed = {h.strip() for h in got["Access-Control-Expose-Headers"].split(",")}
        assert {"Content-Range", "ETag"} <= exposed
    etag = get(server, "/manifest.json")[1]["ETag"]
    status, got, _ = get(server, "/manifest.json", **{"If-None-Match": etag})
    assert status == 304 and got["Access-Control-Allow-Origin"] == "*"
    # A preflight (a resumed download sends If-Range) is answered for GET and HEAD only.
    status, got, body = get(
        server,
        f"/{SHARD_NAME}",
        method="OPTIONS",
        Origin="http://elsewhere.test",
        **{
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range,if-range",
        },
    )
    assert status == 204 and body == b""
    assert got["Access-Control-Allow-Origin"] == "*"
    assert set(got["Access-Control-Allow-Methods"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    allowed = {h.strip().lower() for h in got["Access-Control-Allow-Headers"].split(",")}
    assert {"range", "if-range"} <= allowed
    # OPTIONS that is not a preflight, and other methods, are still refused.
    assert get(server, "/manifest.json", method="OPTIONS")[0] == 405


def test_cross_origin_range_request_in_chromium(site, page):
    """A cross-origin isolated page on one origin resumes a shard from another, as the runtime
    does (Range with If-Range, preflighted), and reads the headers it checks."""
    with serve_folder(site) as files, serve_folder(site / "sub") as app:
        other = files.replace("127.0.0.1", "localhost")  # another origin, the same server
        page.goto(f"{app}/")
        result = page.evaluate(
            """async (url) => {
                const first = await fetch(url, {cache: "no-store"});
                const etag = first.headers.get("ETag");
                const resumed = await fetch(url, {
                    cache: "no-store", headers: {Range: "bytes=100-", "If-Range": etag}});
                const bytes = new Uint8Array(await resumed.arrayBuffer());
                return {isolated: crossOriginIsolated, etag, status: resumed.status,
                        range: resumed.headers.get("Content-Range"), first: bytes[0],
                        length: bytes.length};
            }""",
            f"{other}/{SHARD_NAME}",
        )
    assert result["isolated"] is True
    assert result["etag"] and result["status"] == 206
    assert result["range"] == f"bytes 100-{len(SHARD) - 1}/{len(SHARD)}"
    assert result["first"] == SHARD[100] and result["length"] == len(SHARD) - 100
