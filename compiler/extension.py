"""`build-web MODEL --extension`: the built model packaged as a Chrome extension (Manifest V3).

The extension folder holds the runtime (web/build/, without the chat site's page), the
extension's own pages (web/extension/), the model folder under `model/` (it has its own
manifest.json, which cannot sit beside the extension's) and a generated manifest.json.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from . import manifest as contract
from . import resources
from .build import RUNTIME_DIR
from .errors import BuildError
from .staging import staged_folder

EXTENSION_SOURCES = resources.shipped("extension")
# The chat site's page: the extension has its own popup.
SITE_FILES = {"index.html", "chat.js", "chat.css"}

# Only what the design needs, and no host permissions: a page is read only after the user
# clicks the toolbar button on it (activeTab), with chrome.scripting; storage keeps the
# conversation and settings; offscreen holds the engine while no popup is open.
PERMISSIONS = ["activeTab", "scripting", "storage", "offscreen"]

# For the extension's pages (popup, offscreen document):
# - default-src 'self': anything not named below comes only from the extension's files;
# - script-src 'self': the runtime and pages are files of the extension, no inline script;
#   'wasm-unsafe-eval' lets the grammar engine (XGrammar's wasm, in a chunk loaded only when
#   a request asks for response_format) compile WebAssembly. Nothing else evaluates code;
# - connect-src 'self': fetch() reaches only the extension's own files (the weights under
#   model/); the model is never downloaded from another host;
# - style-src 'self': the popup's stylesheet file, no inline styles;
# - object-src 'none', base-uri 'none': no plugins, no <base> redirecting relative URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; object-src 'none'; "
    "base-uri 'none'; connect-src 'self'; style-src 'self'"
)


def model_files(model_folder: Path) -> list[str]:
    """The files of a build-web folder the runtime loads, as its manifest names them."""
    manifest = contract.read(model_folder)
    files = ["manifest.json", manifest["tokenizer"], manifest["tokenizer_config"]]
    for variant in manifest["variants"].values():
        files += [variant["kernels"]] + ([variant["wasm"]["file"]] if "wasm" in variant else [])
    files += [shard["file"] for shard in manifest["shards"]]
    missing = [f for f in files if not (model_folder / f).is_file()]
    if missing:
        raise BuildError(f"{model_folder} lacks {', '.join(missing[:3])}")
    return files


def extension_manifest(model_id: str) -> dict[str, Any]:
    return {
        "manifest_version": 3,
        "name": f"Kiln chat: {model_id}"[:75],  # Chrome's limit
        "version": "1.0",
        "description": f"Chat with {model_id} on WebGPU, on this device: nothing leaves it."[:132],
        # chrome.runtime.getContexts (finding the offscreen document) came in Chrome 116.
        "minimum_chrome_version": "116",
        "permissions": PERMISSIONS,
        "background": {"service_worker": "background.js", "type": "module"},
        "action": {"default_popup": "popup.html", "default_title": f"Chat with {model_id}"},
        "content_security_policy": {"extension_pages": CONTENT_SECURITY_POLICY},
        # Cross-origin isolation: the CPU backend's threads share WebAssembly memory.
        "cross_origin_embedder_policy": {"value": "require-corp"},
        "cross_origin_opener_policy": {"value": "same-origin"},
    }


def _write(out: Path, model_folder: Path, files: list[str], model_id: str) -> None:
    for item in RUNTIME_DIR.iterdir():
        if item.is_file() and item.name not in SITE_FILES:
            shutil.copy2(item, out / item.name)
    for item in EXTENSION_SOURCES.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    (out / "model").mkdir()
    for name in files:
        shutil.copy2(model_folder / name, out / "model" / name)
    (out / "manifest.json").write_text(json.dumps(extension_manifest(model_id), indent=1))


def _zip(folder: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            # Quantized weights hardly compress: storing them saves the time.
            packed = path.suffix == ".bin"
            archive.write(
                path,
                path.relative_to(folder).as_posix(),
                zipfile.ZIP_STORED if packed else zipfile.ZIP_DEFLATED,
            )
    tmp.replace(target)


def build_extension(model_folder: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Writes the unpacked extension folder (default: `<model-id>-extension/` beside the model
    folder) and a .zip of it beside that folder; returns both paths."""
    model_folder = Path(model_folder)
    files = model_files(model_folder)
    model_id = json.loads((model_folder / "manifest.json").read_text())["model_id"]
    if not RUNTIME_DIR.joinpath("kiln.js").is_file():
        raise BuildError("the web runtime is not built: run scripts/setup")
    out = Path(out_dir) if out_dir else model_folder.parent / f"{model_id}-extension"
    archive = out.with_name(f"{out.name}.zip")
    with staged_folder(out) as staging:
        _write(staging, model_folder, files, model_id)
        _zip(staging, archive)
    return out, archive
