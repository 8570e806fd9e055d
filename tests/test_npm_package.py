"""The runtime as an npm package (web/package.json): `npm pack` of web/, then the example app
examples/vite-chat, copied outside the checkout, installs the tarball and Vite from the
registry, is bundled by Vite, served cross-origin isolated, and chats in Chromium with a model
folder that carries no runtime, served from another origin: on WebGPU and on the CPU backend
(its threads started from the bundled thread script), in the page, in the runtime's own
dedicated worker and in the service worker the app serves. Each reply is the one the runtime
gives when imported from a model folder the usual way. The app's size (JS and wasm, gzipped)
is printed (`pytest -s`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tools.browser import serve_folder

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
EXAMPLE = ROOT / "examples" / "vite-chat"
BUILD_WEB = [sys.executable, "-m", "compiler.cli"]
PROMPT = "Tell me about kilns."
MAX_TOKENS = 12
# npm's own cache (~/.npm) keeps Vite's packages between runs: only the first run downloads.
NPM_FLAGS = ["--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"]


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    """`npm pack` of web/ (its prepack script bundles the runtime first)."""
    out = tmp_path_factory.mktemp("pack")
    run(["npm", "pack", "--pack-destination", str(out), "--loglevel=error"], WEB)
    (packed,) = out.glob("*.tgz")
    return packed


def test_the_tarball_carries_the_runtime_and_its_types_only(tarball):
    package = json.loads((WEB / "package.json").read_text())
    assert tarball.name == f"{package['name']}-{package['version']}.tgz"
    with tarfile.open(tarball) as tar:
        names = {m.name.removeprefix("package/") for m in tar.getmembers() if m.isfile()}
        packed = json.loads(tar.extractfile("package/package.json").read())  # type: ignore[union-attr]
    built = {f"build/{p.name}" for p in (WEB / "build").glob("kiln*.js")}
    assert names == built | {"package.json", "types/kiln.d.ts"}
    # Every entry of the exports map is in the tarball, the types included.
    targets = [
        t
        for entry in packed["exports"].values()
        for t in ([entry] if isinstance(entry, str) else entry.values())
    ]
    assert targets and all(t.removeprefix("./") in names for t in targets)
    for script in ("kiln-worker.js", "kiln-shared-worker.js", "kiln-sw.js", "kiln-thread.js"):
        assert f"./{script}" in packed["exports"]
    # The runtime is bundled: installing it pulls in nothing else.
    assert not packed.get("dependencies")
    assert packed["type"] == "module"


@pytest.fixture(scope="module")
def app(tarball, tmp_path_factory) -> Path:
    """The example, outside the checkout, installed from its lock file with the tarball and
    built by Vite: its dist/ folder."""
    folder = tmp_path_factory.mktemp("app") / "vite-chat"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("node_modules", "dist", "*.tgz"))
    # The example names the tarball beside its package.json.
    wanted = json.loads((folder / "package.json").read_text())["dependencies"]["kiln-web"]
    assert wanted == f"file:{tarball.name}"
    shutil.copy(tarball, folder / tarball.name)
    run(["npm", "ci", *NPM_FLAGS], folder)
    run(["npm", "run", "--silent", "build"], folder)
    print("\n" + run(["npm", "run", "--silent", "size"], folder))
    return folder / "dist"


def test_vite_bundles_the_worker_scripts_found_from_import_meta_url(app):
    """The runtime's dedicated worker, shared worker and CPU thread scripts became bundled
    worker entries of the app, and the service worker script sits at the app's root."""
    assets = [p.name for p in (app / "assets").iterdir()]
    assert any(re.fullmatch(r"kiln-worker-[\w-]+\.js", n) for n in assets), assets
    assert any(re.fullmatch(r"kiln-shared-worker-[\w-]+\.js", n) for n in assets), assets
    assert any(re.fullmatch(r"kiln-thread-[\w-]+\.js", n) for n in assets), assets
    assert (app / "kiln-sw.js").is_file()
    # Every worker the page's and the worker's bundles start is one of those entries (a
    # script inlined as a data: URL could not import its chunks).
    for bundle in [
        *(app / "assets").glob("index-*.js"),
        *(app / "assets").glob("kiln-worker-*.js"),
    ]:
        code = bundle.read_text()
        started = re.findall(r"new Worker\(\s*new URL\(\s*(?:/\*[^*]*\*/\s*)?`([^`]*)`", code)
        assert len(started) == code.count("new Worker("), bundle.name
        assert all(re.fullmatch(r"/assets/kiln-(worker|thread)-[\w-]+\.js", u) for u in started)


