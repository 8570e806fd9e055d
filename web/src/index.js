export { CreateEngine, Engine } from "./engine.js";
export * from "./errors.js";
