"""Links TVM's CPU kernels for wasm32 into one standalone WebAssembly module.

The kernels' object file (TVM's LLVM code generator) is linked by Debian's `wasm-ld` with
`runtime.c` (the runtime symbols the kernels call, and the thread pool), and wasi-libc's libm
and malloc, into a module whose one import is its memory: shared, so that worker threads can
run parallel loops with instances of their own. Each instance gets its own stack by setting
the exported `__stack_pointer`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ...errors import BuildError

LLVM = "19"
CLANG = f"clang-{LLVM}"
WASM_LD = f"wasm-ld-{LLVM}"
WASI_SYSROOT = Path("/usr/lib/wasm32-wasi")
WASI_INCLUDE = Path("/usr/include/wasm32-wasi")
BUILTINS = Path(f"/usr/lib/llvm-{LLVM}/lib/clang/{LLVM}/lib/wasi/libclang_rt.builtins-wasm32.a")
RUNTIME_C = Path(__file__).with_name("runtime.c")
# The memory the runtime creates and imports, in 64 KiB pages: 16 MiB to start (data and the
# main stack), growing on demand up to the 4 GiB wasm32 addresses. Written in the manifest.
PAGE = 65536
INITIAL_PAGES = 256
MAXIMUM_PAGES = 65536
STACK_BYTES = 1024 * 1024
# Atomics for the thread pool; the kernels' object is built with the same features.
FEATURES = ["+simd128", "+relaxed-simd", "+atomics", "+bulk-memory"]


def _tools() -> tuple[str, str]:
    clang, ld = shutil.which(CLANG), shutil.which(WASM_LD)
    missing = [name for name, path in ((CLANG, clang), (WASM_LD, ld)) if path is None]
    if not WASI_SYSROOT.joinpath("libc.a").is_file():
        missing.append("wasi-libc")
    if missing or clang is None or ld is None:
        raise BuildError(
            f"the WebAssembly kernels need {', '.join(missing)}: run scripts/setup "
            f"(Debian packages clang-{LLVM}, lld-{LLVM}, wasi-libc)"
        )
    return clang, ld


def link(kernels: Any, exports: list[str]) -> bytes:
    """The linked module of `kernels` (TVM's built module for the wasm32 target): `exports`
    (the kernels' symbols) plus the runtime's kiln_* functions and the stack pointer."""
    clang, ld = _tools()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        kernels.write_to_file(str(folder / "kernels.o"))
        compile_runtime = [
            clang,
            "--target=wasm32-wasi",
            f"-isystem{WASI_INCLUDE}",
            "-O2",
            *(f"-m{feature[1:]}" for feature in FEATURES),
            "-c",
            str(RUNTIME_C),
            "-o",
            str(folder / "runtime.o"),
        ]
        link_module = [
            ld,
            "--no-entry",
            "--strip-debug",
            "--gc-sections",
            "--shared-memory",
            "--import-memory",
            # wasi-libc is built without atomics: its math and malloc (behind runtime.c's lock)
            # are safe to share, so the linker's feature check is skipped for it.
            "--no-check-features",
            f"--initial-memory={INITIAL_PAGES * PAGE}",
            f"--max-memory={MAXIMUM_PAGES * PAGE}",
            f"-zstack-size={STACK_BYTES}",
            "--export=__stack_pointer",
            *(f"--export={name}" for name in exports),
            str(folder / "kernels.o"),
            str(folder / "runtime.o"),
            str(WASI_SYSROOT / "libc.a"),
            str(BUILTINS),
            "-o",
            str(folder / "kernels.wasm"),
        ]
        for command in (compile_runtime, link_module):
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise BuildError(f"{Path(command[0]).name} failed: {result.stderr.strip()}")
        return (folder / "kernels.wasm").read_bytes()