@pytest.fixture(scope="module")
def model(tiny_hf, tmp_path_factory) -> Path:
    """The tiny model built with --no-runtime: the model alone, no runtime beside it."""
    site = tmp_path_factory.mktemp("model")
    folder = site / "tiny"
    subprocess.run(
        [*BUILD_WEB, str(tiny_hf), "-q", "q0f32", "-o", str(folder), "--no-runtime"]
        + ["--context-window", "128", "--prefill-chunk", "8"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert sorted(p.name for p in site.iterdir()) == ["tiny"]
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.endswith((".js", ".html", ".css"))], names
    assert {"manifest.json", "kernels.wasm", "tokenizer.json"} <= set(names)
    return folder


@pytest.fixture(scope="module")
def servers(app, model) -> Iterator[tuple[str, str, list[str], list[str]]]:
    """The app's URL, the model folder's URL on another origin (localhost, not 127.0.0.1),
    and the paths each server was asked for."""
    app_log: list[str] = []
    model_log: list[str] = []
    with serve_folder(app, app_log) as app_url, serve_folder(model, model_log) as model_url:
        yield app_url, model_url.replace("127.0.0.1", "localhost") + "/", app_log, model_log


def reference(page, folder: Path, backend: str) -> dict:
    """The reply of the runtime that build-web writes beside the model, imported from there."""
    with serve_folder(folder) as url:
        page.goto(f"{url}/manifest.json")
        return page.evaluate(
            """async ([url, request, backend]) => {
                const kiln = await import(url + "/kiln.js");
                const engine = await kiln.CreateEngine(url + "/", {backend});
                const reply = await engine.chat.completions.create(request);
                return {content: reply.choices[0].message.content,
                        tokens: reply.usage.completion_tokens};
            }""",
            [
                url,
                {
                    "messages": [{"role": "user", "content": PROMPT}],
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0,
                },
                backend,
            ],
        )


@pytest.mark.parametrize(
    "backend, where",
    [
        ("wasm", "page"),
        ("wasm", "worker"),
        ("webgpu", "page"),
        ("webgpu", "worker"),
        ("wasm", "service-worker"),
        ("webgpu", "shared"),
    ],
)
def test_the_bundled_app_chats_with_a_model_on_another_origin(
    servers, tiny_built, page, backend, where
):
    app_url, model_url, app_log, model_log = servers
    expected = reference(page, tiny_built("q0f32"), backend)
    assert expected["tokens"] >= 1
    app_log.clear()
    model_log.clear()
    query = f"model={quote(model_url, safe='')}&backend={backend}&where={where}"
    page.goto(f"{app_url}/?{query}&max_tokens={MAX_TOKENS}")
    page.wait_for_selector("body[data-backend], body[data-error]", timeout=120_000)
    assert page.evaluate("document.body.dataset.error") is None, page.inner_text("#status")
    assert page.evaluate("crossOriginIsolated") is True
    assert page.evaluate("document.body.dataset.backend") == backend
    threads = page.evaluate("document.body.dataset.threads")
    if backend == "wasm" and where != "service-worker":
        # Threads need Worker, which service workers lack.
        assert int(threads) > 1 or page.evaluate("navigator.hardwareConcurrency") == 1
    page.fill("#prompt", PROMPT)
    page.click("#send")
    page.wait_for_selector("#reply[data-done]", timeout=120_000)
    assert page.text_content("#reply") == expected["content"]
    assert int(page.get_attribute("#reply", "data-tokens") or "0") == expected["tokens"]
    # The model came from the other origin, the runtime from the app's own bundle.
    assert "/manifest.json" in model_log
    assert not [p for p in model_log if p.endswith(".js")]
    if where == "worker":
        assert any(re.fullmatch(r"/assets/kiln-worker-[\w-]+\.js", p) for p in app_log), app_log
    if where == "service-worker":
        assert "/kiln-sw.js" in app_log
    if where == "shared":  # WebGPU: the shared worker holds the engine
        shared = r"/assets/kiln-shared-worker-[\w-]+\.js"
        assert any(re.fullmatch(shared, p) for p in app_log), app_log
    if backend == "wasm" and where != "service-worker" and int(threads) > 1:
        assert any(re.fullmatch(r"/assets/kiln-thread-[\w-]+\.js", p) for p in app_log), app_log


def readme_script() -> str:
    """The JavaScript of README's "Three ways in": an app that installed the package."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Three ways in") :]
    section = section[: section.index("\n## ")]
    (script,) = re.findall(r"```js\n(.*?)```", section, re.S)
    return script


def test_the_readme_script_runs_in_node_from_the_tarball(
    tarball, servers, tiny_built, page, tmp_path
):
    """README's script, in a Node project that installed the tarball, with the model's URL
    swapped for the tiny model's, prints the reply the runtime gives in Chromium."""
    script = readme_script()
    url = '"http://127.0.0.1:8000/smollm2/"'
    assert url in script and "max_tokens: 12" in script and PROMPT in script
    _, model_url, _, _ = servers
    (tmp_path / "package.json").write_text('{"type": "module", "private": true}')
    run(["npm", "install", str(tarball), *NPM_FLAGS], tmp_path)
    (tmp_path / "app.js").write_text(script.replace(url, json.dumps(model_url)))
    printed = run(["node", "app.js"], tmp_path)
    expected = reference(page, tiny_built("q0f32"), "wasm")
    assert printed == expected["content"] + "\n"
