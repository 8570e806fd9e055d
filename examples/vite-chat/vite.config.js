import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { defineConfig } from "vite";

// The service worker must be served from the app's own origin, at a path whose folder
// covers the pages it controls; a bundler would give it a hashed name under assets/. So its
// script is copied as it is, one file, to the root of the build (and served there by the dev
// server).
const serviceWorker = createRequire(import.meta.url).resolve("kiln-web/kiln-sw.js");
const kilnServiceWorker = {
  name: "kiln-service-worker",
  generateBundle() {
    this.emitFile({
      type: "asset",
      fileName: "kiln-sw.js",
      source: readFileSync(serviceWorker),
    });
  },
  configureServer(server) {
    server.middlewares.use("/kiln-sw.js", (_, res) => {
      res.setHeader("Content-Type", "text/javascript");
      res.end(readFileSync(serviceWorker));
    });
  },
};

// The CPU backend's threads share memory, which needs a cross-origin isolated page.
const isolated = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
};

export default defineConfig({
  plugins: [kilnServiceWorker],
  // The runtime loads its grammar engine lazily with import(): workers must be ES modules.
  worker: { format: "es" },
  // Pre-bundling would move the runtime away from its worker scripts, which it finds from
  // import.meta.url; the dev server serves it as installed instead.
  optimizeDeps: { exclude: ["kiln-web"] },
  server: { headers: isolated },
  preview: { headers: isolated },
  build: { target: "es2022" },
});
