"""The names by which schedule rules find the stages of a kernel: the ops (models/kernels.py,
wasm/linear.py) give their stages these names, and the rules of each target match on them.
One enumeration, so that renaming a stage on one side cannot silently turn a rule off."""

from __future__ import annotations

import enum


class Stage(enum.StrEnum):
    # A weight format's scales (and minimums) per group of inputs, as stages of their own: the
    # software schedule decodes them once per group, in registers, not per element.
    DEQUANT_SCALE = "dequant_scale"
    DEQUANT_MINIMUM = "dequant_minimum"
    # A grouped format's linear as the software target computes it (models/kernels.py's
    # `group_sums`): per group, the sum of x * code and the sum of x.
    GROUP_DOT = "group_dot"
    GROUP_SUM = "group_sum"
    # The dequantized weights (CPU kernels only): CPU prefill decodes a tile once for all tokens.
    DEQUANT_WEIGHT = "dequant_weight"
    # CPU decode of a grouped format (wasm/linear.py's `lane_linear`)
    LANE_INPUTS = "lane_inputs"
    LANE_INPUT_SUMS = "lane_input_sums"
    LANE_PARTIAL = "lane_partial"
    LANE_SUMS = "lane_sums"
    # A one-token GPU linear that applies its input's RMSNorm itself (models/kernels.py
    # `Normed`): partial sums of the input's squares (NORM_PARTS of them, each over every
    # NORM_PARTS-th input: a workgroup's invocations compute them side by side), their sum,
    # and the input normed.
    NORM_PARTIALS = "norm_partials"
    NORM_SUM = "norm_sum"
    NORMED = "normed"
    # One that computes, before that norm, the add of a normed branch to the residual stream
    # (models/add_norm.py `AddNormed`): the branch's norm (partial sums, their sum), the sum,
    # and the sum written out as the residual stream (by the first linear that reads it).
    BRANCH_PARTIALS = "branch_partials"
    BRANCH_SUM = "branch_sum"
    SUMMED = "summed"
    RESIDUAL = "residual"


NORM_PARTS = 64
NORM_STAGES = (Stage.NORM_PARTIALS, Stage.NORM_SUM, Stage.NORMED)
ADD_STAGES = (Stage.BRANCH_PARTIALS, Stage.BRANCH_SUM, Stage.SUMMED)

# The scale stages in the order of `Format.scale_te`'s results (scale, then minimum).
SCALE_STAGES = (Stage.DEQUANT_SCALE, Stage.DEQUANT_MINIMUM)
GROUP_STAGES = (Stage.GROUP_DOT, Stage.GROUP_SUM)
# The annotation of a consumer that reads a run of consecutive outputs of its producer for
# each output of its own (a gated MLP's gating: a gate and its up, models/kernels.py): a
# schedule that computes the consumer with the producer keeps such runs in one invocation.
OUTPUT_RUN = "kiln.output_run"
# `Stage.DEQUANT_WEIGHT`'s annotation: the format's codes_per_word, for the CPU decode schedule.
CODES_PER_WORD = "codes_per_word"
# The attribute of a kernel written with vector types (wasm/integer_linear.py): its buffers
# keep their declared sizes.
VECTOR_TYPED = "kiln.vector_typed"
