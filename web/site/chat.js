// The chat page: the engine runs in a Web Worker (kiln-worker.js), so the page stays
// responsive while the model loads and generates; replies stream in as Markdown.
import DOMPurify from "dompurify";
import { marked } from "marked";
import { WebWorkerEngine, checkModel, deleteWeightCache } from "./kiln.js";

const $ = (id) => document.getElementById(id);
const state = { engine: null, model: null, ready: false, messages: [], controller: null, loading: false };

/** The chat models built into this folder: models.json, or this folder itself when it is one. */
async function listModels() {
  const listing = await fetch("models.json");
  if (listing.ok) return (await listing.json()).models.filter((m) => m.task !== "embedding");
  const manifest = await fetch("manifest.json");
  if (!manifest.ok) return [];
  const { model_id, quantization, task } = await manifest.json();
  return task === "embedding" ? [] : [{ model_id, path: "./", quantization }];
}

function showProblem(title, text, action = null) {
  $("problem").hidden = false;
  $("problem-title").textContent = title;
  $("problem-text").textContent = text;
  $("problem-action").hidden = !action;
  $("problem-action").onclick = action;
}

function explain(err) {
  if (err.name === "ModelWontFitError") return showProblem("This model will not run here", err.message);
  if (err.name === "WebGPUUnavailableError")
    return showProblem("WebGPU is not available", `${err.message} The model cannot run in this browser.`);
  if (err.name === "DeviceLostError")
    return showProblem("The GPU device was lost", err.message, () => load(state.model));
  showProblem("Something went wrong", err.message, state.model ? () => load(state.model) : null);
}

const megabytes = (bytes) => (bytes / 1e6).toFixed(1);
// ?backend=webgpu or ?backend=wasm picks where the model runs (by default: the runtime's choice).
const backend = () => new URLSearchParams(location.search).get("backend") ?? undefined;
const modelUrl = (model) => new URL(model.path, location.href).href;

/**
 * Beside the model picker, what checkModel says before anything is downloaded: the bytes to
 * download, those already cached, and whether the model fits here or why not.
 */
async function showCheck(model) {
  const fit = $("fit");
  fit.className = "";
  fit.textContent = "Checking…";
  fit.title = "";
  let text, title, verdict;
  try {
    const check = await checkModel(modelUrl(model), { backend: backend() });
    const where = check.backend === "wasm" ? "on the CPU" : `on the GPU, ${check.variant} kernels`;
    const parts = [];
    if (check.download_bytes !== null)
      parts.push(`${megabytes(check.download_bytes)} MB to download`, `${megabytes(check.cached_bytes)} MB cached`);
    parts.push(check.ok ? `fits ${where}` : `will not run here: ${check.reasons[0]}`);
    text = parts.join(" · ");
    const memory = check.memory
      ? [
          `needs ${megabytes(check.memory.total)} MB: weights ${megabytes(check.memory.weights)}`,
          `KV cache ${megabytes(check.memory.kv_cache)} (${check.context_window} tokens)`,
          `activations ${megabytes(check.memory.activations)}`,
        ].join(", ")
      : "";
    title = [memory, ...check.reasons, ...check.warnings].filter(Boolean).join("\n");
    verdict = check.ok ? "fits" : "wont-fit";
  } catch (err) {
    text = `Could not check the model: ${err.message}`;
    verdict = "wont-fit";
  }
  if ($("model").value !== model.model_id) return; // another model was picked meanwhile
  fit.textContent = text;
  fit.title = title ?? "";
  fit.className = verdict;
}

function showProgress(report) {
  $("progress").value = report.progress;
  if (report.total) {
    const parts = [
      `${Math.floor(report.progress * 100)}%`,
      `${megabytes(report.loaded)} / ${megabytes(report.total)} MB`,
    ];
    if (report.bytesPerSecond) parts.push(`${megabytes(report.bytesPerSecond)} MB/s`);
    if (report.secondsLeft != null) parts.push(`${Math.ceil(report.secondsLeft)} s left`);
    $("progress-text").textContent = parts.join(" · ");
  } else {
    $("progress-text").textContent = report.text;
  }
}

