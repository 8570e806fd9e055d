// The runtime's modules import the manifest's contract that build.mjs generates
// (kiln:contract) and the hash of its sources (kiln:runtime). Imported first by the tests that
// load them without a build: names that make no model load, enough to construct an engine or
// reach the loader.
import { register } from "node:module";

const CONTRACT = [
  "export const MANIFEST_FORMAT = null, GRID_POD = null;",
  "export const validateManifest = () => false, validateWebGPUKernels = () => false, validateWasmKernels = () => false;",
].join("\n");
// kiln:runtime's hash of the sources (build.mjs), here a name no bundle has.
const RUNTIME = 'export const RUNTIME_HASH = "unbundled";';
const HOOKS = `export async function resolve(specifier, context, next) {
  if (specifier === "kiln:contract")
    return { url: "data:text/javascript," + encodeURIComponent(${JSON.stringify(CONTRACT)}), shortCircuit: true };
  if (specifier === "kiln:runtime")
    return { url: "data:text/javascript," + encodeURIComponent(${JSON.stringify(RUNTIME)}), shortCircuit: true };
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(HOOKS)}`);
