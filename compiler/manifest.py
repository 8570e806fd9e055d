"""The contract between the compiler and the runtime: web/src/manifest.schema.json.

The build checks every manifest and kernel file against it before it writes them (so a
network or pass that emits something the runtime does not read fails the build, not the
page); the runtime checks them again before it loads (web/src/backends/loader.js)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from . import resources
from .errors import BuildError

SCHEMA_PATH = resources.shipped("manifest.schema.json")
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
# The manifest's version: the runtime loads only the one its schema declares.
MANIFEST_FORMAT: int = SCHEMA["properties"]["format"]["const"]

_VALIDATORS = {
    "manifest": jsonschema.Draft202012Validator(SCHEMA),
    **{
        part: jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{part}"})
        for part in ("webgpuKernels", "wasmKernels")
    },
}


def problem(document: Any, part: str) -> str | None:
    """Where `document` first breaks the schema's `part` ("manifest", "webgpuKernels" or
    "wasmKernels") and how, or None where it keeps to it."""
    error = jsonschema.exceptions.best_match(_VALIDATORS[part].iter_errors(document))
    if error is None:
        return None
    return f"at /{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"


def read(folder: Path) -> dict[str, Any]:
    """The manifest of a build-web folder of this version, checked; BuildError otherwise."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise BuildError(f"{folder} is not a folder written by build-web: {err}") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != MANIFEST_FORMAT:
        raise BuildError(
            f"{folder}/manifest.json has format {found}; this build-web writes format "
            f"{MANIFEST_FORMAT}: rebuild the model"
        )
    where = problem(manifest, "manifest")
    if where:
        raise BuildError(f"{folder}/manifest.json breaks {SCHEMA_PATH.name} {where}")
    return manifest
