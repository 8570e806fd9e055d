"""The manifest's contract (web/src/manifest.schema.json): the build refuses to write a folder
that breaks it, and the runtime refuses to load one, each naming the place and the version."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil

import pytest

from compiler import build as build_module
from compiler import manifest as contract
from compiler.errors import BuildError
from tools.browser import serve_folder

LOAD = """async (base) => {
    const kiln = await import(base + "kiln.js");
    try {
        const engine = await kiln.CreateEngine(base, {backend: "webgpu"});
        await engine.unload();
        return {ok: true};
    } catch (err) {
        return {ok: false, name: err.name, message: err.message};
    }
}"""


def _rename_input(functions: dict) -> dict:
    functions = copy.deepcopy(functions)
    functions["prefill"]["inputs"][0]["name"] = "token_ids"
    return functions


def test_build_refuses_to_write_what_breaks_the_contract(tiny_hf, tmp_path, monkeypatch):
    """A network whose entry function names an input the runtime does not know (here
    `token_ids` for `input_ids`) fails the build before anything is written."""
    compile_cached = build_module.compile_cached

    def renamed(*args, **kwargs):
        compiled, cached = compile_cached(*args, **kwargs)
        return dataclasses.replace(compiled, functions=_rename_input(compiled.functions)), cached

    monkeypatch.setattr(build_module, "compile_cached", renamed)
    out = tmp_path / "site" / "tiny"
    with pytest.raises(BuildError) as caught:
        build_module.build(str(tiny_hf), "q4f32", out, context_window=128, prefill_chunk=8)
    message = str(caught.value)
    assert "manifest.schema.json" in message and "/functions/prefill/inputs/0/name" in message
    names = "['input_ids', 'lengths', 'kv_cache', 'total_len', 'logits', 'sampling', 'mask', "
    names += "'edits', 'token']"
    assert f"'token_ids' is not one of {names}" in message
    assert not out.exists() and not list((tmp_path / "site").iterdir())


def _older(manifest: dict, kernels: dict) -> None:
    manifest["format"] = contract.MANIFEST_FORMAT - 1


def _newer(manifest: dict, kernels: dict) -> None:
    manifest["format"] = contract.MANIFEST_FORMAT + 1
    manifest["shiny_new_field"] = True


def _no_task(manifest: dict, kernels: dict) -> None:
    del manifest["task"]


def _unknown_input(manifest: dict, kernels: dict) -> None:
    manifest["variants"]["gpu"]["functions"] = _rename_input(
        manifest["variants"]["gpu"]["functions"]
    )


def _integer_logits(manifest: dict, kernels: dict) -> None:
    manifest["variants"]["gpu"]["functions"]["argmax"]["inputs"][0]["dtype"] = "int32"


def _unknown_symbol(manifest: dict, kernels: dict) -> None:
    launch = manifest["variants"]["gpu"]["functions"]["decode"]["launches"][0]
    launch["grid"][0] = ["+", "seq_len", 1]


def _path_in_file_name(manifest: dict, kernels: dict) -> None:
    manifest["shards"][0]["file"] = "../../secret.bin"


def _no_grid_pod(manifest: dict, kernels: dict) -> None:
    name = manifest["variants"]["software"]["functions"]["decode"]["launches"][0]["kernel"]
    kernels[name]["pods"] = [p for p in kernels[name]["pods"] if p["name"] != "packGridDimX"]


def _missing_kernel(manifest: dict, kernels: dict) -> None:
    del kernels[manifest["variants"]["software"]["functions"]["decode"]["launches"][-1]["kernel"]]


# fault -> (what the runtime's message says, what Python's check of the manifest or of the
# kernels file says; None for a fault between the two files, which the build, writing both
# from one compile, cannot make)
FAULTS = {
    _older: (
        f"has format {contract.MANIFEST_FORMAT - 1}; this runtime reads format "
        f"{contract.MANIFEST_FORMAT}",
        "format",
    ),
    _newer: (
        f"has format {contract.MANIFEST_FORMAT + 1}; this runtime reads format "
        f"{contract.MANIFEST_FORMAT}",
        "format",
    ),
    _no_task: ("/ must have required property 'task'", "'task' is a required property"),
    _unknown_input: (
        "/variants/gpu/functions/prefill/inputs/0/name must be equal to one of the allowed "
        "values (input_ids, lengths, logits, sampling, mask, edits, token)",
        "at /variants/gpu/functions/prefill/inputs/0/name",
    ),
    _integer_logits: (
        "/variants/gpu/functions/argmax/inputs/0/dtype must be equal to constant",
        "at /variants/gpu/functions/argmax/inputs/0/dtype",
    ),
    _unknown_symbol: (
        "/variants/gpu/functions/decode/launches/0/grid/0/1 must be equal to one of the "
        "allowed values (n, v, total_len, b)",
        "at /variants/gpu/functions/decode/launches/0/grid/0",
    ),
    _path_in_file_name: ('/shards/0/file must match pattern "^[A-Za-z0-9_-]', "at /shards/0/file"),
    _no_grid_pod: ("/pods must contain at least 1 and no more than 1", "does not contain items"),
    _missing_kernel: ("lacks the kernel", None),
}


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_runtime_refuses_folders_off_the_contract(tiny_built, tmp_path, browser, fault):
    folder = tmp_path / "model"
    shutil.copytree(tiny_built("q4f32"), folder)
    manifest = contract.read(folder)  # as built, it keeps to the contract
    # the kernels SwiftShader's adapter (a fallback adapter) is given
    kernels_path = folder / manifest["variants"]["software"]["kernels"]
    kernels = json.loads(kernels_path.read_text())
    assert contract.problem(kernels, "webgpuKernels") is None
    fault(manifest, kernels)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kernels_path.write_text(json.dumps(kernels))

    runtime_says, python_says = FAULTS[fault]
    if fault is _no_grid_pod:
        assert python_says in (contract.problem(kernels, "webgpuKernels") or "")
    elif python_says is not None:
        with pytest.raises(BuildError, match=re.escape(python_says)):
            contract.read(folder)
    context = browser.new_context()
    try:
        with serve_folder(folder) as url:
            page = context.new_page()
            page.goto(f"{url}/manifest.json")
            failed = page.evaluate(LOAD, f"{url}/")
    finally:
        context.close()
    assert failed["name"] == "ModelLoadError", failed
    assert runtime_says in failed["message"], failed["message"]
