"""CPU decode of a quantized linear with integer dot products.

One token's product y = W x, W stored in a grouped format whose codes are whole fields of
32-bit words (4-bit unsigned or 8-bit signed, `Format.integer_codes`; GGUF's Q5_0, Q5_1 and
Q6_K keep bits above each 4-bit code in a part of their own, `Format.integer_high_bits`, placed
so that the kernel joins them to the nibbles in bytes, `_byte_codes`; Q6_K's two scales a group
of 32 each scale the sums of one half of the group, see `_layout`), in one
kernel (`integer_linear`, TIR) whose tasks (threads) each first round x to int16 in groups of GROUP
elements, each with its float32 scale (max |x| / 32767) and its exact sum, the elements of a
group put in the order the codes come out of the words; then, per output row and group, the
codes times the int16 inputs are summed with WebAssembly's `i32x4.dot_i16x8_s` (eight products
and four pairwise adds in one instruction) and scaled once:

    y[j] = sum_g  scale[j, g] * xscale[g] * sum_(k in g) code[j, k] * xq[k]
                + minimum[j, g] * sum_(k in g) x[k]

and a bias and a residual are added where the layer has them there (the epilogue). A tile's
TILE outputs are one from each quarter of the rows (`_output`: four runs of the weights read in
address order), and it decodes the scales of a format's block of groups before their products
(`_block_scales`). A gated MLP's gate/up projection takes the gating as its epilogue instead
(`gating`): each tile then computes TILE outputs' gate rows and their up rows, and writes
act(gate) * up. The same kernel takes a few tokens at once (`tokens`, a speculative draft's
verify step, up to `max_tokens`): each task rounds every token's inputs, and each group's
codes, unpacked once, are dotted with each token's, so that the weights are read and unpacked
once for all of them (the prefill's float products decode a panel of weights for tiles of
tokens, which pays only over many tokens). Rounding in each task costs a pass over the inputs,
far less than the task's share of the weights, and saves the launch of a kernel of its own.

Against float products of decoded weights (linear.py's `lane_linear`), a group of 32 weights
costs four dot instructions instead of 32 conversions and multiply-adds. The inputs lose
precision only below 1 / 65534 of their group's largest value (llama.cpp's CPU kernels round
them to 8 bits). Written in TIR by hand, with the instruction as an LLVM intrinsic: TE
describes one scalar at a time, and the instruction adds pairs of lanes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm import tirx
from tvm.script.ir_builder import IRBuilder
from tvm.tirx.script import builder as T

from ...formats import Format
from ...formats.base import as_dtype, f16_to_f32_unflushed
from ..stages import VECTOR_TYPED

GROUP = 32  # inputs sharing one int16 scale: one ggml block
LANES = 8  # int16 lanes of a 128-bit vector
TILE = 4  # output rows a task computes together, each input vector loaded once for them
INT16_MAX = 32767
DOT = "llvm.wasm.dot"  # i32x4.dot_i16x8_s
# The attribute under which code before a parallel loop runs once per task (thread).
LAUNCH_POINT = "pragma_parallel_launch_point"

# A gated MLP's activation (models/kernels.py's ACTIVATIONS): act(gate) as a TIR expression.
Gating = Callable[[Any], Any]


def applies(fmt: Format, cols: int, rows: int, dtype: str) -> bool:
    """Whether `integer_linear` computes this product."""
    codes = fmt.integer_codes
    return (
        codes is not None
        and dtype == "float32"
        and (fmt.group % GROUP == 0 or fmt.group == GROUP // 2)
        and cols % (max(fmt.group, GROUP) * _groups_a_block(fmt)) == 0
        and rows % TILE == 0
    )


def _layout(fmt: Format):
    """A format's codes as the kernels read them: (part, width, the constant added to each
    code as a low term (scale * constant * the inputs' sum), the constant added in the lanes,
    the high bits (part, bits) or None, scales per group of GROUP inputs). A format with two
    scales a group (Q6_K's 16-element sub-blocks) has no low term of one scale: its constant
    is added to each code, and the int32 sums of each half of the group (`_group_dot`) are
    scaled by its own."""
    assert fmt.integer_codes is not None
    part, width, offset = fmt.integer_codes
    split = 1 if fmt.group % GROUP == 0 else GROUP // fmt.group
    high = fmt.integer_high_bits
    return part, width, offset if split == 1 else 0, 0 if split == 1 else offset, high, split


def _output(tile, r, outputs: int):
    """Output r of a tile: tile + r * outputs / TILE, one from each quarter of the rows. A task's
    tiles then read four long runs of the weights, each in address order, which the CPU's
    prefetchers follow; four adjacent rows read a group at a time jump back and forth in one
    region, which they do not (Node, one thread: 130 ns a row of 640 Q8_0 inputs once the
    weight outgrew the caches, against 45 ns in them; spread, 45 either way)."""
    return tile + r * (outputs // TILE)


def _groups_a_block(fmt: Format) -> int:
    """Groups of GROUP inputs in one of the format's blocks, or in a set of groups whose high
    bits share four words (`_byte_codes`), whichever is more. A tile decodes a block's scales
    for all its groups first, then their products: each group's place in the block is then a
    constant, so a K-quant's sub-block scales (packed in a few words of its super-block of
    256) come out of words read once for the block, at constant shifts."""
    high = fmt.integer_high_bits
    return max(fmt.block // GROUP, 1, 0 if high is None else 4 // high[1])


def element(width: int, position):
    """The element of a group of GROUP whose int16 value sits at `position` of the reordered
    group. 4-bit codes, eight a word: a word's low 16 bits hold elements 0-3, its high ones
    4-7, so the int16 lane 2i + h of the group's four words, shifted right by 4 s, holds
    element 8i + 4h + s (s = 0..3, one vector each). 8-bit codes, four a word: lane i of a
    vector of eight words holds elements 2i (low byte) and 2i + 1 (high byte), taken as two
    vectors of even and odd elements per 16."""
    if width == 4:
        step, lane = position // LANES, position % LANES
        return (lane // 2) * 8 + (lane % 2) * 4 + step
    half, rest = position // 16, position % 16
    return half * 16 + (rest % LANES) * 2 + rest // LANES


def _vector(buffer: tirx.Buffer, row, start, dtype: str):
    """Four words of a row of `buffer` from `start`, as a 128-bit vector of `dtype`."""
    return tirx.reinterpret(dtype, buffer[row, tirx.Ramp(start, 1, 4)])


def _byte_codes(part: tirx.Buffer, high: tirx.Buffer, bits: int, row, g, within, add: int):
    """Group g's codes of a nibble and `bits` high bits (Q5_0, Q5_1: a fifth bit; Q6_K: two)
    as int16x8 vectors in the order of 8-bit codes (`element`), unpacked as bytes, sixteen at
    a time; `add` added to each. Byte b of the group's four words of nibbles holds elements 2b
    (low) and 2b + 1 (high). The high bits of a set of 4 / bits groups share four words, byte
    b of which holds those of elements 2b and 2b + 1 of the set's group j at bits j bits and
    j bits + 4 (the formats' `high_bit_place`), so that one shift of that vector right by
    j bits puts them at bits 0 and 4 of every byte: a shift of 16-bit lanes, what crosses
    from the high byte stays above the bits taken from the low one. Fewer instructions than
    joining bits kept in element order, which takes a shuffle and a test or a shift per byte
    or per step."""

    def uint8s(value: int):
        return tirx.Broadcast(tirx.const(value % 256, "uint8"), 16)

    j = within % (4 // bits)  # g's place in its set
    nibbles = _vector(part, row, g * 4, "uint8x16")
    words = _vector(high, row, (g - j) * bits, "uint16x8")
    shifted = words >> tirx.Broadcast(tirx.Cast("uint16", j * bits), LANES)
    tops = (
        tirx.reinterpret("uint8x16", shifted << tirx.Broadcast(tirx.const(4, "uint16"), LANES)),
        tirx.reinterpret("uint8x16", shifted),
    )
    mask = uint8s(((1 << bits) - 1) << 4)
    parities = []
    for parity in range(2):  # elements 2b, then 2b + 1
        codes = nibbles & uint8s(15) if parity == 0 else nibbles >> uint8s(4)
        codes = codes | (tops[parity] & mask)
        if add:  # in two's complement: the codes less 32 fit a signed byte
            codes = tirx.reinterpret("int8x16", codes + uint8s(add))
        parities.append(codes)
    products = []
    for half in range(2):  # bytes 0-7 (elements 0-15), then 8-15 (elements 16-31)
        lanes = [tirx.const(half * LANES + i, "int32") for i in range(LANES)]
        for parity in range(2):
            codes = tirx.Cast("int16x8", tirx.Shuffle([parities[parity]], lanes))
            products.append((codes, half * 16 + parity * LANES))
    return products


def _group_codes(width: int, part: tirx.Buffer, row, g, high=None, add: int = 0, within=0):
    """Group g of a row's codes (`width` bits wide, with high bits from `high` where given:
    (buffer, bits)) as int16x8 vectors, each with the offset in the reordered group of the
    inputs it multiplies; `add` added to each code. `within`: g's place in its block."""
    words = GROUP * width // 32
    products = []
    if high is not None:
        products = _byte_codes(part, high[0], high[1], row, g, within, add)
    elif width == 4:
        halves = _vector(part, row, g * words, "uint16x8")
        for step in range(4):
            codes = halves >> tirx.Broadcast(tirx.const(4 * step, "uint16"), LANES)
            if step < 3:
                codes = codes & tirx.Broadcast(tirx.const(15, "uint16"), LANES)
            codes = tirx.reinterpret("int16x8", codes)
            if add:
                codes = codes + tirx.Broadcast(tirx.const(add, "int16"), LANES)
            products.append((codes, step * LANES))
    else:
        for half in range(2):
            pairs = _vector(part, row, g * words + half * 4, "int16x8")
            eight = tirx.Broadcast(tirx.const(8, "int16"), LANES)
            products.append(((pairs << eight) >> eight, half * 16))
            products.append((pairs >> eight, half * 16 + LANES))
    return products


