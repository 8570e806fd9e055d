// Request fuzzing, run in a page against an engine (in the page or behind a worker), or in
// Node.js against an engine there: a module whose
// `fuzzRequests(engine, {seed, count, timeoutMs})` sends `count` generated requests (seeded, so
// a failure replays) and sorts each outcome. A request passes when it is answered (a stream
// read to its end) or fails with one of the runtime's named errors, an InvalidRequestError
// naming its `param`; it fails on any other error, on a hang past `timeoutMs`, and on an
// unhandled rejection or error event while the requests run. The fields it sends, and the
// edges of their ranges, are those the runtime describes (web/src/api/request_fields.js).
import { REQUEST_FIELDS } from "../web/src/api/request_fields.js";

// A small seeded generator (mulberry32), so that request i is the same on every run.
const generator = (seed) => () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const deep = (depth, leaf) => {
  let value = leaf;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
};
const deepObject = (depth) => {
  let value = { type: "string" };
  for (let i = 0; i < depth; i++)
    value = { type: "object", properties: { a: value } };
  return value;
};
const nullProto = () =>
  Object.assign(Object.create(null), { role: "user", content: "hi" });
const cyclic = () => {
  const value = { role: "user", content: "hi" };
  value.self = value;
  return value;
};

// Values of every kind a caller might pass by mistake.
const ODD_VALUES = [
  () => null,
  () => undefined,
  () => true,
  () => 0,
  () => -1,
  () => 1.5,
  () => 2 ** 53,
  () => -(2 ** 31),
  () => NaN,
  () => Infinity,
  () => -Infinity,
  () => "",
  () => "x",
  () => "\uD800", // a lone surrogate: invalid UTF-16
  () => "a\uDC00b",
  () => "\u0000",
  () => "😀".repeat(1000),
  () => "word ".repeat(20000),
  () => "y".repeat(1 << 20),
  () => [],
  () => [1, 2, 3],
  () => ["a", null],
  () => deep(10000, "deep"),
  () => deep(50, { role: "user", content: "hi" }),
  () => ({}),
  () => ({ toString: () => "sneaky" }),
  () => nullProto(),
  () => cyclic(),
  () => Symbol("s"),
  () => () => "a function",
  () => 1n,
  () => new Date(0),
  () => new Map([["a", 1]]),
  () => new Uint8Array(4),
  () => ({ aborted: false }),
  () => new Proxy({}, { get: () => 1 }),
];

// Every field a request may name (the runtime's, and those it refuses as not supported), and
// names no request takes.
const FIELDS = [
  ...new Set(REQUEST_FIELDS.map((field) => field.name)),
  "no_such_field",
  "__proto__",
  "constructor",
];

/** Values at and just past the edges of a field's range, or of its kind. */
function edges({ type, minimum, maximum, exclusiveMinimum, enum: values }) {
  if (values) return [...values, values[0].toUpperCase(), 1];
  if (type === "boolean") return [true, false, 1, "true"];
  if (type !== "number" && type !== "integer") return [];
  const step = type === "integer" ? 1 : 0.001;
  const bounds = [minimum, maximum, exclusiveMinimum].filter(
    (b) => b !== undefined,
  );
  const near = bounds.flatMap((b) => [b, b - step, b + step]);
  return type === "integer" ? [...near, (bounds[0] ?? 0) + 0.5] : near;
}

const TOOL = {
  type: "function",
  function: {
    name: "get_time",
    parameters: { type: "object", properties: {} },
  },
};

