"""checkModel: will a model run here, answered from its manifest before any weight is fetched.
Its numbers are held to what manifest.json implies, computed here independently; a model over
the device's limits is refused, by checkModel and by CreateEngine, before any shard request."""

from __future__ import annotations

import json

from aiohttp import web
from test_node import run_node

from tools.browser import serve_folder

# SwiftShader's limits (DESIGN.md): maxBufferSize and maxStorageBufferBindingSize.
GPU_LIMIT = 1 << 30
WASM_MEMORY = 65536 * 65536
# A KV-cache row of the tiny model: 2 KV heads x 16 dims x 4 bytes, in each of 4 tensors.
HUGE_CONTEXT = 1 << 24  # 2 GiB a KV-cache tensor


def expected(manifest: dict, variant: str, context: int | None = None) -> dict:
    """What a build needs at `context` tokens, from its manifest alone."""
    context = context or manifest["context_window"]
    kv = []
    for tensor in manifest["kv_cache"]:
        count = context
        for d in tensor["shape"][1:]:
            count *= d
        kv.append(count * {"float32": 4, "float16": 2}[tensor["dtype"]])
    plans = manifest["variants"][variant]["functions"].values()
    storages = [b for plan in plans for b in plan["storages"]]
    weights = sum(p["bytes"] for p in manifest["params"])
    return {
        "memory": {
            "weights": weights,
            "kv_cache": sum(kv),
            "activations": sum(storages),
            "total": weights + sum(kv) + sum(storages),
        },
        "largest": max(kv + storages + [p["bytes"] for p in manifest["params"]]),
        "shards": sum(s["bytes"] for s in manifest["shards"]),
    }


def inflated(manifest: dict) -> dict:
    """The same model built, as it were, for HUGE_CONTEXT tokens: KV tensors of 2 GiB."""
    huge = json.loads(json.dumps(manifest))
    huge["context_window"] = HUGE_CONTEXT
    for tensor in huge["kv_cache"]:
        tensor["shape"][0] = HUGE_CONTEXT
    return huge


CHECK = """async ([base, options]) => {
    const kiln = await import(base + "kiln.js");
    return await kiln.checkModel(base, options);
}"""

LOAD = """async ([base, options]) => {
    const kiln = await import(base + "kiln.js");
    try {
        const engine = await kiln.CreateEngine(base, options);
        await engine.unload();
        return {ok: true};
    } catch (err) {
        return {ok: false, name: err.name, code: err.code, message: err.message,
                loadError: err instanceof kiln.ModelLoadError, check: err.check};
    }
}"""


def test_check_answers_from_the_manifest_before_any_shard(tiny_built, page):
    folder = tiny_built("q4f32")
    manifest = json.loads((folder / "manifest.json").read_text())
    shards = {f"/{s['file']}" for s in manifest["shards"]}
    requests: list[str] = []
    with serve_folder(folder, requests=requests) as url:
        page.goto(f"{url}/manifest.json")
        base = f"{url}/"
        gpu = page.evaluate(CHECK, [base, {"backend": "webgpu"}])
        cpu = page.evaluate(CHECK, [base, {"backend": "wasm"}])
        small = page.evaluate(CHECK, [base, {"backend": "wasm", "contextWindow": 32}])
        assert not shards & set(requests), requests
        assert page.evaluate(LOAD, [base, {"backend": "wasm"}])["ok"]
        after = page.evaluate(CHECK, [base, {"backend": "wasm"}])

    want = expected(manifest, "software")  # SwiftShader is a fallback adapter
    assert (gpu["ok"], gpu["backend"], gpu["variant"], gpu["reasons"]) == (
        True,
        "webgpu",
        "software",
        [],
    )
    assert gpu["memory"] == want["memory"]
    assert gpu["limits"]["largest_buffer"] == want["largest"]
    assert gpu["limits"]["max_storage_buffer_binding_size"] == GPU_LIMIT
    assert (gpu["download_bytes"], gpu["cached_bytes"], gpu["kernel_bytes"]) == (
        want["shards"],
        0,
        None,
    )
    assert gpu["context_window"] == gpu["fitting_context_window"] == manifest["context_window"]
    storage = gpu["storage"]
    assert storage["quota"] > 0 and storage["fits"] is True

    module = manifest["variants"]["wasm"]["wasm"]["bytes"]
    assert (cpu["ok"], cpu["backend"], cpu["variant"]) == (True, "wasm", "wasm")
    assert cpu["memory"] == expected(manifest, "wasm")["memory"]
    assert cpu["limits"]["wasm_memory_bytes"] == WASM_MEMORY
    assert (cpu["download_bytes"], cpu["kernel_bytes"]) == (want["shards"], module)

    # The KV cache shrinks with the context; the runtime runs the build's, so that is a rebuild.
    assert small["memory"] == expected(manifest, "wasm", 32)["memory"]
    assert not small["ok"] and "--context-window 32" in small["reasons"][0]

    assert (after["cached_bytes"], after["download_bytes"]) == (want["shards"], 0)


