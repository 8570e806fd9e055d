// Every error the runtime throws, each naming what the caller can do about it.

export class KilnError extends Error {
  constructor(message, code) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

export class WebGPUUnavailableError extends KilnError {
  constructor(detail) {
    super(
      globalThis.process?.versions?.node && typeof globalThis.window === "undefined"
        ? `WebGPU is not available in Node.js (${detail}). Install the "webgpu" package where Dawn ` +
            'finds a GPU adapter, or use backend: "wasm".'
        : `WebGPU is not available in this browser (${detail}). Use a recent Chrome or Edge, ` +
            "or start Chromium with --enable-unsafe-webgpu.",
      "webgpu_unavailable",
    );
  }
}

export class FeatureUnsupportedError extends KilnError {
  constructor(feature, modelId) {
    super(
      `The GPU adapter lacks "${feature}", which ${modelId} needs. Build the model with an ` +
        "f32 quantization (q4f32 or q0f32) for this device.",
      "feature_unsupported",
    );
  }
}

export class DeviceLostError extends KilnError {
  constructor(reason) {
    super(`The GPU device was lost (${reason}). Reload the model to continue.`, "device_lost");
  }
}

export class ModelLoadError extends KilnError {
  constructor(message) {
    super(message, "model_load_failed");
  }
}

export class ModelWontFitError extends ModelLoadError {
  /**
   * The model would not run here, found before any weight was fetched: `check` is what
   * checkModel answers (`reasons`, `memory`, `limits`, `fitting_context_window`).
   * @param {{model_id: string, reasons: string[]}} check
   */
  constructor(check) {
    super(`${check.model_id} will not run here: ${check.reasons.join("; ")}.`);
    this.code = "model_wont_fit";
    this.check = check;
  }
}

export class ShardIntegrityError extends KilnError {
  /**
   * @param {string} file  @param {string} detail  what was wrong with the bytes received
   * @param {string} [kind]  what the file is: "weight shard" or "kernel module"
   */
  constructor(file, detail, kind = "weight shard") {
    super(
      `The ${kind} ${file} is corrupt (${detail}), also when fetched again past the browser's ` +
        "cache. Rebuild the model folder or restore the file on the server.",
      "shard_integrity",
    );
  }
}

export class InvalidRequestError extends KilnError {
  constructor(field, message) {
    super(`Invalid value for '${field}': ${message}`, "invalid_request_error");
    this.param = field;
  }
}

export class ContextWindowExceededError extends KilnError {
  /** @param {number} promptTokens  @param {number} window  @param {"messages" | "prompt"} param */
  constructor(promptTokens, window, param) {
    super(
      `The prompt has ${promptTokens} tokens but the model's context window holds ${window}. ` +
        'Shorten the messages, pass truncation: "auto" to drop the oldest turns, or rebuild with a ' +
        "larger --context-window.",
      "context_length_exceeded",
    );
    this.param = param;
  }
}

export class ModelNotFoundError extends KilnError {
  constructor(model, loaded) {
    super(
      `The model '${model}' is not loaded in this engine (loaded: ${loaded.join(", ") || "none"}).`,
      "model_not_found",
    );
    this.param = "model";
  }
}

export class GrammarError extends KilnError {
  /** The grammar engine failed while constraining a reply (not a schema refused up front). */
  constructor(detail) {
    super(`Structured output failed: ${detail}. The next request starts a fresh grammar.`, "grammar_failed");
  }
}

export class WorkerError extends KilnError {
  /** The engine's Web Worker or Service Worker could not be reached or failed. */
  constructor(message) {
    super(message, "worker_failed");
  }
}
