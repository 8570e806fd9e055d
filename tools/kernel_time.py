"""Per-kernel cost on a CPU-backed WebGPU adapter (SwiftShader), robust to a busy machine:

    python -m tools.kernel_time FOLDER [FOLDER ...] [--function decode] [--n 8]
                                [--kernel SUBSTRING ...] [--repeats 20] [--rounds 7]

For each built model folder, the launches of one entry function of the software kernel set
(the first launch of each kernel, layer 0's), each compiled from the folder's WGSL into a
pipeline of its own, bound to zero-filled buffers of the sizes its plan gives and dispatched
`repeats` times in one submission with the plan's grid for `n` tokens; the cost is the CPU time
its browser's GPU process spent on it (the sum over its threads of /proc/PID/task/*/schedstat),
not the wall time, so that other processes on the machine change it little. The minimum over
`rounds` rounds, the folders' kernels alternating, in milliseconds a launch.

`scripts/bench --profile` times the kernels of a real step by the wall clock, each with a
submission round trip of its own: on SwiftShader that round trip costs more than many kernels,
and other work on the machine moves it; this tells two builds' kernels apart where that
cannot."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from compiler.plan import evaluate

from .browser import CHROMIUM, CHROMIUM_ARGS, serve_folder

PAGE = """async ([kernels, repeats]) => {
  const adapter = await navigator.gpu.requestAdapter();
  const device = await adapter.requestDevice({requiredLimits: {
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage}});
  window.prepared = [];
  for (const k of kernels) {
    const module = device.createShaderModule({code: k.wgsl});
    const pipeline = await device.createComputePipelineAsync(
      {layout: "auto", compute: {module, entryPoint: k.name}});
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
    const entries = k.sizes.map((size, binding) => ({binding, resource: {buffer:
      device.createBuffer({size: Math.max(16, Math.ceil(size / 16) * 16), usage})}}));
    if (k.uniform) {
      const uniform = device.createBuffer(
        {size: 256, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST});
      device.queue.writeBuffer(uniform, 0, new Uint8Array(k.uniform));
      entries.push({binding: k.sizes.length, resource: {buffer: uniform}});
    }
    const bindGroup = device.createBindGroup({layout: pipeline.getBindGroupLayout(0), entries});
    window.prepared.push({pipeline, bindGroup, grid: k.grid});
  }
  window.device = device;
  window.runKernel = async (i, times) => {
    const {pipeline, bindGroup, grid} = window.prepared[i];
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    for (let t = 0; t < times; t++) pass.dispatchWorkgroups(...grid);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  for (let i = 0; i < window.prepared.length; i++) await window.runKernel(i, 1);  // compiled
  return window.prepared.length;
}"""

ROOT = Path(__file__).resolve().parents[1]
# TVM's hidden grid argument, named by the manifest's schema (the runtime reads it there too).
_SCHEMA = json.loads((ROOT / "web" / "src" / "manifest.schema.json").read_text())
GRID_POD = _SCHEMA["$defs"]["webgpuKernels"]["additionalProperties"]["properties"]["pods"][
    "contains"
]["properties"]["name"]["const"]


def kernels_of(folder: Path, function: str, n: int, names: list[str]) -> list[dict]:
    """The first launch of each kernel of `function` (or those whose name holds one of
    `names`), with its WGSL, binding sizes, uniform bytes and grid for n tokens."""
    manifest = json.loads((folder / "manifest.json").read_text())
    variant = manifest["variants"]["software"]
    wgsl = json.loads((folder / "kernels-software.json").read_text())
    plan = variant["functions"][function]
    values = {"n": n, "v": n, "total_len": n + 1}
    params = {p["name"]: p for p in manifest["params"]}
    seen, out = set(), []
    for launch in plan["launches"]:
        name = launch["kernel"]
        if name in seen or (names and not any(s in name for s in names)):
            continue
        seen.add(name)
        sizes = []
        for buffer in launch["buffers"]:
            if "param" in buffer:
                sizes.append(params[buffer["param"]]["bytes"])
            elif "storage" in buffer:  # sized for the largest n already
                sizes.append(plan["storages"][buffer["storage"]])
            else:  # the function's inputs and outputs, a cache layer: generous
                sizes.append(64 << 20)
        kernel = wgsl[name]
        pods = [evaluate(e, values) for e in launch["pods"]]
        x, y = (evaluate(g, values) for g in launch["grid"][:2])
        # The kernel's scalars in order, TVM's grid scalar (the x count less one) among them, as
        # the runtime writes them (web/src/backends/executor.js).
        uniform = bytearray(256)
        slots = kernel["pods"]
        given = iter(pods)
        for i, pod in enumerate(slots):
            value = x - 1 if pod["name"] == GRID_POD else next(given)
            kind = {"u32": "<I", "f32": "<f"}.get(pod["type"], "<i")
            uniform[4 * i : 4 * i + 4] = struct.pack(kind, value)
        out.append(
            {
                "name": name,
                "wgsl": kernel["wgsl"],
                "sizes": sizes,
                "uniform": list(uniform) if slots else None,
                "grid": [x, y, 1],
            }
        )
    return out


def _processes() -> dict[int, tuple[int, bytes]]:
    """Every process's parent and command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        parent = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")
        )
        found[int(entry)] = (parent, cmdline)
    return found


def gpu_process(marker: str) -> int:
    """The GPU process of the Chromium launched with the switch `marker` (a descendant of its
    browser process, not always a child)."""
    processes = _processes()
    browser = next(pid for pid, (_, cmd) in processes.items() if marker.encode() in cmd)

    def descends(pid: int) -> bool:
        while pid in processes and pid != browser:
            pid = processes[pid][0]
        return pid == browser

    return next(
        pid for pid, (_, cmd) in processes.items() if b"--type=gpu-process" in cmd and descends(pid)
    )


def cpu_ns(pid: int) -> int:
    """CPU time of a process (every thread), from the kernel's scheduler statistics."""
    return sum(
        int((task / "schedstat").read_text().split()[0])
        for task in Path(f"/proc/{pid}/task").iterdir()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--function", default="decode")
    parser.add_argument("--n", type=int, default=8, help="tokens of prefill or verify")
    parser.add_argument("--kernel", nargs="*", default=[], help="name substrings to keep")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    sets = [kernels_of(f, args.function, args.n, args.kernel) for f in args.folders]
    results: list[dict[str, list[float]]] = [{} for _ in sets]
    # A switch Chromium ignores, to tell this browser's processes from any other's.
    marker = f"--kiln-kernel-time={os.getpid()}"
    with sync_playwright() as p, serve_folder(args.folders[0]) as url:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, marker])
        pages = []
        for kernels in sets:
            page = browser.new_page()
            page.goto(url + "/manifest.json")
            page.evaluate(PAGE, [kernels, args.repeats])
            pages.append(page)
        gpu = gpu_process(marker)
        for _ in range(args.rounds):
            for page, kernels, times in zip(pages, sets, results, strict=True):
                for i, kernel in enumerate(kernels):
                    before = cpu_ns(gpu)
                    page.evaluate("([i, t]) => window.runKernel(i, t)", [i, args.repeats])
                    spent = (cpu_ns(gpu) - before) / 1e6 / args.repeats
                    times.setdefault(kernel["name"], []).append(spent)
        browser.close()
    for folder, times in zip(args.folders, results, strict=True):
        row = {name: round(min(t), 3) for name, t in times.items()}
        medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
        print(
            json.dumps(
                {
                    "folder": str(folder),
                    "function": args.function,
                    "n": args.n,
                    "ms_min": row,
                    "ms_median": medians,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