def test_model_over_the_limits_is_refused_before_any_shard(tiny_built, page):
    folder = tiny_built("q4f32")
    manifest = json.loads((folder / "manifest.json").read_text())
    huge = inflated(manifest)

    async def serve_huge(request: web.Request, handler) -> web.StreamResponse:
        if request.path.endswith("/manifest.json"):
            return web.json_response(huge)
        return await handler(request)

    requests: list[str] = []
    with serve_folder(folder, requests=requests, middlewares=(serve_huge,)) as url:
        page.goto(f"{url}/manifest.json")
        base = f"{url}/"
        gpu = page.evaluate(CHECK, [base, {"backend": "webgpu"}])
        cpu = page.evaluate(CHECK, [base, {"backend": "wasm"}])
        failed = page.evaluate(LOAD, [base, {"backend": "webgpu"}])
    # Nothing but the runtime and the manifest: no kernels, no tokenizer, no shard.
    model_files = {r for r in requests if (folder / r[1:]).is_file() and not r.startswith("/kiln")}
    assert model_files == {"/manifest.json"}

    want = expected(huge, "software")
    assert not gpu["ok"] and gpu["memory"] == want["memory"]
    assert gpu["limits"]["largest_buffer"] == want["largest"] == 2 * GPU_LIMIT
    assert "GPU buffer of 2147483648 bytes" in gpu["reasons"][0]
    row = want["largest"] // HUGE_CONTEXT
    assert gpu["fitting_context_window"] == GPU_LIMIT // row
    assert f"--context-window {GPU_LIMIT // row}" in gpu["reasons"][1]

    cpu_want = expected(huge, "wasm")["memory"]
    assert not cpu["ok"] and cpu["memory"] == cpu_want
    per_token = cpu_want["kv_cache"] // HUGE_CONTEXT
    room = WASM_MEMORY - cpu_want["weights"] - cpu_want["activations"]
    assert cpu["fitting_context_window"] == room // per_token

    assert (failed["name"], failed["code"], failed["loadError"]) == (
        "ModelWontFitError",
        "model_wont_fit",
        True,
    )
    assert "GPU buffer of 2147483648 bytes" in failed["message"]
    assert failed["check"]["fitting_context_window"] == gpu["fitting_context_window"]


def test_check_and_refusal_in_node(tiny_built, tmp_path):
    folder = tiny_built("q4f32")
    manifest = json.loads((folder / "manifest.json").read_text())
    huge_folder = tmp_path / "huge"
    huge_folder.mkdir()
    (huge_folder / "manifest.json").write_text(json.dumps(inflated(manifest)))
    result = run_node(
        """async (kiln, url, {huge}) => {
            const check = await kiln.checkModel(url);
            let error = null;
            try { await kiln.CreateEngine(huge); }
            catch (e) { error = {name: e.name, reasons: e.check.reasons}; }
            return {check, error};
        }""",
        str(folder),
        {"huge": str(huge_folder)},
    )
    check = result["check"]
    assert (check["ok"], check["backend"], check["cached_bytes"]) == (True, "wasm", 0)
    assert check["memory"] == expected(manifest, "wasm")["memory"]
    assert check["storage"] == {"quota": None, "usage": None, "fits": None}
    # The huge folder holds a manifest alone: a load that went on would fail on the tokenizer.
    assert result["error"]["name"] == "ModelWontFitError"
    assert "WebAssembly memory" in result["error"]["reasons"][0]
