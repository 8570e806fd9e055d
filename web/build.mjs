// Bundles the runtime (ES module) and copies the chat page into build/.
import { copyFileSync, mkdirSync } from "node:fs";
import * as esbuild from "esbuild";

mkdirSync("build", { recursive: true });
await esbuild.build({
  entryPoints: { kiln: "src/index.js" },
  bundle: true,
  format: "esm",
  target: "es2022",
  outdir: "build",
  entryNames: "[name]",
  // The grammar engine (a 1 MB wasm) is imported on first use of response_format.
  splitting: true,
  chunkNames: "kiln-[name]-[hash]",
  // XGrammar's Emscripten loader names Node built-ins on a path browsers never take.
  external: ["url", "module"],
  minify: true,
  keepNames: true, // error classes are told apart by name
  sourcemap: false,
  logLevel: "warning",
});
for (const file of ["index.html", "chat.js"]) copyFileSync(`site/${file}`, `build/${file}`);
