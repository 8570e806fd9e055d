// The shared worker script: `new SharedWorker(base + "kiln-shared-worker.js", {type: "module"})`.
import { SharedWorkerEngineHandler } from "./worker.js";

new SharedWorkerEngineHandler();
