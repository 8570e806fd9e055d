"""tools/kernel_time.py, the per-kernel timer of the software kernels: on the tiny model's
build, every kernel of a decode step and of a prefill is compiled, bound and dispatched with
its plan's grid, and given the CPU time its browser's GPU process spent on it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("function", ["decode", "prefill"])
def test_every_kernel_of_a_step_is_timed(tiny_built, function):
    folder = tiny_built("q4f32")
    manifest = json.loads((folder / "manifest.json").read_text())
    plan = manifest["variants"]["software"]["functions"][function]
    kernels = {launch["kernel"] for launch in plan["launches"]}
    run = subprocess.run(
        [sys.executable, "-m", "tools.kernel_time", str(folder), "--function", function]
        + ["--rounds", "1", "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    row = json.loads(run.stdout.splitlines()[-1])
    assert set(row["ms_min"]) == kernels
    assert all(ms > 0 for ms in row["ms_min"].values())
