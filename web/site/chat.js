// The chat page: the engine runs in a Web Worker (kiln-worker.js), so the page stays
// responsive while the model loads and generates; replies stream in as Markdown.
import DOMPurify from "dompurify";
import { marked } from "marked";
import { WebWorkerEngine, deleteWeightCache } from "./kiln.js";

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
  if (err.name === "WebGPUUnavailableError")
    return showProblem("WebGPU is not available", `${err.message} The model cannot run in this browser.`);
  if (err.name === "DeviceLostError")
    return showProblem("The GPU device was lost", err.message, () => load(state.model));
  showProblem("Something went wrong", err.message, state.model ? () => load(state.model) : null);
}

const megabytes = (bytes) => (bytes / 1e6).toFixed(1);

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
  const url = new URL(model.path, location.href).href;
  try {
    state.engine ??= new WebWorkerEngine(new Worker(new URL("kiln-worker.js", import.meta.url), { type: "module" }));
    // ?backend=webgpu or ?backend=wasm picks where the model runs (by default: the runtime's choice).
    const backend = new URLSearchParams(location.search).get("backend") ?? undefined;
    await state.engine.reload(url, { initProgressCallback: showProgress, backend });
    state.ready = true;
    $("status").textContent = `${model.model_id} is ready.`;
    newChat();
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
$("load").addEventListener("click", () => {
  const model = state.models.find((m) => m.model_id === $("model").value);
  if (model) load(model);
});
$("clear-cache").addEventListener("click", async () => {
  await deleteWeightCache();
  $("status").textContent = "The weight cache is cleared: the next load downloads the weights again.";
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
  load(model);
}
