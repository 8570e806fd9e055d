// The runtime as an app gets it from npm: one import, no files copied by hand. The model
// folder (built by `build-web`) may live on any origin that sends CORS headers.
import { CreateEngine, CreateServiceWorkerEngine, CreateSharedWorkerEngine, CreateWebWorkerEngine } from "kiln-web";

const query = new URLSearchParams(location.search);
const model = query.get("model");
const backend = query.get("backend") ?? "auto";
const where = query.get("where") ?? "page";
const maxTokens = Number(query.get("max_tokens") ?? 256);

const $ = (id) => document.getElementById(id);
$("model").value = model ?? "";
$("backend").value = backend;
$("where").value = where;
const status = (text) => ($("status").textContent = text);

async function createEngine() {
  const options = { backend, initProgressCallback: (p) => status(p.text) };
  if (where === "worker") return CreateWebWorkerEngine(null, model, options); // the runtime's own worker script
  // One engine for the app's tabs: the runtime's own shared worker, or a leader tab.
  if (where === "shared") return CreateSharedWorkerEngine(null, model, options);
  if (where === "service-worker") {
    // The app serves kiln-sw.js at its root (vite.config.js copies it there), so that it
    // controls this page.
    await navigator.serviceWorker.register("/kiln-sw.js", { type: "module" });
    return CreateServiceWorkerEngine(model, options);
  }
  return CreateEngine(model, options);
}

async function main() {
  if (!model) return;
  const engine = await createEngine();
  const stats = await engine.runtimeStats();
  status(`Loaded on ${stats.backend}, in ${where}.`);
  document.body.dataset.backend = stats.backend;
  document.body.dataset.threads = String(stats.threads ?? "");
  $("prompt").disabled = $("send").disabled = false;
  const messages = [];
  $("chat").addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = $("prompt").value;
    $("prompt").value = "";
    $("send").disabled = true;
    messages.push({ role: "user", content });
    $("reply").textContent = "";
    delete $("reply").dataset.done;
    let text = "";
    let usage;
    const chunks = await engine.chat.completions.create({
      messages,
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of chunks) {
      text += chunk.choices[0]?.delta.content ?? "";
      usage = chunk.usage ?? usage;
      $("reply").textContent = text;
    }
    messages.push({ role: "assistant", content: text });
    $("reply").dataset.tokens = String(usage?.completion_tokens);
    $("reply").dataset.done = "true";
    status(await engine.runtimeStatsText());
    $("send").disabled = false;
  });
}

main().catch((err) => {
  status(`${err.name}: ${err.message}`);
  document.body.dataset.error = err.name;
});
