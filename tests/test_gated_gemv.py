"""The gpu kernel set's one-token gate/up projection with the MLP's gating as its epilogue
(compiler/targets/webgpu_gpu/rules.py `GatedGemv`): its WGSL, run on the page's adapter, held
to numpy on weights decoded independently of the formats' TE expressions (tests/cpu_kernels.py
`stored_weight`), weight format by weight format, within test_kernels.py's bound for the
gated product."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from cpu_kernels import op_functions, stored_weight
from kernel_page import as_floats, f32, i32, run_kernel
from test_kernels import COLS, ROWS, gated_bound, linear_tolerance
from tvm import s_tir
from tvm.relax.frontend.nn import spec

from compiler.formats import FORMATS
from compiler.models import kernels
from compiler.targets import TARGETS
from compiler.targets.rules import ApplyRules
from compiler.targets.webgpu import WEBGPU, build_kernels, kernel_entry
from compiler.targets.webgpu_gpu.rules import ROWS as ROWS_PER_GROUP
from compiler.targets.webgpu_gpu.rules import rules

FORMAT_NAMES = ["f32", "q4_1", "q4_k", "q6_k", "q8_0", "q4f32"]


def gated_kernel(fmt_name: str, activation: str) -> tuple[dict, list[str]]:
    """The WGSL kernel of one token's gated gate/up projection on the gpu set, and its buffers
    in binding order."""
    target = TARGETS["gpu"]
    fmt = FORMATS[fmt_name]
    params = fmt.parts(2 * ROWS, COLS)
    mod = op_functions(
        lambda x, p: kernels.gated_linear(x, p, fmt, ROWS, activation, target),
        params,
        spec.Tensor([1, 1, COLS], "float32"),
    )
    record: dict[str, str] = {}
    with tvm.target.Target("webgpu"):
        scheduled = ApplyRules(rules(), record)(mod)
    assert record == {"gate_up_proj": "GatedGemv"}
    wgsl, _, _ = build_kernels(scheduled, WEBGPU)
    (name,) = wgsl
    order = re.findall(r"@binding\(\d+\) var<storage, [a-z_]+> (\w+)_ptr", wgsl[name])
    return {**kernel_entry(wgsl[name]), "name": name}, order


def test_gated_gemv_matches_numpy(tiny_built, engine_page):
    rng = np.random.default_rng(31)
    cases = []
    for activation in ("silu", "gelu_tanh"):
        for fmt_name in FORMAT_NAMES:
            parts, weight = stored_weight(fmt_name, 2 * ROWS, COLS, rng)
            x = rng.standard_normal((1, 1, COLS)).astype(np.float32)
            kernel, order = gated_kernel(fmt_name, activation)
            arrays = {"x": f32(x), "gated": f32(np.zeros(ROWS))}
            for part, values in parts.items():
                arrays[part] = f32(values) if values.dtype == np.float32 else i32(values)
            cases.append(
                (kernel, order, arrays, gated_bound(x, weight, activation, linear_tolerance))
            )
    groups = 2 * ROWS // ROWS_PER_GROUP
    with engine_page(tiny_built("q4f32"), "software") as page:
        for kernel, order, arrays, (want, bound) in cases:
            # The one scalar: packGridDimX, the workgroup count less one.
            run = {"bind": {n: n for n in order} | {"out": "gated"}, "pods": [groups - 1]}
            run |= {"groups": groups, "count": ROWS}
            (found,) = run_kernel(page, kernel, order, arrays, [run])
            assert np.all(np.abs(as_floats(found) - want.ravel()) <= bound.ravel())


@pytest.mark.parametrize("tokens", ["n", 1])
def test_only_one_token_takes_the_epilogue(tokens):
    """Prefill's product (n tokens) is dlight's, the gating a kernel of its own (relax's)."""
    fmt = FORMATS["f32"]
    params = fmt.parts(2 * ROWS, COLS)
    mod = op_functions(
        lambda x, p: kernels.gated_linear(x, p, fmt, ROWS, "silu", TARGETS["gpu"]),
        params,
        spec.Tensor([1, tokens, COLS], "float32"),
    )
    sch = s_tir.Schedule(mod["gate_up_proj"])
    blocks = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
    assert ("gated" in blocks) == (tokens == 1)
