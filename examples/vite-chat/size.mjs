// Prints the size of the built app (dist/, or the folder given): every JS and wasm file,
// raw and gzipped, and the totals, as a server compressing them would send them.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { gzipSync } from "node:zlib";

const root = process.argv[2] ?? "dist";
const files = readdirSync(root, { recursive: true })
  .map(String)
  .filter((f) => /\.(m?js|wasm)$/.test(f))
  .sort();
const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
const totals = { js: [0, 0], wasm: [0, 0] };
for (const file of files) {
  const data = readFileSync(join(root, file));
  const gzipped = gzipSync(data, { level: 9 }).length;
  const kind = file.endsWith(".wasm") ? "wasm" : "js";
  totals[kind][0] += data.length;
  totals[kind][1] += gzipped;
  console.log(
    `${relative(".", join(root, file)).padEnd(48)} ${kb(data.length).padStart(12)} ${kb(gzipped).padStart(12)} gzipped`,
  );
}
for (const [kind, [raw, gzipped]] of Object.entries(totals))
  console.log(`total ${kind.padEnd(42)} ${kb(raw).padStart(12)} ${kb(gzipped).padStart(12)} gzipped`);
// The runtime's own wasm (the grammar engine) travels inside its kiln-lib chunk, base64; the
// kernels' kernels.wasm comes with each model folder, not with the app.
console.log("(wasm inlined in JS is counted as JS; a model's kernels.wasm is the model folder's)");
