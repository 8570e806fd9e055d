// The service worker script: `navigator.serviceWorker.register(base + "kiln-sw.js", {type: "module"})`.
import { ServiceWorkerEngineHandler } from "./worker.js";

// A new version takes over at once and controls the open pages without a reload: the
// clients send their last reload with each request, so its engine loads what they expect.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

new ServiceWorkerEngineHandler();
