"""llama.cpp's own tokenizer test files: vocabulary-only GGUF files of several model families,
each with test strings (`.inp`) and the token ids Hugging Face's tokenizer gives for them
(`.out`, written by llama.cpp's convert_hf_to_gguf_update.py). They ship inside the
llama-cpp-python source distribution on PyPI, fetched once with pip and kept in the user's cache.
The same distribution carries llama.cpp's collection of real chat templates (models/templates/,
as their models publish them), read by `template_file`."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from compiler.resources import cache_dir

CACHE = cache_dir("llama-cpp-vocab")
SDIST = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
MEMBERS = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
SEPARATOR = "\n__ggml_vocab_test__\n"


def vocab_file(name: str) -> Path:
    """The path of models/ggml-vocab-`name`.gguf (its .inp and .out beside it)."""
    if not (CACHE / SDIST_SHA256).is_file():  # written once every file is in place
        _extract()
    return CACHE / f"ggml-vocab-{name}.gguf"


def template_file(name: str) -> Path:
    """The path of models/templates/`name`.jinja."""
    if not (CACHE / "templates" / SDIST_SHA256).is_file():
        _extract("templates/", CACHE / "templates")
    return CACHE / "templates" / f"{name}.jinja"


def cases(path: Path) -> list[tuple[str, list[int]]]:
    """(text, expected ids) pairs of a vocab file's tests."""
    texts = path.with_name(path.name + ".inp").read_text(encoding="utf-8").split(SEPARATOR)
    ids = path.with_name(path.name + ".out").read_text(encoding="utf-8").split("\n")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids, strict=False)]


def _extract(prefix: str = "ggml-vocab-", folder: Path = CACHE) -> None:
    """Extracts the members of models/ whose path begins with `prefix` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", "-d", tmp, "llama-cpp-python==0.3.36"],
            check=True,
        )  # fmt: skip
        sdist = Path(tmp) / SDIST
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        assert digest == SDIST_SHA256, f"{SDIST} has sha256 {digest}, not {SDIST_SHA256}"
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.startswith(MEMBERS + prefix):
                    data = archive.extractfile(member)
                    assert data is not None
                    partial = Path(tmp) / Path(member.name).name
                    partial.write_bytes(data.read())
                    partial.replace(folder / partial.name)
    (folder / SDIST_SHA256).touch()