// Values that are close to right: shapes that are nearly valid, values far from the usual
// ones, and (added below) the edges of each field's range.
const NEAR_VALUES = {
  max_tokens: [3, 1e9],
  temperature: [1e-300],
  repetition_penalty: [1, 1e9],
  seed: [2 ** 64, 3.7],
  best_of: [1, 2],
  ignore_eos: ["no"],
  stop: [[], ["a", "b", "c", "d", "e"], [""], "\n", ["x".repeat(10000)]],
  logit_bias: [
    { 1: 100 },
    { 1: 101 },
    { "-1": 5 },
    { 999999: 1 },
    { a: 1 },
    { 1: NaN },
    { 1.5: 1 },
  ],
  stream_options: [
    { include_usage: true },
    { include_usage: "yes" },
    { other: 1 },
    null,
  ],
  response_format: [
    { type: "text" },
    { type: "json_object" },
    { type: "json_schema" },
    {
      type: "json_schema",
      json_schema: { name: "a", schema: { type: "object" } },
    },
    {
      type: "json_schema",
      json_schema: { name: "a", schema: deepObject(100) },
    },
    {
      type: "json_schema",
      json_schema: { name: "a", schema: deep(10000, {}) },
    },
    { type: "json_object", schema: "{not json" },
    { type: "xml" },
  ],
  tools: [
    [TOOL],
    [],
    [{ type: "function" }],
    [{ type: "function", function: { name: "bad name!" } }],
    [TOOL, TOOL],
  ],
  tool_choice: [
    "none",
    "auto",
    "required",
    "sometimes",
    { type: "function", function: { name: "nope" } },
  ],
  signal: [
    new AbortController().signal,
    AbortSignal.abort(),
    AbortSignal.timeout(1),
  ],
  model: ["tiny", "no-such-model", "", "a".repeat(10000)],
  user: ["someone", 5],
};
for (const field of REQUEST_FIELDS) {
  const values = edges(field);
  if (values.length > 0)
    NEAR_VALUES[field.name] = [...(NEAR_VALUES[field.name] ?? []), ...values];
}

const MESSAGE_SHAPES = [
  () => [],
  () => [{ role: "assistant", content: "first" }],
  () => [{ role: "system", content: "s" }],
  () => [
    { role: "user", content: "hi" },
    { role: "system", content: "late" },
  ],
  () => [{ role: "tool", content: "42" }],
  () => [
    { role: "tool", content: "42", tool_call_id: "call_1" },
    { role: "user", content: "hi" },
  ],
  () => [{ role: "user", content: [{ type: "text", text: "part" }] }],
  () => [
    {
      role: "user",
      content: [{ type: "image_url", image_url: { url: "x" } }],
    },
  ],
  () => [{ role: "user", content: [] }],
  () => [{ role: "user" }],
  () => [{ content: "no role" }],
  () => [{ role: "wizard", content: "hi" }],
  () => [{ role: "user", content: "hi", name: "bob", extra: 1 }],
  () => [
    {
      role: "assistant",
      content: null,
      tool_calls: [
        {
          id: "c",
          type: "function",
          function: { name: "f", arguments: "{" },
        },
      ],
    },
  ],
  () => [{ role: "assistant", content: null, tool_calls: "many" }],
  () =>
    Array.from({ length: 3000 }, (_, i) => ({
      role: i % 2 ? "assistant" : "user",
      content: `m${i}`,
    })),
  () => [{ role: "user", content: "long ".repeat(5000) }],
  () => [{ role: "user", content: "\uD83D" }],
  () => [nullProto()],
  () => [cyclic()],
  () => deep(10000, []),
  () => ({ length: 1, 0: { role: "user", content: "array-like" } }),
];

const pick = (random, list) => list[Math.floor(random() * list.length)];

