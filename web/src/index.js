export { CreateEngine, Engine } from "./engine.js";
export * from "./errors.js";
export { ChatTokenizer } from "./tokenizer.js";
export { deleteWeightCache, WEIGHT_CACHE } from "./loader.js";
export { WebWorkerEngineHandler, ServiceWorkerEngineHandler } from "./worker.js";
export {
  CreateWebWorkerEngine,
  newEngineWorker,
  CreateServiceWorkerEngine,
  WebWorkerEngine,
  ServiceWorkerEngine,
} from "./worker_client.js";
