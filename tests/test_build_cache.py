"""The kernel cache's key covers every module that compiling runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from compiler.build import COMPILING
from compiler.resources import PACKAGE


def test_every_module_compiling_imports_is_in_the_key():
    # A fresh interpreter: what `compiler.compile` imports, not what this test session has.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, compiler.compile; print(json.dumps("
            "[m.__file__ for n, m in sys.modules.items() if n.split('.')[0] == 'compiler']))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    files = [Path(f).relative_to(PACKAGE) for f in json.loads(loaded)]
    assert any(f.parts[0] == "models" for f in files)  # the walk saw the families
    missing = [f.as_posix() for f in files if f.parts[0] not in COMPILING]
    assert not missing, f"compiler.build.COMPILING lacks {missing}"
    # The wasm runtime's C is linked into every CPU build.
    assert "targets" in COMPILING and (PACKAGE / "targets" / "wasm" / "runtime.c").is_file()