/** Request `index` of the run: a valid base, then one to three mutations. */
function makeRequest(random) {
  const completion = random() < 0.2;
  const request = completion
    ? { prompt: "Once upon a time", max_tokens: 3, temperature: 0 }
    : {
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 3,
        temperature: 0,
      };
  const mutations = 1 + Math.floor(random() * 3);
  for (let m = 0; m < mutations; m++) {
    const kind = random();
    if (kind < 0.35) {
      request[pick(random, FIELDS)] = pick(random, ODD_VALUES)();
    } else if (kind < 0.65) {
      const field = pick(random, Object.keys(NEAR_VALUES));
      request[field] = pick(random, NEAR_VALUES[field]);
    } else if (kind < 0.85 && !completion) {
      request.messages = pick(random, MESSAGE_SHAPES)();
    } else if (completion) {
      request.prompt =
        random() < 0.5
          ? pick(random, ODD_VALUES)()
          : [1, 2, random() < 0.5 ? -1 : 1e9];
    } else {
      if (!Array.isArray(request.messages))
        request.messages = [{ role: "user", content: "hi" }];
      const message = request.messages[0];
      const target =
        message !== null && typeof message === "object"
          ? message
          : (request.messages[0] = {});
      target[
        pick(random, ["role", "content", "name", "tool_calls", "tool_call_id"])
      ] = pick(random, ODD_VALUES)();
    }
  }
  if (random() < 0.25) request.stream = true;
  // Keep what a valid request generates short: a fuzzing run is about the checks.
  if (typeof request.n === "number" && request.n > 2) request.n = 2;
  return { completion, request };
}

const describe = (value) => {
  try {
    return String(
      JSON.stringify(value, (k, v) =>
        typeof v === "string" && v.length > 40 ? `${v.slice(0, 40)}...` : v,
      ),
    ).slice(0, 300);
  } catch {
    return String(typeof value);
  }
};

async function run(engine, completion, request) {
  const api = completion ? engine.completions : engine.chat.completions;
  const out = await api.create(request);
  if (out && typeof out[Symbol.asyncIterator] === "function") {
    let chunks = 0;
    for await (const _ of out) chunks++;
    return `stream of ${chunks}`;
  }
  if (!out || typeof out.id !== "string" || !Array.isArray(out.choices))
    throw new Error(`not a response: ${describe(out)}`);
  return "answered";
}

const NAMED = new Set([
  "InvalidRequestError",
  "ContextWindowExceededError",
  "ModelNotFoundError",
  "AbortError",
]);

export async function fuzzRequests(
  engine,
  { seed = 1, count = 2000, timeoutMs = 30000, background = [] } = {},
) {
  const random = generator(seed);
  const outcomes = {};
  const failures = [];
  const stray = [];
  const onRejection = (event) =>
    stray.push(
      `unhandled rejection: ${event.reason?.name}: ${event.reason?.message ?? event.reason}`,
    );
  const onError = (event) => stray.push(`error event: ${event.message}`);
  // A page's events, or in Node the process's (an uncaught exception ends it anyway).
  const nodeRejection = (reason) => onRejection({ reason });
  if (typeof addEventListener === "function") {
    addEventListener("unhandledrejection", onRejection);
    addEventListener("error", onError);
  } else {
    process.on("unhandledRejection", nodeRejection);
  }
  try {
    for (let i = 0; i < count; i++) {
      const { completion, request } = makeRequest(random);
      let outcome;
      let timer;
      try {
        const hang = new Promise((_, reject) => {
          timer = setTimeout(
            () =>
              reject(Object.assign(new Error("no answer"), { name: "Hang" })),
            timeoutMs,
          );
        });
        outcome = await Promise.race([run(engine, completion, request), hang]);
        outcome = outcome.startsWith("stream") ? "streamed" : outcome;
      } catch (err) {
        const name = err?.name ?? typeof err;
        const named =
          NAMED.has(name) &&
          (name !== "InvalidRequestError" ||
            (typeof err.param === "string" && err.param));
        outcome = named ? name : `FAILED ${name}`;
        if (!named)
          failures.push({
            index: i,
            error: `${name}: ${err?.message}`.slice(0, 300),
            request: describe(request),
          });
        if (name === "Hang") break; // the engine is stuck: later requests would queue behind it
      } finally {
        clearTimeout(timer);
      }
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    }
    await new Promise((resolve) => setTimeout(resolve, 100)); // late rejections surface
  } finally {
    if (typeof removeEventListener === "function") {
      removeEventListener("unhandledrejection", onRejection);
      removeEventListener("error", onError);
    } else {
      process.off("unhandledRejection", nodeRejection);
    }
  }
  return {
    outcomes,
    failures: failures.slice(0, 20),
    failureCount: failures.length,
    stray: [...stray, ...background],
  };
}
