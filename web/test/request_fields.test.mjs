// The request fields as src/api/request_fields.js describes them, against the request types
// apps compile with (types/kiln.d.ts: ChatCompletionRequest, CompletionRequest and the
// SamplingFields they share) and against the checks made from them (src/api/request.js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { checkChatRequest, checkCompletionRequest } from "../src/api/request.js";
import { REQUEST_FIELDS } from "../src/api/request_fields.js";
import { InvalidRequestError } from "../src/errors.js";

const DECLARATIONS = readFileSync(new URL("../types/kiln.d.ts", import.meta.url), "utf8");
const KINDS = { chat: "ChatCompletionRequest", text: "CompletionRequest" };

/** `[extends, body]` of the interface `name` in kiln.d.ts, or null. */
function declared(name) {
  const match = new RegExp(`^(?:export )?interface ${name} (?:extends (\\w+) )?\\{\\n([\\s\\S]*?)^\\}`, "m").exec(
    DECLARATIONS,
  );
  return match && [match[1], match[2]];
}

/** What `type X = ...;` names in kiln.d.ts, "{}" for an interface, or the type as written. */
function resolve(type) {
  const alias = new RegExp(`^export type ${type} =([\\s\\S]*?);$`, "m").exec(DECLARATIONS);
  if (alias) return alias[1];
  return declared(type) ? "{}" : type;
}

/** The fields an interface declares (those it extends included): name -> {type, doc}. */
function members(name) {
  const [base, body] = declared(name) ?? assert.fail(`kiln.d.ts declares no ${name}`);
  const fields = new Map(base ? members(base) : []);
  let doc = "";
  for (const line of body
    .replace(/\/\*\*([\s\S]*?)\*\//g, (_, text) => `/**${text.replace(/\s+/g, " ")}*/`)
    .split("\n")) {
    const comment = /^\s*\/\*\*(.*)\*\/$/.exec(line);
    const field = /^\s*(\w+)\??: (.+);$/.exec(line);
    if (comment) doc = comment[1].trim();
    if (field) fields.set(field[1], { type: field[2], doc });
    if (!comment) doc = "";
  }
  return fields;
}

/** Whether a declared type (aliases resolved) admits the table's type `type`. */
function admits(declaredType, type) {
  const text = declaredType
    .split("|")
    .map((part) => resolve(part.trim()))
    .join(" | ");
  const has = {
    number: /\bnumber\b/,
    integer: /\bnumber\b/,
    boolean: /\bboolean\b/,
    string: /\bstring\b|"/,
    array: /\[/,
    object: /\{|Record</,
    function: /=>/,
    AbortSignal: /\bAbortSignal\b/,
  }[type];
  return Boolean(has?.test(text));
}

for (const [kind, name] of Object.entries(KINDS)) {
  test(`${name} in kiln.d.ts declares the fields the table gives ${kind} requests, of their types and ranges`, () => {
    const fields = members(name);
    const listed = REQUEST_FIELDS.filter((f) => f.kinds.includes(kind));
    assert.deepEqual(listed.map((f) => f.name).sort(), [...fields.keys()].sort());
    for (const { name: field, type, minimum, maximum, exclusiveMinimum, enum: values, ignored } of listed) {
      const { type: text, doc } = fields.get(field);
      for (const one of [type].flat()) assert.ok(admits(text, one), `${field}: ${text} is no ${one}`);
      if (values)
        assert.deepEqual(
          text
            .replace(/\s*\|\s*null$/, "")
            .split(" | ")
            .sort(),
          values.map((v) => `"${v}"`).sort(),
        );
      const range =
        exclusiveMinimum !== undefined
          ? `greater than ${exclusiveMinimum}`
          : minimum !== undefined && maximum !== undefined
            ? `${minimum} to ${maximum}`
            : minimum !== undefined
              ? `${minimum} or more`
              : null;
      if (range) assert.ok(doc.includes(range), `${field}: its comment "${doc}" does not say ${range}`);
      if (ignored) assert.match(doc, /without effect/, field);
    }
    // What the parsing above should find, so that a change in the declarations' layout fails here.
    assert.ok(fields.has("temperature") && fields.has(kind === "chat" ? "messages" : "prompt"));
  });
}

test("fields not supported are declared by no request type, and each field is listed once for a request", () => {
  const unsupported = REQUEST_FIELDS.filter((f) => f.kinds.length === 0).map((f) => f.name);
  assert.ok(unsupported.includes("functions"));
  for (const name of Object.values(KINDS)) for (const field of unsupported) assert.ok(!members(name).has(field), field);
  for (const kind of Object.keys(KINDS)) {
    const names = REQUEST_FIELDS.filter((f) => f.kinds.includes(kind)).map((f) => f.name);
    assert.equal(new Set(names).size, names.length, `${kind}: ${names.join(", ")}`);
  }
});

test("every field a request takes is checked: a Symbol in it is refused, naming the field", () => {
  const base = { chat: { messages: [{ role: "user", content: "hi" }] }, text: { prompt: "hi" } };
  const check = { chat: checkChatRequest, text: checkCompletionRequest };
  for (const { name, kinds, ignored } of REQUEST_FIELDS) {
    // ignore_eos is read as true or false, whatever it holds.
    if (ignored || name === "ignore_eos") continue;
    for (const kind of kinds) {
      assert.throws(
        () => check[kind]({ ...base[kind], [name]: Symbol("odd") }, 100),
        (err) => err instanceof InvalidRequestError && err.param.startsWith(name),
        `${kind}: ${name}`,
      );
    }
  }
});

test("fields at and past the edges of their ranges are accepted and refused as the table says", () => {
  // The numeric fields with checks of their own (a rule beyond their range) aside.
  const own = new Set(["seed", "best_of", "max_completion_tokens", "top_logprobs"]);
  const request = { messages: [{ role: "user", content: "hi" }] };
  for (const { name, kinds, type, minimum, maximum, exclusiveMinimum } of REQUEST_FIELDS) {
    if (!kinds.includes("chat") || !["number", "integer"].includes(type) || own.has(name)) continue;
    const step = type === "integer" ? 1 : 0.001;
    const valid = [minimum, maximum, exclusiveMinimum + step].filter((v) => Number.isFinite(v));
    const invalid = [minimum - step, maximum + step, exclusiveMinimum].filter((v) => Number.isFinite(v));
    if (type === "integer") invalid.push(valid[0] + 0.5);
    for (const value of valid) checkChatRequest({ ...request, [name]: value }, 100);
    for (const value of invalid)
      assert.throws(() => checkChatRequest({ ...request, [name]: value }, 100), { param: name }, `${name}: ${value}`);
  }
});