def _order(fmt: Format) -> int:
    """The order the inputs are rounded in (`element`): that of 8-bit codes where the codes
    are unpacked as bytes (`_byte_codes`), else that of the codes' width."""
    assert fmt.integer_codes is not None
    return 8 if fmt.integer_high_bits else fmt.integer_codes[1]


def _group_dot(fmt: Format, parts, xq: tirx.Buffer, row, g, within, base=0):
    """int32x4 partial sums of code * xq over group g of a row, the `within`-th of its block
    (the codes as `_layout` reads the format's `parts`), the inputs from `base` of xq (a
    token's): a vector for each of the `split` runs of the group with a scale of its own
    (Q6_K's halves: the products of elements 0-15, then those of 16-31)."""
    part, width, _, add, high_bits, split = _layout(fmt)
    high = (parts[high_bits[0]], high_bits[1]) if high_bits else None
    totals: list = [None] * split
    for codes, offset in _group_codes(width, parts[part], row, g, high, add, within):
        inputs = xq[tirx.Ramp(base + g * GROUP + offset, 1, LANES)]
        dot = tirx.call_llvm_pure_intrin("int32x4", DOT, codes, inputs)
        q = offset // (GROUP // split)
        totals[q] = dot if totals[q] is None else totals[q] + dot
    return totals


