// The runtime's Node side (src/platform.js) in Node itself: model folders named by path or URL,
// files read from disk or fetched over HTTP, the CPU backend's thread count and the
// WebAssembly features its kernels use.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

import { relaxedSimd } from "wasm-feature-detect";

import { IN_NODE, enableWasmFeatures, fetchResource, parallelism, resolveLocation } from "../src/platform.js";

test("Node is told apart from a browser", () => {
  assert.equal(IN_NODE, true);
});

test("a folder given as a path, relative or absolute, becomes a file: URL keeping its slash", async () => {
  const relative = await resolveLocation("models/tiny/");
  assert.equal(relative.href, pathToFileURL(resolve("models/tiny")).href + "/");
  assert.equal((await resolveLocation("/srv/m")).href, "file:///srv/m");
  assert.equal(new URL("manifest.json", await resolveLocation("/srv/m/")).href, "file:///srv/m/manifest.json");
  for (const url of ["http://example.test/m/", "file:///srv/m/"]) assert.equal((await resolveLocation(url)).href, url);
});

test("file: URLs are read from disk, a missing file is a 404", async () => {
  const folder = await mkdtemp(join(tmpdir(), "kiln-platform-"));
  try {
    const bytes = Uint8Array.from({ length: 70000 }, (_, i) => (i * 7) % 256);
    await writeFile(join(folder, "shard.bin"), bytes);
    const base = await resolveLocation(folder + "/");
    const found = await fetchResource(new URL("shard.bin", base));
    assert.equal(found.status, 200);
    assert.equal(found.headers.get("Content-Length"), String(bytes.length));
    assert.deepEqual(new Uint8Array(await found.arrayBuffer()), bytes);
    const missing = await fetchResource(new URL("nothing.json", base));
    assert.equal(missing.status, 404);
    assert.equal(missing.ok, false);
  } finally {
    await rm(folder, { recursive: true });
  }
});

test("http URLs go to the server", async () => {
  const server = createServer((request, response) => {
    response.writeHead(request.url === "/manifest.json" ? 200 : 404);
    response.end(request.url === "/manifest.json" ? '{"format": 3}' : "");
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  try {
    const base = `http://127.0.0.1:${server.address().port}/`;
    assert.deepEqual(await (await fetchResource(new URL("manifest.json", base))).json(), { format: 3 });
    assert.equal((await fetchResource(new URL("other.json", base))).status, 404);
  } finally {
    server.close();
  }
});

test("the CPU backend runs a thread per core", async () => {
  assert.equal(await parallelism(), availableParallelism());
});

test("relaxed SIMD, which the CPU kernels use, is on once the runtime asked for it", async () => {
  await enableWasmFeatures();
  assert.equal(await relaxedSimd(), true);
});
