// A model folder's files but its weights (shards.js): manifest.json, the tokenizer's files and
// the kernel sets, each checked against the manifest's contract (src/manifest.schema.json,
// compiled into validators by build.mjs).
import { MANIFEST_FORMAT, validateManifest, validateWasmKernels, validateWebGPUKernels } from "kiln:contract";

import { ModelLoadError } from "../errors.js";
import { resolveLocation } from "../platform.js";
import { fetchJson } from "./download.js";
import { shardBytes } from "./shards.js";

/**
 * Throws a ModelLoadError where `document` (the file at `url`) breaks the contract `validate`
 * checks, naming the first place and what was expected there.
 */
function checkContract(validate, document, url) {
  if (validate(document)) return;
  const [error] = validate.errors;
  const allowed = error.params?.allowedValues ? ` (${error.params.allowedValues.join(", ")})` : "";
  throw new ModelLoadError(
    `${url} does not keep to manifest format ${MANIFEST_FORMAT}: ${error.instancePath || "/"} ${error.message}${allowed}. ` +
      "Rebuild the model with the build-web that ships this runtime.",
  );
}

/**
 * Fetches manifest.json of the model folder at `baseUrl` (in Node also a filesystem path),
 * checked against its schema.
 */
export async function fetchManifest(baseUrl) {
  const base = await resolveLocation(baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`);
  const url = new URL("manifest.json", base);
  const manifest = await fetchJson(url);
  const format = manifest?.format;
  if (format !== MANIFEST_FORMAT) {
    throw new ModelLoadError(
      `${url} has format ${typeof format === "number" ? format : "(none)"}; this runtime reads format ${MANIFEST_FORMAT}. ` +
        "Rebuild the model with the build-web that ships this runtime.",
    );
  }
  checkContract(validateManifest, manifest, url);
  return { base, manifest };
}

/** Fetches tokenizer.json and tokenizer_config.json of a model folder. */
export async function fetchTokenizerFiles(base, manifest) {
  const [tokenizer, tokenizerConfig] = await Promise.all(
    [manifest.tokenizer, manifest.tokenizer_config].map((f) => fetchJson(new URL(f, base))),
  );
  return { tokenizer, tokenizerConfig };
}

/**
 * The kernel set `name` of a model folder: "software" or "gpu" (WGSL for WebGPU), or "wasm"
 * (kernels.json plus the WebAssembly module, compiled once its sha256 checks).
 */
export async function fetchVariant(base, manifest, name) {
  const variant = manifest.variants[name];
  if (!variant)
    throw new ModelLoadError(
      `This model has no "${name}" kernels (it has: ${Object.keys(manifest.variants).join(", ")}); ` +
        "rebuild it with this build-web",
    );
  const url = new URL(variant.kernels, base);
  const kernels = await fetchJson(url);
  checkContract(variant.wasm ? validateWasmKernels : validateWebGPUKernels, kernels, url);
  for (const [fn, plan] of Object.entries(variant.functions)) {
    const missing = plan.launches.find((launch) => !Object.hasOwn(kernels, launch.kernel));
    if (missing) throw new ModelLoadError(`${url} lacks the kernel ${missing.kernel} that ${fn} calls`);
  }
  if (!variant.wasm) return { name, functions: variant.functions, kernels };
  const { data } = await shardBytes(
    new URL(variant.wasm.file, base).href,
    variant.wasm,
    null,
    () => {},
    "kernel module",
  );
  let module;
  try {
    module = await WebAssembly.compile(data);
  } catch (err) {
    throw new ModelLoadError(`${variant.wasm.file} is not a WebAssembly module this browser runs: ${err.message}`);
  }
  return { name, functions: variant.functions, kernels, module, memory: variant.wasm.memory };
}
