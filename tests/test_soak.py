"""A shorter soak (tools/soak.py, `scripts/soak` runs the long one): 120 mixed requests on
one engine, some streamed, some aborted, leave its GPU buffers (or WebAssembly memory) as they
were and every reply as a fresh engine gives it; the JS heap stops growing once the first
requests have warmed the page up (V8's compiled code and caches), and what it holds but
compiled code stays within 5% of its size after request 10."""

from __future__ import annotations

import pytest

from tools.soak import soak_folder


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
def test_soak_leaves_no_buffers_and_no_state_behind(tiny_built, browser, backend):
    figures = soak_folder(browser, tiny_built("q4f32"), 120, backend)
    assert figures["replies_differing_from_the_first"] == 0, figures
    assert figures["replies_differing_from_a_fresh_engine"] == 0, figures
    for held in ("gpu_buffers", "wasm_memory_bytes"):
        assert len({figures[k][held] for k in ("after_10", "after_half", "after_last")}) == 1
    assert (figures["after_last"]["wasm_memory_bytes"] > 0) == (backend == "wasm"), figures
    # What the page holds (objects, strings, arrays, DOM) stays within 5% of what it held
    # after request 10; V8's compiled code grows meanwhile as it optimizes, to a ceiling: the
    # whole heap stops growing once the first requests have warmed the page up.
    held = [figures[k]["heap_object_bytes"] for k in ("after_10", "after_last")]
    assert held[1] < held[0] * 1.05, figures
    half, last = figures["after_half"]["heap_bytes"], figures["after_last"]["heap_bytes"]
    assert last < half * 1.02, figures
