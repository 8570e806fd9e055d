// The runtime's public API, bundled as build/kiln.js (its types: web/types/kiln.d.ts).
export { CreateEngine, Engine } from "./engine/engine.js";
export * from "./errors.js";
export { ChatTokenizer } from "./text/tokenizer.js";
export { deleteWeightCache, WEIGHT_CACHE } from "./backends/shards.js";
export { checkModel } from "./backends/check.js";
export { WebWorkerEngineHandler, ServiceWorkerEngineHandler, SharedWorkerEngineHandler } from "./workers/worker.js";
export {
  CreateWebWorkerEngine,
  newEngineWorker,
  CreateServiceWorkerEngine,
  WebWorkerEngine,
  ServiceWorkerEngine,
} from "./workers/worker_client.js";
export { CreateSharedWorkerEngine, newSharedEngineWorker, SharedEngine } from "./workers/shared.js";
export { CreateExtensionEngine, ExtensionEngine, ExtensionEngineHandler } from "./workers/extension.js";
export { createLanguageModel, installLanguageModel } from "./prompt_api/language_model.js";