def _block_scales(fmt: Format, parts, where, store_scale, store_low) -> bool:
    """The scales of a block's groups for a tile's rows, each vectorised over the tile's TILE
    outputs: `where` = (block, groups a block, tile, halves, outputs). Each scale of a group
    (two for Q6_K's halves q = 1, 0) goes to store_scale(within, q, at, g, scale) and its low
    term (its minimum, plus the scale times the constant added to each code) to
    store_low(within, at, g, term), for group g, the block's `within`-th, and tile row `at`
    (h * TILE + r). Whether there is a low term."""
    block, per, tile, halves, outputs = where
    _, _, offset, _, _, split = _layout(fmt)
    has_low = False
    for within in range(per):
        g = block * per + within
        for h in range(halves):
            with T.vectorized(0, TILE) as r:
                row = h * outputs + _output(tile, r, outputs)
                at = h * TILE + r
                # q = 0 last: its scale and minimum are those the low term takes.
                for q in range(split - 1, -1, -1):
                    scale, minimum = fmt.scale_te(
                        parts, row, (g * GROUP + q * fmt.group) // fmt.group, f16_to_f32_unflushed
                    )
                    scale = as_dtype(scale, "float32")
                    store_scale(within, q, at, g, scale)
                terms = [] if minimum is None else [as_dtype(minimum, "float32")]
                if offset:
                    terms.append(scale * tirx.const(offset, "float32"))
                if terms:
                    has_low = True
                    store_low(within, at, g, sum(terms[1:], terms[0]))
    return has_low


