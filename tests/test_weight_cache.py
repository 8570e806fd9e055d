"""Weight shards are kept in the browser's Cache API store after the first download: a reload
fetches no shard, a corrupt cached shard is caught by its sha256 and fetched again, and the
cache can be cleared."""

from __future__ import annotations

import json

from tools.browser import serve_folder

LOAD = """async (base) => {
    const kiln = await import(base + "kiln.js");
    window.kiln = kiln;
    window.engine = await kiln.CreateEngine(base);
    return Object.values(engine.weightSources)[0];
}"""


def test_reload_uses_cached_shards(tiny_built, browser):
    folder = tiny_built("q4f32")
    shards = [s["file"] for s in json.loads((folder / "manifest.json").read_text())["shards"]]
    with serve_folder(folder) as url:
        context = browser.new_context()
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url.rsplit("/", 1)[-1]))
        page.goto(f"{url}/manifest.json")
        base = f"{url}/"
        first = page.evaluate(LOAD, base)
        assert first == {"cache": 0, "network": len(shards)}
        assert sorted(r for r in requested if r in shards) == sorted(shards)
        request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        reply = "async (r) => (await engine.chat.completions.create(r)).choices[0].message"
        from_network = page.evaluate(reply, {**request, "temperature": 0})

        requested.clear()
        page.reload()
        assert page.evaluate(LOAD, base) == {"cache": len(shards), "network": 0}
        assert not [r for r in requested if r in shards]
        # The weights from the cache compute what the downloaded ones did.
        assert page.evaluate(reply, {**request, "temperature": 0}) == from_network
        assert from_network["content"]

        # A cached copy with one byte flipped is detected and replaced from the network.
        page.evaluate(
            """async ([name, file]) => {
                const cache = await caches.open(name);
                const url = new URL(file, location.href).href;
                const data = new Uint8Array(await (await cache.match(url)).arrayBuffer());
                data[100] ^= 0xff;
                await cache.put(url, new Response(data));
            }""",
            ["kiln-weights-v1", shards[0]],
        )
        requested.clear()
        page.reload()
        assert page.evaluate(LOAD, base) == {"cache": len(shards) - 1, "network": 1}
        assert [r for r in requested if r in shards] == [shards[0]]
        requested.clear()
        page.reload()
        assert page.evaluate(LOAD, base) == {"cache": len(shards), "network": 0}

        # Clearing the cache of this model makes the next load download everything.
        page.evaluate(
            "async (base) => { await engine.unload(); await kiln.deleteWeightCache(base); }", base
        )
        assert page.evaluate(LOAD, base) == {"cache": 0, "network": len(shards)}
        context.close()
