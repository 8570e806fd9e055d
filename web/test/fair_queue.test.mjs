// The turns of a shared engine (src/workers/fair_queue.js), the handler that gives them to its
// clients (src/workers/handler.js) and where a shared engine runs (src/workers/shared.js).
import "./contract_stub.mjs";
import assert from "node:assert/strict";
import { test } from "node:test";

import { mount, METHODS } from "../src/api/methods.js";
import { FairQueue } from "../src/workers/fair_queue.js";
import { EngineHandler } from "../src/workers/handler.js";

const { chooseHost } = await import("../src/workers/shared.js");

test("clients take turns in rotation, each client's tasks in the order it gave them", async () => {
  const queue = new FairQueue();
  const ran = [];
  let release;
  const held = new Promise((resolve) => (release = resolve));
  const task = (name, wait) => async () => {
    ran.push(name);
    await wait;
    return name;
  };
  const all = [
    queue.run("a", task("a1", held)),
    queue.run("a", task("a2")),
    queue.run("a", task("a3")),
    queue.run("b", task("b1")),
    queue.run("c", task("c1")),
    queue.run("c", task("c2")),
  ];
  await Promise.resolve();
  assert.deepEqual(ran, ["a1"]);
  assert.equal(queue.waiting, 5);
  // Given while a1 runs: a goes behind b and c, who waited.
  all.push(queue.run("a", task("a4")));
  release();
  assert.deepEqual(await Promise.all(all), ["a1", "a2", "a3", "b1", "c1", "c2", "a4"]);
  assert.deepEqual(ran, ["a1", "b1", "c1", "a2", "c2", "a3", "a4"]);
});

test("a dropped client's waiting tasks are rejected and never run; a failing task passes the turn", async () => {
  const queue = new FairQueue();
  const ran = [];
  let release;
  const held = new Promise((resolve) => (release = resolve));
  const first = queue.run("a", async () => {
    ran.push("a1");
    await held;
    throw new Error("a1 failed");
  });
  const dropped = [queue.run("a", () => ran.push("a2")), queue.run("b", () => ran.push("b1"))];
  const kept = queue.run("c", () => ran.push("c1"));
  queue.drop("a", new Error("a is gone"));
  queue.drop("b", new Error("b is gone"));
  release();
  await assert.rejects(first, /a1 failed/);
  await assert.rejects(dropped[0], /a is gone/);
  await assert.rejects(dropped[1], /b is gone/);
  await kept;
  assert.deepEqual(ran, ["a1", "c1"]);
  assert.equal(queue.waiting, 0);
});

/** A handler over a stand-in engine whose requests run until their signal fires. */
function handlerWithEngine() {
  const started = [];
  const engine = { loadedModels: ["tiny"], interrupted: 0 };
  for (const { name } of METHODS) mount(engine, name, async () => `${name} answered`);
  engine.interruptGenerate = () => engine.interrupted++;
  engine.chat.completions.create = ({ signal, messages }) => {
    started.push(messages);
    return new Promise((resolve) => {
      if (signal.aborted) resolve(`${messages} aborted`);
      signal.addEventListener("abort", () => resolve(`${messages} aborted`));
    });
  };
  const handler = new EngineHandler(engine);
  const replies = [];
  const send = (client, message) => handler.handle(message, (reply) => replies.push({ client, ...reply }), client);
  const call = (client, id, method, args = []) => send(client, { kiln: "call", id, method, args });
  return { engine, started, replies, send, call };
}

test("one client's interruptGenerate ends its own requests, running or waiting, not another's", async () => {
  const { engine, started, replies, send, call } = handlerWithEngine();
  const ask = (client, id, messages) => call(client, id, "chat.completions.create", [{ messages }]);
  ask("a", 1, "a1");
  ask("b", 1, "b1");
  ask("a", 2, "a2");
  await new Promise((resolve) => setTimeout(resolve));
  assert.deepEqual(started, ["a1"]); // one at a time
  await call("a", 3, "interruptGenerate");
  await new Promise((resolve) => setTimeout(resolve));
  assert.equal(engine.interrupted, 0);
  // a1 ended; b1 runs, a2 (aborted while it waited) waits behind it.
  assert.deepEqual(started, ["a1", "b1"]);
  assert.deepEqual(
    replies.filter((r) => r.kiln === "return").map((r) => [r.client, r.id, r.value]),
    [
      ["a", 3, undefined],
      ["a", 1, "a1 aborted"],
    ],
  );
  send("b", { kiln: "abort", id: 1 });
  await new Promise((resolve) => setTimeout(resolve));
  assert.deepEqual(started, ["a1", "b1", "a2"]);
  const values = replies.filter((r) => r.kiln === "return").map((r) => r.value);
  assert.deepEqual(values.slice(2), ["b1 aborted", "a2 aborted"]);
});

test("the shared worker holds the engine unless it lacks what the page has and the backend uses", () => {
  const page = { gpu: true, threads: true };
  const chromium = { gpu: true, threads: false }; // what Chromium's shared workers offer
  assert.equal(chooseHost(page, chromium, "webgpu"), "shared-worker");
  assert.equal(chooseHost(page, chromium, "wasm"), "tab");
  // A page that is not cross-origin isolated has no threads to lose.
  assert.equal(chooseHost({ gpu: true, threads: false }, chromium, "wasm"), "shared-worker");
  assert.equal(chooseHost(page, { gpu: false, threads: true }, "webgpu"), "tab");
  assert.equal(chooseHost({ gpu: false, threads: true }, { gpu: false, threads: true }, "webgpu"), "shared-worker");
  assert.equal(chooseHost(page, null, "webgpu"), "tab"); // no SharedWorker
});