def _quantize_input(
    x: tirx.Buffer, width: int, xq, xscale, xsum, token=0, norm: tuple | None = None
) -> None:
    """x's `token` as int16 in xq (reordered per group, see `element`), each group's scale and
    exact sum in xscale and xsum, from the token's place in each (token * their length). With
    `norm` (an RMSNorm's weight buffer and epsilon), of x under that norm: x * rsqrt(mean(x^2)
    + eps) * weight, as TVM's rms_norm computes it, its sum of squares a pass of its own."""
    zero, top = tirx.const(0, "float32"), tirx.const(INT16_MAX, "float32")
    cols = int(x.shape[2])
    groups = cols // GROUP
    at, gat = token * cols, token * groups
    largest = T.alloc_buffer((1,), "float32", scope="global")
    if norm is None:

        def value_at(k):
            return x[0, token, k]

    else:
        weight, eps = norm
        factor = T.alloc_buffer((1,), "float32", scope="global")
        T.buffer_store(factor, zero, [0])
        with T.serial(0, cols) as k:
            T.buffer_store(factor, factor[0] + x[0, token, k] * x[0, token, k], [0])
        mean = factor[0] / tirx.const(cols, "float32")
        T.buffer_store(factor, tirx.rsqrt(mean + tirx.const(eps, "float32")), [0])

        def value_at(k):
            return x[0, token, k] * factor[0] * weight[k]

    with T.serial(0, groups) as g:
        T.buffer_store(largest, zero, [0])
        T.buffer_store(xsum, zero, [gat + g])
        with T.serial(0, GROUP) as k:
            value = value_at(g * GROUP + k)
            T.buffer_store(largest, tirx.max(largest[0], tirx.abs(value)), [0])
            T.buffer_store(xsum, xsum[gat + g] + value, [gat + g])
        T.buffer_store(xscale, largest[0] / top, [gat + g])
        inverse = tirx.Select(largest[0] > zero, top / largest[0], zero)
        for p in range(GROUP):
            value = value_at(g * GROUP + element(width, p))
            T.buffer_store(
                xq, tirx.Cast("int16", tirx.round(value * inverse)), [at + g * GROUP + p]
            )


def _norm_arg(cols: int, eps: float | None) -> tuple | None:
    """The argument of an RMSNorm's weight, and its epsilon, where the kernel applies one."""
    if eps is None:
        return None
    return T.arg("norm", T.Buffer((cols,), "float32")), eps


def input_rounding_func(cols: int, width: int) -> tirx.PrimFunc:
    """The inputs' rounding alone, as a kernel (x -> xq, xscale, xsum), for its tests."""
    groups = cols // GROUP
    with IRBuilder() as builder:
        with T.prim_func(private=True):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            x = T.arg("x", T.Buffer((1, 1, cols), "float32"))
            xq = T.arg("xq", T.Buffer((cols,), "int16"))
            xscale = T.arg("xscale", T.Buffer((groups,), "float32"))
            xsum = T.arg("xsum", T.Buffer((groups,), "float32"))
            _quantize_input(x, width, xq, xscale, xsum)
    return builder.get()


