// The API's method table (src/api/methods.js) against the declarations apps compile with
// (types/kiln.d.ts, its EngineInterface), against the in-page Engine that mounts it, and
// against the worker protocol that carries it: a client (src/workers/client.js) wired to a
// handler (src/workers/handler.js) in this process, the handler's engine a stand-in that
// records what reaches it.
import "./contract_stub.mjs";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { METHODS, invoke, methodKind, mount, mountMethods } from "../src/api/methods.js";
import { WorkerEngine } from "../src/workers/client.js";
import { EngineHandler } from "../src/workers/handler.js";

const { Engine } = await import("../src/engine/engine.js");

const DECLARATIONS = readFileSync(new URL("../types/kiln.d.ts", import.meta.url), "utf8");

/** The body of `export interface NAME { ... }` in kiln.d.ts, or null. */
function interfaceBody(name) {
  const match = new RegExp(`^export interface ${name} \\{\\n([\\s\\S]*?)^\\}`, "m").exec(DECLARATIONS);
  return match ? match[1] : null;
}

/**
 * The method names a type's members declare, by their path: `reload(...)` is "reload", and a
 * member whose type is an interface with methods, or an object type of such members (`chat: {
 * completions: ChatCompletions }`), gives theirs ("chat.completions.create").
 */
function methodNames(members, prefix = "") {
  const names = new Set();
  const text = members.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  for (const member of text.split(/;|\n/)) {
    const method = /^\s*(\w+)\??\s*[(<]/.exec(member);
    if (method) {
      names.add(prefix + method[1]);
      continue;
    }
    const property = /^\s*(\w+)\??\s*:\s*(.+?)\s*$/.exec(member);
    if (!property) continue; // readonly fields (loadedModels) are no methods
    const [, key, type] = property;
    const inline = /^\{(.*)\}$/.exec(type);
    const body = inline ? inline[1] : interfaceBody(type);
    if (body) for (const name of methodNames(body, `${prefix}${key}.`)) names.add(name);
  }
  return names;
}

test("the method table lists the methods kiln.d.ts's EngineInterface declares, each once", () => {
  const body = interfaceBody("EngineInterface");
  assert.ok(body, "kiln.d.ts declares no EngineInterface");
  const declared = [...methodNames(body)].sort();
  const listed = METHODS.map((m) => m.name);
  assert.equal(new Set(listed).size, listed.length, "a method is listed twice");
  assert.deepEqual([...listed].sort(), declared);
  // What the parsing above should find, so that a change in the declarations' layout fails here.
  assert.ok(declared.includes("reload") && declared.includes("chat.completions.create"), declared.join(", "));
  for (const { name, kind } of METHODS) {
    assert.ok(["load", "unload", "call", "request"].includes(kind), `${name}: ${kind}`);
    assert.equal(methodKind(name), kind);
  }
  assert.equal(methodKind("toString"), undefined);
  assert.equal(methodKind("chat"), undefined);
});

test("mount makes the namespaces a method goes through, and invoke calls through them", () => {
  const target = {};
  mount(target, "chat.completions.create", (request) => ["chat", request]);
  mount(target, "completions.create", (request) => ["text", request]);
  mount(target, "unload", () => "unloaded");
  assert.deepEqual(invoke(target, "chat.completions.create", [1]), ["chat", 1]);
  assert.deepEqual(invoke(target, "completions.create", [2]), ["text", 2]);
  assert.equal(invoke(target, "unload", []), "unloaded");
});

test("the in-page Engine and the worker client have every method of the table", () => {
  for (const engine of [
    new Engine(),
    new WorkerEngine(
      () => {},
      () => {},
    ),
  ]) {
    for (const { name } of METHODS) {
      const path = name.split(".");
      const method = path.pop();
      const target = path.reduce((object, key) => object[key], engine);
      assert.equal(typeof target[method], "function", `${engine.constructor.name}: ${name}`);
    }
  }
});

test("mountMethods refuses a method the table does not list, and an engine that lacks one it lists", () => {
  const all = Object.fromEntries(METHODS.map(({ name }) => [name, () => name]));
  const target = {};
  mountMethods(target, all);
  assert.equal(invoke(target, "embeddings.create", []), "embeddings.create");
  assert.throws(() => mountMethods({}, { ...all, "chat.create": () => 0 }), /chat\.create is not a method of the API/);
  // A class's own methods count; a method of the table neither mounted nor the class's fails.
  class Partial {
    reload() {}
  }
  const { reload, "embeddings.create": embeddings, ...rest } = all;
  assert.throws(() => mountMethods(new Partial(), rest), /^Error: Partial lacks embeddings\.create \(/);
  assert.doesNotThrow(() => mountMethods(new Partial(), { ...rest, "embeddings.create": embeddings }));
});

/**
 * A client and a handler joined by a channel in this process (messages structured-cloned, and
 * delivered a task later, as postMessage does), the handler's engine recording its calls.
 */
function connected() {
  const calls = [];
  const engine = { loadedModels: ["tiny"] };
  for (const { name } of METHODS) {
    mount(engine, name, async (...args) => {
      calls.push({ name, args });
      return name === "reload" || name === "unload" ? undefined : `${name} answered`;
    });
  }
  const handler = new EngineHandler(engine);
  let receive = null;
  const client = new WorkerEngine(
    (message) => {
      const copy = structuredClone(message);
      setTimeout(() => handler.handle(copy, (reply) => setTimeout(() => receive(structuredClone(reply)))));
    },
    (onMessage) => (receive = onMessage),
  );
  return { client, calls };
}

test("a worker client forwards every method of the table, and the handler dispatches each to its engine", async () => {
  const { client, calls } = connected();
  const ARGS = {
    load: ["https://example.com/tiny/", { useCache: false }],
    unload: [],
    call: [true, "tiny"],
    request: [{ model: "tiny", messages: [{ role: "user", content: "Hi" }] }],
  };
  for (const { name, kind } of METHODS) {
    calls.length = 0;
    const value = await invoke(client, name, ARGS[kind]);
    if (name === "interruptGenerate") {
      // The handler ends the caller's requests itself: the engine's would end every page's
      // (test/fair_queue.test.mjs).
      assert.deepEqual(calls, []);
      continue;
    }
    assert.equal(calls.length, 1, `${name}: ${JSON.stringify(calls)}`);
    assert.equal(calls[0].name, name);
    if (kind === "request") {
      // The handler gives the request a signal of its own, which the client's abort messages fire.
      const { signal, ...request } = calls[0].args[0];
      assert.deepEqual(request, ARGS.request[0]);
      assert.equal(typeof signal?.aborted, "boolean");
    } else if (kind === "load") {
      assert.equal(calls[0].args[0], ARGS.load[0]);
      assert.equal(calls[0].args[1].useCache, false);
    } else {
      assert.deepEqual(calls[0].args, ARGS[kind]);
    }
    assert.equal(value, kind === "load" || kind === "unload" ? undefined : `${name} answered`);
  }
  assert.deepEqual(client.loadedModels, ["tiny"]);
});

test("the handler refuses a method the table does not list", async () => {
  const handler = new EngineHandler({ loadedModels: [], toString: () => "engine" });
  const replies = [];
  await handler.handle({ kiln: "call", id: 1, method: "toString", args: [] }, (reply) => replies.push(reply));
  assert.equal(replies.length, 1);
  assert.equal(replies[0].kiln, "error");
  assert.match(replies[0].error.message, /Unknown engine method: toString/);
});
