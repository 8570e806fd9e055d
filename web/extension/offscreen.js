// The engine's home: an offscreen document the service worker creates on demand. It holds the
// extension's one engine and serves every extension page that connects over a port named
// ENGINE_PORT (engine.js), with the runtime's worker protocol: the pages' requests take turns,
// and a page that closes ends its request.
import { ExtensionEngineHandler } from "./kiln.js";
import { ENGINE_PORT } from "./engine.js";

const handler = new ExtensionEngineHandler();

chrome.runtime.onConnect.addListener((port) => {
  if (port.name === ENGINE_PORT) handler.serve(port);
});
