// Bundles the runtime (ES module) and copies the chat page into build/.
import { copyFileSync, mkdirSync } from "node:fs";
import * as esbuild from "esbuild";

mkdirSync("build", { recursive: true });
await esbuild.build({
  entryPoints: ["src/index.js"],
  bundle: true,
  format: "esm",
  target: "es2022",
  outfile: "build/kiln.js",
  minify: true,
  keepNames: true, // error classes are told apart by name
  sourcemap: false,
  logLevel: "warning",
});
for (const file of ["index.html", "chat.js"]) copyFileSync(`site/${file}`, `build/${file}`);
