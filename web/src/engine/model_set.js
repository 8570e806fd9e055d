// The models an engine holds, by id: loaded together (all of them or none), and looked up by
// the name a request gives, or without one, the only one loaded that fits.
import { InvalidRequestError, ModelLoadError, ModelNotFoundError } from "../errors.js";
import { LoadedModel } from "./model.js";

export class ModelSet {
  #models = new Map(); // model id -> LoadedModel

  /** The first loaded model, for tools and tests working with one model. */
  get first() {
    return this.#models.values().next().value;
  }

  /** The ids of the loaded models, the names requests give in `model`. */
  get ids() {
    return [...this.#models.keys()];
  }

  /** Where each loaded model's weight shards came from: {modelId: {cache, network}}. */
  get weightSources() {
    return Object.fromEntries([...this.#models].map(([id, m]) => [id, m.shardsFrom]));
  }

  values() {
    return this.#models.values();
  }

  /**
   * Loads the models `specs` name (model ids of `appConfig.model_list`, or URLs of model
   * folders) beside those held: all of them, or on a failure none (see Engine.reload).
   * @param {string[]} specs
   * @param {{model_list?: {model_id: string, model: string | string[], chat_template?: string}[]} | null} appConfig
   * @param {{initProgressCallback?: Function, variant?: string, backend?: "auto" | "webgpu" | "wasm",
   *          threads?: number, useCache?: boolean, prefixCacheBytes?: number,
   *          prefixCachePersistTokens?: number, prefixCacheStorageBytes?: number}} options
   */
  async load(specs, appConfig, { initProgressCallback, variant, backend, threads, useCache, ...prefix }) {
    try {
      for (const spec of specs) {
        const entry = appConfig?.model_list?.find((e) => e.model_id === spec);
        const urls = entry ? [entry.model].flat() : [spec];
        if (entry?.chat_template !== undefined && typeof entry.chat_template !== "string")
          throw new InvalidRequestError("appConfig.model_list.chat_template", "must be a string (a Jinja template)");
        const loaded = await LoadedModel.load(entry?.model_id, urls, {
          chatTemplate: entry?.chat_template,
          initProgressCallback,
          variant,
          backend,
          threads,
          useCache,
          ...prefix,
          onDeviceLost: (m, err) => (m.lostError = err),
        });
        if (this.#models.has(loaded.id)) {
          loaded.destroy();
          throw new ModelLoadError(`Two of the models are named ${loaded.id}`);
        }
        this.#models.set(loaded.id, loaded);
      }
    } catch (err) {
      this.unload(); // all of them or none
      throw err;
    }
  }

  /** Frees every model's memory and forgets them. */
  unload() {
    for (const model of this.#models.values()) model.destroy();
    this.#models.clear();
  }

  /**
   * The loaded model a request names; with no name, the only one loaded (or, given `encoder`,
   * the only one of that kind: an engine may hold a chat model and an embedding model). A
   * model of the other kind than `encoder` asks for is an InvalidRequestError.
   * @param {string | null | undefined} name
   * @param {boolean} [encoder]
   * @returns {LoadedModel}
   */
  resolve(name, encoder = undefined) {
    const ids = this.ids;
    if (ids.length === 0) throw new ModelLoadError("No model is loaded: call reload(model) first");
    if (name == null) {
      const fitting = [...this.#models.values()].filter((m) => encoder === undefined || m.isEncoder === encoder);
      if (fitting.length === 1) return fitting[0];
      if (ids.length === 1) return this.first;
      throw new InvalidRequestError("model", `several models are loaded (${ids.join(", ")}): name one`);
    }
    const model = this.#models.get(name);
    if (!model) throw new ModelNotFoundError(name, ids);
    if (encoder !== undefined && model.isEncoder !== encoder)
      throw new InvalidRequestError(
        "model",
        model.isEncoder
          ? `${name} is an embedding model: use engine.embeddings.create`
          : `${name} is a chat model: embeddings need an embedding model`,
      );
    return model;
  }
}
