"""The prefix cache (web/src/engine/prefix_cache.js, prefix_store.js, model.js) on the tiny
model in Chromium, on both backends: a request that shares a prefix with an earlier request,
not the last one, prefills only the rest (`usage.prompt_tokens_details.cached_tokens`) and gets
the reply an engine without the cache gives (exactly on the CPU backend; on WebGPU, whose
prefill chunks differ, the same tokens and log-probabilities within float32's rounding); a
budget of one snapshot keeps the newest; a prompt stored in the Origin Private File System is
used after a page reload, and a corrupt, stale or half-written stored entry is never used."""

from __future__ import annotations

import pytest

from tools.browser import PREFIX_CACHE_WRITTEN, serve_folder

# Token ids of the tiny model's vocabulary: P the shared prefix, X and Y two endings, Q a prompt
# that shares nothing with them.
P = [(7 * i + 3) % 250 + 5 for i in range(48)]
X = [11, 12, 13, 14]
Y = [21, 22, 23, 24, 25]
Q = [(5 * i + 1) % 250 + 5 for i in range(30)]
assert P[0] != Q[0]

OPEN = """async ([options]) => {
    window.kiln = await import(location.origin + "/kiln.js");
    window.engine = await kiln.CreateEngine(location.origin + "/", options);
}"""

# Greedy completions of token-id prompts with their log-probabilities, and what they reused.
ASK = """async ([prompts, options]) => {
    const engine = options
        ? await kiln.CreateEngine(location.origin + "/", options) : window.engine;
    const out = [];
    for (const prompt of prompts) {
        const r = await engine.completions.create(
            {prompt, max_tokens: 8, temperature: 0, logprobs: 2});
        const {tokens, token_logprobs} = r.choices[0].logprobs;
        out.push({tokens, logprobs: token_logprobs, text: r.choices[0].text,
                  cached: r.usage.prompt_tokens_details.cached_tokens});
    }
    if (options) await engine.unload();
    return out;
}"""

STATS = "async () => (await engine.runtimeStats()).prefix_cache"


def same_reply(got: dict, want: dict, backend: str) -> None:
    assert got["tokens"] == want["tokens"]
    if backend == "wasm":
        assert got["logprobs"] == want["logprobs"]
    else:
        # float32 sums over other chunkings of the prompt
        assert got["logprobs"] == pytest.approx(want["logprobs"], abs=1e-4)


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_a_prefix_of_an_earlier_request_is_reused(tiny_built, browser, backend):
    with serve_folder(tiny_built("q0f32")) as url:
        page = browser.new_page()
        page.goto(f"{url}/manifest.json")
        page.evaluate(OPEN, [{"backend": backend}])
        a, b, c = page.evaluate(ASK, [[P + X, Q, P + Y], None])
        # C shares P with A, two requests back: those rows come from A's snapshot.
        assert (a["cached"], b["cached"], c["cached"]) == (0, 0, len(P))
        assert page.evaluate(STATS)["entries"] >= 2
        # An engine without the cache prefills all of C (after B, which shares nothing).
        _, c_off = page.evaluate(ASK, [[Q, P + Y], {"backend": backend, "prefixCacheBytes": 0}])
        assert c_off["cached"] == 0
        same_reply(c, c_off, backend)

        # A budget of one snapshot keeps the newest: A's goes when B's is kept, and B's when
        # Q+Y's is, so P+Y finds nothing left of A.
        per_token = page.evaluate(
            "engine.manifest.kv_cache.reduce((s, t) => s + t.shape[1] * t.shape[2] * 4, 0)"
        )
        budget = per_token * 64
        page.evaluate(OPEN, [{"backend": backend, "prefixCacheBytes": budget}])
        d = page.evaluate(ASK, [[P + X, Q, Q + Y, P + Y], None])
        assert [r["cached"] for r in d[:2]] + [r["cached"] for r in d[3:]] == [0, 0, 0]
        assert d[2]["cached"] >= len(Q)  # from the KV cache as B left it
        held = page.evaluate(STATS)
        assert held["entries"] == 1 and 0 < held["bytes"] <= budget
        same_reply(d[3], c_off, backend)
        page.close()


