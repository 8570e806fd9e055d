"""Applying a target's schedule rules: as dlight's `ApplyDefaultSchedule` does, recording which
rule scheduled each kernel, so that a kernel falling through to a slow rule can be seen."""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .stages import GROUP_STAGES, OUTPUT_RUN, SCALE_STAGES

# What `ApplyRules` records for a kernel that came scheduled (the hand-written ones) and for
# one that no rule took (the CPU target's plain loops).
WRITTEN = "written"
NO_RULE = "none"


def rule_name(rule: ScheduleRule) -> str:
    """A rule's name as `ApplyRules` records it: its class, and the wrapped rule's."""
    inner = getattr(rule, "rule", None)
    return f"{type(rule).__name__}({rule_name(inner)})" if inner else type(rule).__name__


@tvm.transform.module_pass(opt_level=0, name="ApplyRules")
class ApplyRules:
    """dlight's `ApplyDefaultSchedule` (the first rule that gives a schedule schedules the
    function; one that came scheduled is left alone) that also fills `record` with each
    kernel's rule by name. Written out here, a few lines, because dlight's pass does not say
    which rule it applied."""

    def __init__(self, rules: list[ScheduleRule], record: dict[str, str]) -> None:
        self.rules = rules
        self.record = record

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext):
        scheduled = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            if func.attrs is not None and func.attrs.get("tirx.is_scheduled", False):
                self.record[gv.name_hint] = WRITTEN
                continue
            target = func.attrs.get("target") if func.attrs is not None else None
            target = target or Target.current(allow_none=False)
            self.record[gv.name_hint] = NO_RULE
            for rule in self.rules:
                space = rule.apply(func, target, False)
                if space is None:
                    continue
                if not isinstance(space, s_tir.Schedule):
                    (space,) = space
                scheduled[gv] = space.mod["main"].with_attr("tirx.is_scheduled", True)
                self.record[gv.name_hint] = rule_name(rule)
                break
        for gv, func in scheduled.items():
            mod[gv] = func
        return mod


def const(extent: tirx.PrimExpr) -> int | None:
    """A loop extent's value where it is a constant."""
    return int(extent.value) if isinstance(extent, tirx.IntImm) else None


def loop_kinds(sch: s_tir.Schedule, block) -> list[str]:
    """ "S" (spatial) or "R" (reduction) for each loop of `block`."""
    from tvm.s_tir.dlight.analysis import get_sblock_info

    return list(get_sblock_info(sch, block).dom_kind())


def is_scale_stage(sch: s_tir.Schedule, block) -> bool:
    return sch.get(block).name_hint.startswith(SCALE_STAGES)


def is_group_stage(sch: s_tir.Schedule, block) -> bool:
    return sch.get(block).name_hint.startswith(GROUP_STAGES)


def output_run(sch: s_tir.Schedule, block) -> int:
    """The run of consecutive outputs `block` reads of its producer for each of its own
    (`OUTPUT_RUN`), 1 where it is not annotated."""
    run = sch.get(block).annotations.get(OUTPUT_RUN)
    return 1 if run is None else int(run)


def scale_group(sch: s_tir.Schedule, stage, r_loops) -> int:
    """Inputs per group of a scale stage (rows, groups): the reduction's extent over the
    stage's; 1 where that is not known (the caller then leaves the function alone)."""
    k = const(sch.get(r_loops[0]).extent)
    groups = const(sch.get(sch.get_loops(stage)[-1]).extent)
    return k // groups if len(r_loops) == 1 and k and groups else 1


def loops_inside(sch: s_tir.Schedule, block, outer) -> list:
    """The loops of `block` inside the loop `outer`."""
    loops = sch.get_loops(block)
    outer_sref = sch.get_sref(outer)
    depth = next(i for i, loop in enumerate(loops) if sch.get_sref(loop).same_as(outer_sref))
    return loops[depth + 1 :]