def integer_linear_func(
    fmt: Format,
    rows: int,
    cols: int,
    residual: bool,
    bias: bool = False,
    gating: Gating | None = None,
    norm_eps: float | None = None,
) -> tirx.PrimFunc:
    """out (1, 1, rows) = (residual +) (W x (+ bias)): each task (a thread) first rounds x to int16
    (once, into buffers of its own), then takes its share of the tiles of TILE rows; W's parts
    as `fmt.parts` gives them. With `gating`, W holds a gated MLP's gate rows then its up rows
    and out (1, 1, rows / 2) = gating(gate) * up, each tile computing TILE outputs' gate and up
    rows (no bias or residual then). With `norm_eps`, the product is of x under an RMSNorm
    (weight `norm`, the argument after x), applied as x is rounded."""
    assert fmt.integer_codes is not None
    assert gating is None or not (residual or bias)
    *_, split = _layout(fmt)
    order = _order(fmt)
    groups = cols // GROUP
    per = _groups_a_block(fmt)
    shapes = fmt.parts(rows, cols)
    halves = 1 if gating is None else 2  # the blocks of rows an output reads
    outputs = rows // halves
    with IRBuilder() as builder:
        with T.prim_func(private=True):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, VECTOR_TYPED: True})
            x = T.arg("x", T.Buffer((1, 1, cols), "float32"))
            norm = _norm_arg(cols, norm_eps)
            parts = {
                name: T.arg(name, T.Buffer(shape, dtype)) for name, (shape, dtype) in shapes.items()
            }
            offsets = T.arg("bias", T.Buffer((rows,), "float32")) if bias else None
            added = T.arg("residual", T.Buffer((1, 1, rows), "float32")) if residual else None
            out = T.arg("out", T.Buffer((1, 1, outputs), "float32"))
            zero = tirx.const(0, "float32")
            # The code before the parallel loop runs once in each task (TVM's CPU code
            # generator), so each thread rounds the inputs once, not once per tile.
            with T.attr(0, LAUNCH_POINT, 1):
                xq = T.alloc_buffer((cols,), "int16", scope="global")
                xscale = T.alloc_buffer((groups,), "float32", scope="global")
                xsum = T.alloc_buffer((groups,), "float32", scope="global")
                _quantize_input(x, order, xq, xscale, xsum, norm=norm)
                with T.parallel(0, outputs // TILE) as tile:
                    # Tile row t = h * TILE + r: row h * outputs + _output(tile, r, outputs) of W.
                    tiled = halves * TILE
                    sums = T.alloc_buffer((tiled * 4,), "float32", scope="global")
                    low = T.alloc_buffer((tiled,), "float32", scope="global")
                    factor = T.alloc_buffer((per * split * tiled,), "float32", scope="global")
                    for t in range(tiled):
                        T.buffer_store(sums, tirx.Broadcast(zero, 4), [tirx.Ramp(t * 4, 1, 4)])
                    T.buffer_store(low, tirx.Broadcast(zero, tiled), [tirx.Ramp(0, 1, tiled)])
                    with T.serial(0, groups // per) as block:
                        # The block's groups' scales for the tile, then their products.
                        _block_scales(
                            fmt,
                            parts,
                            (block, per, tile, halves, outputs),
                            lambda within, q, at, g, scale: T.buffer_store(
                                factor, scale * xscale[g], [(within * split + q) * tiled + at]
                            ),
                            lambda within, at, g, term: T.buffer_store(
                                low, low[at] + term * xsum[g], [at]
                            ),
                        )
                        with T.serial(0, per) as within:
                            g = block * per + within
                            for t in range(tiled):
                                row = t // TILE * outputs + _output(tile, t % TILE, outputs)
                                totals = _group_dot(fmt, parts, xq, row, g, within)
                                lanes = tirx.Ramp(t * 4, 1, 4)
                                scaled = sums[lanes]
                                for q, total in enumerate(totals):
                                    factors = tirx.Broadcast(
                                        factor[(within * split + q) * tiled + t], 4
                                    )
                                    scaled = scaled + tirx.Cast("float32x4", total) * factors
                                T.buffer_store(sums, scaled, [lanes])

                    for t in range(tiled):  # each row's sum into `low`
                        value = low[t]
                        for lane in range(4):
                            value = value + sums[t * 4 + lane]
                        T.buffer_store(low, value, [t])
                    for r in range(TILE):
                        value = low[r] if gating is None else gating(low[r]) * low[TILE + r]
                        if offsets is not None:
                            value = value + offsets[_output(tile, r, outputs)]
                        if added is not None:
                            value = added[0, 0, _output(tile, r, outputs)] + value
                        T.buffer_store(out, value, [0, 0, _output(tile, r, outputs)])
    return builder.get()


def integer_linear_tokens_func(
    fmt: Format,
    rows: int,
    cols: int,
    residual: bool,
    bias: bool,
    max_tokens: int,
    gating: Gating | None = None,
    norm_eps: float | None = None,
) -> tirx.PrimFunc:
    """out (1, v, rows) = (residual +) (W x (+ bias)) for v tokens, v (symbolic) at most
    `max_tokens`: each task rounds every token's inputs, then takes its share of the tiles of
    TILE rows, the codes of each group and row read once and dotted with each token's inputs.
    With `gating` and `norm_eps`, as `integer_linear_func`'s: out (1, v, rows / 2) =
    gating(gate) * up; each token normed."""
    assert fmt.integer_codes is not None
    assert gating is None or not (residual or bias)
    *_, split = _layout(fmt)
    order = _order(fmt)
    groups = cols // GROUP
    per = _groups_a_block(fmt)
    shapes = fmt.parts(rows, cols)
    halves = 1 if gating is None else 2
    outputs = rows // halves
    tiled = halves * TILE
    tokens = tirx.Var("v", "int64")
    with IRBuilder() as builder:
        with T.prim_func(private=True):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, VECTOR_TYPED: True})
            x = T.arg("x", T.Buffer((1, tokens, cols), "float32"))
            norm = _norm_arg(cols, norm_eps)
            parts = {
                name: T.arg(name, T.Buffer(shape, dtype)) for name, (shape, dtype) in shapes.items()
            }
            offsets = T.arg("bias", T.Buffer((rows,), "float32")) if bias else None
            added = T.arg("residual", T.Buffer((1, tokens, rows), "float32")) if residual else None
            out = T.arg("out", T.Buffer((1, tokens, outputs), "float32"))
            zero = tirx.const(0, "float32")
            with T.attr(0, LAUNCH_POINT, 1):
                xq = T.alloc_buffer((max_tokens * cols,), "int16", scope="global")
                xscale = T.alloc_buffer((max_tokens * groups,), "float32", scope="global")
                xsum = T.alloc_buffer((max_tokens * groups,), "float32", scope="global")
                with T.serial(0, tokens) as token:
                    _quantize_input(x, order, xq, xscale, xsum, token, norm)
                with T.parallel(0, outputs // TILE) as tile:
                    # Tile row t = h * TILE + r: row h * outputs + _output(tile, r, outputs) of W.
                    sums = T.alloc_buffer((max_tokens * tiled * 4,), "float32", scope="global")
                    low = T.alloc_buffer((max_tokens * tiled,), "float32", scope="global")
                    scales = T.alloc_buffer((per * split * tiled,), "float32", scope="global")
                    minimums = T.alloc_buffer((per * tiled,), "float32", scope="global")
                    with T.serial(0, tokens) as token:
                        for t in range(tiled):
                            lanes = tirx.Ramp(token * (tiled * 4) + t * 4, 1, 4)
                            T.buffer_store(sums, tirx.Broadcast(zero, 4), [lanes])
                            T.buffer_store(low, zero, [token * tiled + t])
                    with T.serial(0, groups // per) as block:
                        # The block's groups' scales for the tile, then their products.
                        has_low = _block_scales(
                            fmt,
                            parts,
                            (block, per, tile, halves, outputs),
                            lambda within, q, at, g, scale: T.buffer_store(
                                scales, scale, [(within * split + q) * tiled + at]
                            ),
                            lambda within, at, g, term: T.buffer_store(
                                minimums, term, [within * tiled + at]
                            ),
                        )
                        with T.serial(0, per) as within, T.serial(0, tokens) as token:
                            g = block * per + within
                            for t in range(tiled):
                                row = t // TILE * outputs + _output(tile, t % TILE, outputs)
                                totals = _group_dot(fmt, parts, xq, row, g, within, token * cols)
                                lanes = tirx.Ramp(token * (tiled * 4) + t * 4, 1, 4)
                                inputs = xscale[token * groups + g]
                                scaled = sums[lanes]
                                for q, total in enumerate(totals):
                                    factors = tirx.Broadcast(
                                        scales[(within * split + q) * tiled + t] * inputs, 4
                                    )
                                    scaled = scaled + tirx.Cast("float32x4", total) * factors
                                T.buffer_store(sums, scaled, [lanes])
                                if has_low:
                                    at = token * tiled + t
                                    term = minimums[within * tiled + t] * xsum[token * groups + g]
                                    T.buffer_store(low, low[at] + term, [at])
                    with T.serial(0, tokens) as token:
                        for t in range(tiled):  # each row's sum into `low`
                            at = token * tiled + t
                            value = low[at]
                            for lane in range(4):
                                value = value + sums[token * (tiled * 4) + t * 4 + lane]
                            T.buffer_store(low, value, [at])
                        for r in range(TILE):
                            at = token * tiled + r
                            value = low[at] if gating is None else gating(low[at]) * low[at + TILE]
                            if offsets is not None:
                                value = value + offsets[_output(tile, r, outputs)]
                            if added is not None:
                                value = added[0, token, _output(tile, r, outputs)] + value
                            T.buffer_store(out, value, [0, token, _output(tile, r, outputs)])
    return builder.get()
