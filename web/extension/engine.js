// The extension's one engine, as its pages reach it: the service worker (background.js) opens
// the offscreen document that holds it (offscreen.js) on demand, and each page connects to it
// over a chrome.runtime port named ENGINE_PORT, speaking the runtime's worker protocol
// (ExtensionEngine). Every page gets the same instance, loaded once; the pages' requests take
// turns, and a page that closes ends its request and frees its turn.
import { CreateExtensionEngine } from "./kiln.js";

export const ENGINE_PORT = "kiln-engine";
/** The model packaged in the extension (build-web --extension puts it under model/). */
export const MODEL_URL = chrome.runtime.getURL("model/");

/**
 * This page's engine client, the packaged model loaded in the offscreen document or found
 * loaded there. `backend` is the engine's ("auto": WebGPU where the adapter is a real GPU, else
 * the CPU backend); pages that ask for another backend than the one loaded reload it.
 * @param {{backend?: "auto" | "webgpu" | "wasm",
 *          initProgressCallback?: (p: {progress: number, text: string}) => void}} [options]
 */
export async function connectEngine({ backend, initProgressCallback } = {}) {
  const reply = await chrome.runtime.sendMessage({ type: "ensure-offscreen" });
  if (!reply?.ok) throw new Error(`Could not start the engine: ${reply?.error ?? "no answer"}`);
  return CreateExtensionEngine(chrome.runtime.connect({ name: ENGINE_PORT }), MODEL_URL, {
    // The weights already sit in the extension's folder: a copy in the Cache API would only
    // double the disk space they take. The options are written in one order: the engine
    // reloads for options that differ, and JSON tells {a, b} from {b, a}.
    useCache: false,
    ...(backend && backend !== "auto" ? { backend } : {}),
    initProgressCallback,
  });
}