function setBusy(generating) {
  const ready = state.ready && !state.loading;
  $("prompt").disabled = !ready;
  $("send").disabled = !ready || generating;
  $("stop").disabled = !generating;
  $("load").disabled = state.loading;
}

async function load(model) {
  state.model = model;
  state.ready = false;
  state.loading = true;
  setBusy(false);
  $("problem").hidden = true;
  $("loading").hidden = false;
  $("progress").value = 0;
  $("status").textContent = `Loading ${model.model_id}…`;
  const url = modelUrl(model);
  try {
    state.engine ??= new WebWorkerEngine(new Worker(new URL("kiln-worker.js", import.meta.url), { type: "module" }));
    await state.engine.reload(url, { initProgressCallback: showProgress, backend: backend() });
    state.ready = true;
    $("status").textContent = `${model.model_id} is ready.`;
    newChat();
    showCheck(model); // its weights are cached now
  } catch (err) {
    $("status").textContent = "";
    state.ready = false;
    explain(err);
  } finally {
    state.loading = false;
    $("loading").hidden = true;
    setBusy(false);
  }
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `message ${role}`;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : role === "assistant" ? state.model.model_id : "Error";
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;
  div.append(label, content);
  $("log").append(div);
  return div;
}

function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(marked.parse(text));
}

function newChat() {
  state.controller?.abort();
  state.messages = [];
  $("log").replaceChildren();
  $("stats").textContent = "";
  state.engine?.resetChat();
}

async function send(text) {
  const system = $("system").value.trim();
  state.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  const content = reply.querySelector(".content");
  state.controller = new AbortController();
  setBusy(true);
  let answer = "";
  try {
    const stream = await state.engine.chat.completions.create({
      messages: system ? [{ role: "system", content: system }, ...state.messages] : state.messages,
      stream: true,
      stream_options: { include_usage: true },
      temperature: Number($("temperature").value),
      top_p: Number($("top-p").value),
      max_tokens: Number($("max-tokens").value),
      signal: state.controller.signal,
      truncation: "auto", // a long conversation drops its oldest turns instead of failing
    });
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice?.delta?.content) {
        answer += choice.delta.content;
        renderMarkdown(content, answer);
      }
      if (choice?.finish_reason === "abort") reply.classList.add("stopped");
      if (chunk.usage) {
        const { extra, completion_tokens } = chunk.usage;
        $("stats").textContent =
          `prefill ${extra.prefill_tokens_per_s.toFixed(1)} tok/s · ` +
          `decode ${extra.decode_tokens_per_s.toFixed(1)} tok/s · ${completion_tokens} tokens · ` +
          (extra.backend === "wasm" ? "on the CPU (WebAssembly)" : "on the GPU (WebGPU)");
      }
    }
    state.messages.push({ role: "assistant", content: answer });
  } catch (err) {
    state.messages.pop();
    reply.remove();
    addMessage("error", err.message);
    if (err.name === "DeviceLostError") {
      state.ready = false;
      explain(err);
    }
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || !state.ready || state.controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => state.controller?.abort());
$("new-chat").addEventListener("click", newChat);
const picked = () => state.models.find((m) => m.model_id === $("model").value);
$("load").addEventListener("click", () => {
  if (picked()) load(picked());
});
$("model").addEventListener("change", () => {
  if (picked()) showCheck(picked());
});
$("clear-cache").addEventListener("click", async () => {
  await deleteWeightCache();
  $("status").textContent = "The weight cache is cleared: the next load downloads the weights again.";
  if (picked()) showCheck(picked());
});

state.models = await listModels();
for (const model of state.models) $("model").append(new Option(model.model_id, model.model_id));
if (!navigator.gpu) {
  showProblem(
    "WebGPU is not available",
    "This browser does not expose WebGPU (navigator.gpu). Use a recent Chrome or Edge, " +
      "or start Chromium with --enable-unsafe-webgpu.",
  );
  setBusy(false);
  $("load").disabled = true;
} else if (state.models.length === 0) {
  showProblem("No model here", "This folder has no models.json or manifest.json: build one with build-web.");
} else {
  const wanted = new URLSearchParams(location.search).get("model");
  const model = state.models.find((m) => m.model_id === wanted) ?? state.models[0];
  $("model").value = model.model_id;
  await showCheck(model);
  load(model);
}
