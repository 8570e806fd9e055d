// The dedicated worker script: `new Worker(base + "kiln-worker.js", {type: "module"})`.
import { WebWorkerEngineHandler } from "./worker.js";

new WebWorkerEngineHandler();
