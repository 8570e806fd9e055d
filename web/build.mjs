// Bundles the runtime (ES module), its worker scripts and the chat page into build/.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import Ajv2020 from "ajv/dist/2020.js";
import standaloneCode from "ajv/dist/standalone/index.js";
import * as esbuild from "esbuild";

mkdirSync("build", { recursive: true });

// XGrammar keeps its wasm instance in a variable private to its module, and a trap inside it
// (its stack overflowing, say) leaves that instance unusable for good. This adds an
// `exports.resetBinding()` so that the engine can drop it and start a fresh instance
// (web/src/text/grammar.js). The package version is pinned; the build fails if the line moved.
const xgrammarReset = {
  name: "xgrammar-reset",
  setup(build) {
    build.onLoad({ filter: /web-xgrammar[\\/]lib[\\/]index\.js$/ }, ({ path }) => {
      const source = readFileSync(path, "utf8");
      const anchor = "let binding = null;";
      if (source.split(anchor).length !== 2) throw new Error(`${path}: "${anchor}" not found once`);
      const reset = `${anchor}\n  exports.resetBinding = () => { binding = null; };`;
      // In Node (no document, no location) its loader names the script by CommonJS's
      // `require` and `__filename`, which an ES module lacks; the chunk's own URL serves.
      const script = "require('u' + 'rl').pathToFileURL(__filename).href";
      if (!source.includes(script)) throw new Error(`${path}: "${script}" not found`);
      return { contents: source.replace(anchor, reset).replaceAll(script, "import.meta.url"), loader: "js" };
    });
  },
};

// The manifest's contract (src/manifest.schema.json, which the compiler checks too) as
// validating functions generated here: Ajv compiles a schema with `new Function`, which the
// extension's pages may not call, so its standalone code is bundled instead. The module also
// exports the manifest format and the name of TVM's hidden grid argument the schema declares.
// `kiln:json-schema` likewise: the JSON Schema 2020-12 meta-schema as a validating function,
// which checks the schemas requests give before the grammar engine sees them.
const contract = {
  name: "kiln-contract",
  setup(build) {
    build.onResolve({ filter: /^kiln:(contract|json-schema)$/ }, ({ path }) => ({
      path: path.slice("kiln:".length),
      namespace: "kiln",
    }));
    build.onLoad({ filter: /^json-schema$/, namespace: "kiln" }, () => {
      // Formats are annotations here (as XGrammar reads them): not checked.
      const ajv = new Ajv2020({ code: { source: true, esm: true }, strict: false, validateFormats: false });
      const code = standaloneCode(ajv, { validateJsonSchema: "https://json-schema.org/draft/2020-12/schema" });
      return { contents: code, loader: "js", resolveDir: "." };
    });
    build.onLoad({ filter: /^contract$/, namespace: "kiln" }, () => {
      const schema = JSON.parse(readFileSync("src/manifest.schema.json", "utf8"));
      // strictRequired off: the schema's if/then branches require properties defined beside
      // them; union types: an expression is a number, a name or an array.
      const ajv = new Ajv2020({
        code: { source: true, esm: true },
        strict: true,
        strictRequired: false,
        allowUnionTypes: true,
      });
      ajv.addSchema(schema);
      const id = schema.$id;
      const code = standaloneCode(ajv, {
        validateManifest: id,
        validateWebGPUKernels: `${id}#/$defs/webgpuKernels`,
        validateWasmKernels: `${id}#/$defs/wasmKernels`,
      });
      const { pods } = schema.$defs.webgpuKernels.additionalProperties.properties;
      const constants = [
        `export const MANIFEST_FORMAT = ${JSON.stringify(schema.properties.format.const)};`,
        `export const GRID_POD = ${JSON.stringify(pods.contains.properties.name.const)};`,
      ];
      return { contents: [code, ...constants].join("\n"), loader: "js", resolveDir: "." };
    });
  },
};

// `kiln:runtime`: RUNTIME_HASH, the SHA-256 of the runtime's sources, which names the runtime
// that computed a stored KV snapshot (src/engine/prefix_store.js): any change to the runtime
// makes the snapshots of the one before stale.
const runtimeHash = {
  name: "kiln-runtime",
  setup(build) {
    build.onResolve({ filter: /^kiln:runtime$/ }, () => ({ path: "runtime", namespace: "kiln" }));
    build.onLoad({ filter: /^runtime$/, namespace: "kiln" }, () => {
      const hash = createHash("sha256");
      const files = readdirSync("src", { recursive: true, withFileTypes: true })
        .filter((entry) => entry.isFile())
        .map((entry) => join(entry.parentPath, entry.name))
        .sort();
      for (const file of files) hash.update(file).update("\0").update(readFileSync(file)).update("\0");
      return { contents: `export const RUNTIME_HASH = ${JSON.stringify(hash.digest("hex"))};`, loader: "js" };
    });
  },
};

const common = {
  bundle: true,
  format: "esm",
  target: "es2022",
  // XGrammar's Emscripten loader names Node built-ins on a path browsers never take; the
  // runtime imports `node:*` modules only when it runs in Node (src/platform.js).
  external: ["url", "module", "node:*"],
  minify: true,
  keepNames: true, // error classes are told apart by name
  sourcemap: false,
  logLevel: "warning",
  plugins: [xgrammarReset, contract, runtimeHash],
};
// The runtime and the dedicated and shared worker scripts (kiln-worker.js,
// kiln-shared-worker.js) share their chunks; the CPU backend's thread script (kiln-thread.js)
// imports nothing. Every entry and chunk is written to build/ itself: the runtime finds its
// worker scripts by `new URL("./kiln-worker.js", import.meta.url)` (src/workers/, src/platform.js),
// which esbuild leaves as written, so the URL resolves against the bundled file, wherever its
// source lies in src/.
const split = await esbuild.build({
  ...common,
  metafile: true,
  entryPoints: {
    kiln: "src/index.js",
    "kiln-worker": "src/workers/kiln-worker.js",
    "kiln-shared-worker": "src/workers/kiln-shared-worker.js",
    "kiln-thread": "src/backends/wasm_thread.js",
  },
  outdir: "build",
  entryNames: "[name]",
  // The grammar engine (a 1 MB wasm) is imported on first use of response_format.
  splitting: true,
  chunkNames: "kiln-[name]-[hash]",
});
// Service workers may not import() modules: the service worker script is one file, the
// grammar engine included.
await esbuild.build({ ...common, entryPoints: ["src/workers/kiln-sw.js"], outfile: "build/kiln-sw.js" });
// Chunks of earlier builds (their names carry a hash) would otherwise be copied into every
// model folder.
const written = new Set([...Object.keys(split.metafile.outputs).map((f) => basename(f)), "kiln-sw.js"]);
for (const file of readdirSync("build")) if (/^kiln-.*\.js$/.test(file) && !written.has(file)) rmSync(`build/${file}`);
// The chat page: its Markdown renderer and sanitizer bundled in, the runtime imported beside it.
await esbuild.build({
  ...common,
  entryPoints: ["site/chat.js"],
  outfile: "build/chat.js",
  external: ["./kiln.js"],
});
// The search page (notes ranked by an embedding model), likewise.
await esbuild.build({
  ...common,
  entryPoints: ["site/search.js"],
  outfile: "build/search.js",
  external: ["./kiln.js"],
});
for (const file of ["index.html", "search.html", "chat.css"]) copyFileSync(`site/${file}`, `build/${file}`);
