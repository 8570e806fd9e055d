// The Prompt API (github.com/webmachinelearning/prompt-api), the shape of the LanguageModel
// that Chrome ships for its built-in model, over a model of Kiln's: createLanguageModel gives
// a LanguageModel class bound to one model, loaded by the first create() and shared by every
// session; installLanguageModel makes it globalThis.LanguageModel where the browser has none.
import { checkModel } from "../backends/check.js";
import { CreateEngine } from "../engine/engine.js";
import { PARAMS, domError, promptMessages, sessionSampling, textOnly } from "./inputs.js";
import { INITIAL, LanguageModelSession, PRIVATE } from "./session.js";

/** A "downloadprogress" event: a ProgressEvent (where there is one) of `loaded` from 0 to 1. */
function progressEvent(loaded) {
  const event =
    typeof ProgressEvent === "function"
      ? new ProgressEvent("downloadprogress", { loaded, total: 1, lengthComputable: true })
      : new Event("downloadprogress");
  // ProgressEvent's fields were whole numbers before the Prompt API made them doubles.
  if (event.loaded !== loaded)
    Object.defineProperties(event, {
      loaded: { value: loaded },
      total: { value: 1 },
      lengthComputable: { value: true },
    });
  return event;
}

/** Rejects with the signal's reason once it aborts, else settles as `promise` does. */
function abortable(promise, signal) {
  if (!signal) return promise;
  return new Promise((resolve, reject) => {
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    if (signal.aborted) reject(signal.reason);
    promise.then(resolve, reject);
  });
}

/** The model behind a LanguageModel class: its engine, loaded once, and where its loading is. */
class ModelHost {
  #model;
  #options;
  #engine = null; // a promise of the engine, from the first create()
  #state = "downloadable";
  #runs = null; // a promise: whether checkModel finds that the model would run here
  #watchers = new Set(); // the progress callbacks of the create() calls waiting for the load

  #create; // makes the engine: CreateEngine, or the createEngine option

  constructor(model, { createEngine = CreateEngine, ...options }) {
    if (typeof createEngine !== "function")
      throw new TypeError("createEngine must be a function (model, options) => Promise<engine>");
    this.#model = model;
    this.#options = options;
    this.#create = createEngine;
    if (typeof model !== "string") {
      if (!model?.chat?.completions || !model.tokenizer)
        throw new TypeError("createLanguageModel takes a model folder's URL or an engine made by CreateEngine");
      [this.#engine, this.#state] = [Promise.resolve(model), "available"];
    }
  }

  /** The explainer's availability, for text: before the model loads, checkModel's verdict. */
  async availability() {
    if (this.#state === "downloadable") {
      const { appConfig, backend, variant } = this.#options;
      this.#runs ??= checkModel(this.#model, { appConfig, backend, variant }).then(
        (check) => check.ok,
        () => ((this.#runs = null), false), // its manifest could not be read (asked again next time)
      );
      if (!(await this.#runs)) return "unavailable";
    }
    return this.#state;
  }

  /** The engine, loading it on the first call; `onProgress(loaded)` hears the load's progress. */
  async engine(onProgress) {
    if (!this.#engine) {
      const initProgressCallback = (report) => {
        for (const watcher of this.#watchers) watcher(report.progress);
        this.#options.initProgressCallback?.(report);
      };
      this.#state = "downloading";
      this.#engine = this.#create(this.#model, { ...this.#options, initProgressCallback }).then(
        (engine) => {
          if (!engine?.chat?.completions || !engine.tokenizer || !engine.manifest)
            throw new TypeError("createEngine must give an engine with its model's tokenizer and manifest");
          this.#state = "available";
          return engine;
        },
        (err) => {
          // A later create() tries again; until one succeeds the model is "unavailable".
          [this.#engine, this.#state] = [null, "unavailable"];
          throw err;
        },
      );
    }
    this.#watchers.add(onProgress);
    try {
      const engine = await this.#engine;
      if (engine.manifest?.task === "embedding")
        throw domError("NotSupportedError", `${engine.manifest.model_id} is an embedding model: it cannot chat`);
      return engine;
    } finally {
      this.#watchers.delete(onProgress);
    }
  }
}

/**
 * A LanguageModel class (the Prompt API's) bound to `model`: the URL of a model folder written
 * by build-web (loaded, with CreateEngine's `options`, by the first create()), or an engine
 * made by CreateEngine. Its sessions share the model. `options.createEngine` makes the engine
 * instead of CreateEngine, from the model and the other options: an engine that runs elsewhere
 * and has the model's tokenizer and manifest in this page (an ExtensionEngine), say.
 * @param {string | import("../engine/engine.js").Engine} model
 * @param {object} [options]  CreateEngine's options, and createEngine
 */
export function createLanguageModel(model, options = {}) {
  const host = new ModelHost(model, options ?? {});
  return class LanguageModel extends LanguageModelSession {
    /**
     * "available" once the model is loaded, "downloading" while it loads, "downloadable"
     * before; "unavailable" where checkModel finds it would not run here, after a load
     * failed, or for inputs or outputs other than text.
     */
    static async availability(options = {}) {
      return textOnly(options) ? host.availability() : "unavailable";
    }

    static async params() {
      return { ...PARAMS };
    }

    /** A new session; the first loads the model, reporting "downloadprogress" to `monitor`. */
    static async create(options = {}) {
      const { signal, monitor, initialPrompts, tools } = options;
      if (tools != null && [...tools].length > 0) throw domError("NotSupportedError", "tools are not supported");
      if (!textOnly(options))
        throw domError("NotSupportedError", "only text is supported in expectedInputs and expectedOutputs");
      const sampling = sessionSampling(options);
      const initial = initialPrompts == null ? [] : promptMessages([...initialPrompts], true);
      signal?.throwIfAborted();
      const progress = new EventTarget();
      monitor?.(progress);
      let shown = 0;
      const report = (loaded) => {
        if (loaded < shown || signal?.aborted) return;
        shown = loaded;
        progress.dispatchEvent(progressEvent(loaded));
      };
      report(0);
      const engine = await abortable(
        host.engine((loaded) => report(Math.min(loaded, 0.99))),
        signal,
      );
      report(1);
      const session = new this(PRIVATE, engine, { sampling });
      await session[INITIAL](initial, signal);
      signal?.addEventListener("abort", () => session.destroy(), { once: true });
      return session;
    }
  };
}

/**
 * Makes globalThis.LanguageModel a LanguageModel bound to `model` (see createLanguageModel)
 * where the browser has none, and returns what globalThis.LanguageModel then is: the
 * browser's own where it has one.
 */
export function installLanguageModel(model, options = {}) {
  if (globalThis.LanguageModel === undefined) {
    Object.defineProperty(globalThis, "LanguageModel", {
      value: createLanguageModel(model, options),
      writable: true,
      configurable: true,
      enumerable: false,
    });
  }
  return globalThis.LanguageModel;
}
