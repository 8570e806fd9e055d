// The Prompt API for the extension's pages: a LanguageModel shaped like the one Chrome ships for
// its built-in model, answered by the extension's one engine (engine.js) with the packaged model.
//
//   import { LanguageModel } from "./prompt_api.js";          // this extension's model
//   import { installLanguageModel } from "./prompt_api.js";
//   installLanguageModel();  // globalThis.LanguageModel, where the browser has none
import { createLanguageModel } from "./kiln.js";
import { connectEngine, MODEL_URL } from "./engine.js";

/**
 * A LanguageModel class over the extension's engine; `backend` as connectEngine takes it.
 * @param {{backend?: "auto" | "webgpu" | "wasm"}} [options]
 */
export function extensionLanguageModel({ backend } = {}) {
  return createLanguageModel(MODEL_URL, {
    backend,
    createEngine: (_model, { initProgressCallback }) => connectEngine({ backend, initProgressCallback }),
  });
}

export const LanguageModel = extensionLanguageModel();

/**
 * Makes globalThis.LanguageModel this extension's where the browser has none, and returns
 * what globalThis.LanguageModel then is: the browser's own where it has one.
 */
export function installLanguageModel() {
  if (globalThis.LanguageModel === undefined) {
    Object.defineProperty(globalThis, "LanguageModel", {
      value: LanguageModel,
      writable: true,
      configurable: true,
      enumerable: false,
    });
  }
  return globalThis.LanguageModel;
}
