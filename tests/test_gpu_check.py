"""scripts/gpu-check, where WebGPU has no GPU (this machine's only adapter is SwiftShader, a CPU
fallback, or none): it stops before building anything, with one line saying why, and exit
status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_refuses_a_cpu_fallback_adapter_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools.gpu_check", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    # With the GPU switches, Chromium here gives SwiftShader or, at times, no adapter at all.
    lines = result.stderr.strip().splitlines()
    assert lines in (
        [
            "gpu-check: WebGPU's only adapter is a CPU fallback (google swiftshader); "
            "run it on a machine with a GPU"
        ],
        ["gpu-check: WebGPU gives no adapter here; run it on a machine with a GPU"],
    ), lines
    assert not any(tmp_path.iterdir())  # nothing built


def test_gpu_check_in_node_needs_the_webgpu_package(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools.gpu_check", "--runtime", "node", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert 'the optional "webgpu" package is not installed' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