# The stored entry files of the engine's model: [name, bytes] each.
STORED = """async () => {
    const root = await navigator.storage.getDirectory();
    const top = await root.getDirectoryHandle("kiln-prefix-cache");
    const folder = await top.getDirectoryHandle(engine.manifest.model_id);
    const out = [];
    for await (const [name, handle] of folder.entries())
        out.push([name, (await handle.getFile()).size]);
    return out.sort();
}"""

# Rewrites stored entry `name`: one bit of its KV bytes flipped ("corrupt"), or its build's
# name changed ("stale"); or ("half") copies its first half to a temporary file, as a write
# cut short leaves it.
EDIT = """async ([name, how]) => {
    const root = await navigator.storage.getDirectory();
    const folder = await (await root.getDirectoryHandle("kiln-prefix-cache"))
        .getDirectoryHandle(engine.manifest.model_id);
    const handle = await folder.getFileHandle(name);
    const bytes = new Uint8Array(await (await handle.getFile()).arrayBuffer());
    const headerEnd = 12 + new DataView(bytes.buffer).getUint32(8, true);
    const header = new TextDecoder().decode(bytes.subarray(12, headerEnd));
    if (how === "half") {
        const cut = await folder.getFileHandle(name + ".cut.tmp", {create: true});
        const writable = await cut.createWritable();
        await writable.write(bytes.subarray(0, bytes.length >> 1));
        return await writable.close();
    }
    if (how === "corrupt") bytes[bytes.length - 5] ^= 0x40; // one bit of a stored key or value
    else {
        // another build's entry, whole and checksummed: its build name differs
        const build = JSON.parse(header).build;
        const other = header.replace(build, (build[0] === "0" ? "1" : "0") + build.slice(1));
        bytes.set(new TextEncoder().encode(other), 12);
    }
    const writable = await handle.createWritable();
    await writable.write(bytes);
    await writable.close();
}"""


def written(page) -> dict:
    return page.evaluate(PREFIX_CACHE_WRITTEN)


@pytest.mark.parametrize("backend", ["wasm", "webgpu"])
def test_a_stored_prefix_is_used_after_a_reload_and_a_bad_one_never(tiny_built, browser, backend):
    options = {"backend": backend, "prefixCachePersistTokens": 32}
    with serve_folder(tiny_built("q0f32")) as url:
        page = browser.new_page()  # a context of its own: an empty storage
        page.goto(f"{url}/manifest.json")
        page.evaluate(OPEN, [options])
        # P+Y right after P+X adds fewer than 32 tokens to it, stored or still being written.
        page.evaluate(ASK, [[P + X, P + Y], None])
        assert written(page)["stored_entries"] == 1
        [[first, size]] = page.evaluate(STORED)
        assert first.endswith(".kv") and size > len(P) * 4
        [want] = page.evaluate(ASK, [[P + Y], {"backend": backend, "prefixCacheBytes": 0}])

        def after_reload() -> dict:
            page.reload()
            page.evaluate(OPEN, [options])
            [got] = page.evaluate(ASK, [[P + Y], None])
            same_reply(got, want, backend)
            return got

        # The first request after a reload takes P's rows from storage.
        assert after_reload()["cached"] == len(P)
        assert written(page)["stored_entries"] == 1  # P+Y adds fewer than 32 tokens to P+X

        page.evaluate(EDIT, [first, "corrupt"])
        assert after_reload()["cached"] == 0
        # The corrupt entry is deleted; P+Y, computed afresh, is stored in its place.
        assert written(page)["stored_entries"] == 1
        [[second, _]] = page.evaluate(STORED)
        assert second != first

        page.evaluate(EDIT, [second, "half"])
        page.evaluate(EDIT, [second, "stale"])
        page.reload()
        page.evaluate(OPEN, [options])
        # The stale entry is dropped as the engine loads; the half-written file is never read
        # (it is deleted once old enough to be no write in progress).
        assert page.evaluate(STATS)["stored_entries"] == 0
        assert [name for name, _ in page.evaluate(STORED)] == [second + ".cut.tmp"]
        [got] = page.evaluate(ASK, [[P + Y], None])
        assert got["cached"] == 0
        same_reply(got, want, backend)
        page.close()
