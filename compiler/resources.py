"""Where the compiler finds the files it ships with and where it keeps its caches.

An installed package carries its files in `compiler/share/`: the wheel's build step (setup.py)
copies them there from the sources named in `SOURCES`. A checkout has no `share/` and reads the
sources themselves. Nothing else outside the package is read.

Caches (compiled kernels, presets fetched from wheels) go to `KILN_CACHE_DIR` if set, else
`$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SHARE = PACKAGE / "share"

# A shipped file or folder's name in share/ -> where its source lies in the repository.
SOURCES = {
    "presets": "models",  # the presets' JSON files
    "manifest.schema.json": "web/src/manifest.schema.json",  # the contract with the runtime
    "runtime": "web/build",  # the bundled runtime and the chat site (npm run build)
    "extension": "web/extension",  # the Chrome extension's pages and scripts
}


def shipped(name: str) -> Path:
    """The path of the shipped file or folder `name` (a key of SOURCES)."""
    if SHARE.is_dir():
        return SHARE / name
    return PACKAGE.parent / SOURCES[name]


def cache_dir(part: str) -> Path:
    """The folder of one cache (`kernels`, `models`, ...), not created here."""
    root = os.environ.get("KILN_CACHE_DIR")
    if root:
        return Path(root).expanduser() / part
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kiln" / part
