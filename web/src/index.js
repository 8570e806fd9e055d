export { CreateEngine, Engine } from "./engine.js";
export * from "./errors.js";
export { ChatTokenizer } from "./tokenizer.js";
export { deleteWeightCache, WEIGHT_CACHE } from "./loader.js";
