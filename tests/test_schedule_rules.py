"""Which schedule rule scheduled each kernel, for each target: the tiny model compiled to the
three kernel sets, unquantized and 4-bit, and every kernel the plans launch held to the rule
meant for it (`targets.rules.ApplyRules` records them). A kernel that falls through to a slower
rule, or a rule that stops applying, fails here rather than going unseen in a benchmark.

The tables are the schedules as they stand, slow paths included and named as such, so that
improving one means changing its line here."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from compiler.build import compile_cached, quantize
from compiler.loader import load
from compiler.quantization import get_scheme

# Kernels named by their role (the name without its numbers) and the step that launches them.
PROJECTIONS = ["qkv_proj", "fused_o_proj_add", "gate_up_proj", "fused_down_proj_add", "lm_head"]
ELEMENTWISE = ["embedding", "fused_split_silu_multiply"]
STEPS = ("prefill", "decode")


def every_role(rule: str) -> dict[tuple[str, str], set[str]]:
    roles = [*PROJECTIONS, *ELEMENTWISE, "rms_norm"]
    table = {(step, role): {rule} for step in STEPS for role in roles}
    table[("prefill", "last_token")] = {rule}
    for step in STEPS:
        # hand-written TIR (q/k norms, rope, the cache append and attention), as written
        table[(step, "attention")] = {"written"}
    # the greedy token (compiler/sampling.py), each of a verify step's rows', a drawn token,
    # the logits edited before either (compiler/logit_edits.py) and the logprobs after either
    # (compiler/top_logprobs.py)
    table[("argmax", "argmax_logits")] = {"written"}
    table[("argmax_rows", "argmax_rows_logits")] = {"written"}
    table[("sample", "sample_logits")] = {"written"}
    table[("edit", "edit_logits")] = {"written"}
    table[("logprobs", "logprobs_logits")] = {"written"}
    return table


def with_rules(table: dict, rules: dict[tuple[str, str], str]) -> dict:
    return {**table, **{key: {rule} for key, rule in rules.items()}}


def with_verify(table: dict, rules: dict[str, set[str]] | None = None) -> dict:
    """`table` and the verify step's kernels (speculative decoding: prefill keeping every
    token's logits), prefill's but where `rules` says otherwise (None: no such kernel)."""
    verify = {role: found for (step, role), found in table.items() if step == "prefill"}
    del verify["last_token"]
    verify.update(rules or {})
    return {**table, **{("verify", r): found for r, found in verify.items() if found is not None}}


# "software" (CPU-backed adapters): every kernel one rule of our own; the gating of the MLP
# is the gate/up projection's epilogue (no kernel of its own).
SOFTWARE = {
    key: rule
    for key, rule in every_role("SerialReduction").items()
    if key[1] != "fused_split_silu_multiply"
}
# "gpu" (dlight's rules, for real GPUs): matmuls and matrix-vector products by dlight's
# Matmul and GEMV, norms by Reduction, element-wise kernels by Fallback; decode's projections
# that read a layer's norm apply it themselves, and the gate/up projection takes the gating as
# its epilogue, by Gemv (no norm or gating kernel of their own; the final norm stays one).
GPU_DENSE = with_rules(
    every_role("Fallback"),
    {
        **{("prefill", p): "FallThrough(Matmul)" for p in PROJECTIONS},
        **{("decode", p): "FallThrough(GEMV)" for p in PROJECTIONS},
        **{("decode", p): "Gemv" for p in ["qkv_proj", "gate_up_proj"]},
        ("prefill", "lm_head"): "FallThrough(GEMV)",  # the last token only
        **{(step, "rms_norm"): "FallThrough(Reduction)" for step in STEPS},
    },
)
del GPU_DENSE[("decode", "fused_split_silu_multiply")]
# 4-bit weights: decode keeps GEMV, but dlight's Matmul takes no dequantizing prefill
# projection: two fall to GeneralReduction and two to Fallback (a thread per output, no
# tiling), the slow path on a real GPU that a prefill schedule of our own should replace.
GPU_4BIT = with_rules(
    GPU_DENSE,
    {
        ("prefill", "qkv_proj"): "Fallback",
        ("prefill", "gate_up_proj"): "Fallback",
        ("prefill", "fused_o_proj_add"): "GeneralReduction",
        ("prefill", "fused_down_proj_add"): "GeneralReduction",
    },
)
# "wasm" (the CPU backend): reductions by CpuReduction, element-wise kernels by
# CpuElementwise; the final norm of prefill (one token) is left to TVM's plain loops. The
# gating of the MLP is the gate/up projection's epilogue, as on "software".
WASM_DENSE = with_rules(
    {
        key: rule
        for key, rule in every_role("CpuReduction").items()
        if key[1] != "fused_split_silu_multiply"
    },
    {(step, "embedding"): "CpuElementwise" for step in STEPS}
    | {("prefill", "last_token"): "CpuElementwise"},
)
WASM_DENSE[("prefill", "rms_norm")] = {"CpuReduction", "none"}
# 4-bit weights: decode's projections are the hand-written integer dot products
# (targets/wasm/integer_linear.py), their input rounding and residual add inside; prefill's
# output head too.
WASM_4BIT = {
    key: rules
    for key, rules in WASM_DENSE.items()
    if key not in {("decode", "fused_o_proj_add"), ("decode", "fused_down_proj_add")}
}
WASM_4BIT.update(
    {
        **{("decode", p): {"written"} for p in ["qkv_proj", "gate_up_proj", "lm_head"]},
        ("decode", "o_proj"): {"written"},
        ("decode", "down_proj"): {"written"},
        ("prefill", "lm_head"): {"written"},
    }
)

# The verify step: its output head a matmul over every token (prefill's, the last token's,
# is a matrix-vector product on gpu); on wasm its norms are TVM's plain loops (as prefill's
# final one), and its 4-bit projections the integer dot products of decode, taking its few
# tokens at once (integer_linear.py).
WRITTEN_4BIT = {
    p: {"written"} for p in ["qkv_proj", "gate_up_proj", "lm_head", "o_proj", "down_proj"]
}
EXPECTED = {
    ("q0f32", "software"): with_verify(SOFTWARE),
    ("q4f32", "software"): with_verify(SOFTWARE),
    ("q0f32", "gpu"): with_verify(GPU_DENSE, {"lm_head": {"FallThrough(Matmul)"}}),
    ("q4f32", "gpu"): with_verify(GPU_4BIT, {"lm_head": {"Fallback"}}),
    ("q0f32", "wasm"): with_verify(WASM_DENSE, {"rms_norm": {"none"}}),
    ("q4f32", "wasm"): with_verify(
        WASM_4BIT,
        {
            "rms_norm": {"none"},
            **WRITTEN_4BIT,
            "fused_o_proj_add": None,
            "fused_down_proj_add": None,
        },
    ),
}


@pytest.mark.parametrize("quantization, variant", list(EXPECTED))
def test_each_kernel_is_scheduled_by_its_rule(tiny_hf, quantization, variant):
    source = load(str(tiny_hf))
    scheme = get_scheme(quantization)
    _, formats = quantize(source, scheme)
    # The tiny builds' sizes (conftest's tiny_built), so the kernels are those it cached.
    compiled, _ = compile_cached(
        source.family, source.config, formats, scheme.dtype, 128, 8, variant
    )
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for step, plan in compiled.functions.items():
        for launch in plan["launches"]:
            role = re.sub(r"\d+", "", launch["kernel"]).removesuffix("_kernel")
            found[(step, role)].add(compiled.rules[launch["kernel"]])
    assert dict(found) == EXPECTED[(quantization, variant)]
