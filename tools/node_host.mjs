// The runtime in Node.js, driven over stdin and stdout by tools/node.py: loads the model folder
// given on the command line, then reads one JSON request a line ({expression, arg}) and answers
// one JSON line ({value} or {error}), in order. `engine` and `kiln` are globals, as in an engine
// page. Written by hand: a dozen lines of protocol, no library for it.
import { createInterface } from "node:readline";

const [runtime, location, options] = process.argv.slice(2);
globalThis.kiln = await import(runtime);
globalThis.engine = await globalThis.kiln.CreateEngine(
  location,
  JSON.parse(options),
);
process.stdout.write(JSON.stringify({ value: "ready" }) + "\n");
for await (const line of createInterface({ input: process.stdin })) {
  const { expression, arg } = JSON.parse(line);
  let answer;
  try {
    const value = (0, eval)(`(${expression})`);
    const result = typeof value === "function" ? await value(arg) : await value;
    // As a page's evaluate does, what JSON cannot hold (undefined, a function) comes back null.
    answer = {
      value:
        result === undefined || typeof result === "function" ? null : result,
    };
  } catch (err) {
    answer = { error: `${err?.name}: ${err?.message}` };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
