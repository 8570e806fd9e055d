// The engine's home: an offscreen document the service worker creates on demand. It loads
// the model packaged in the extension (model/) once and serves every popup over ports.
import { CreateEngine } from "./kiln.js";
import { PORT_NAME } from "./protocol.js";

const MODEL_URL = new URL("model/", location.href).href;

/** @type {Promise<import("./kiln.js").Engine> | null} */
let engine = null;
let loads = 0; // how many times weights were loaded: the model should stay loaded across popups
let progress = null; // the last progress report, for popups that connect while loading
let lastRequest = null; // what the model was last asked, for the user (and the tests) to check
const ports = new Set();

function broadcast(message) {
  for (const port of ports) port.postMessage(message);
}

function loadEngine() {
  if (!engine) {
    loads++;
    engine = CreateEngine(MODEL_URL, {
      // The weights already sit in the extension's folder: a copy in the Cache API would
      // only double the disk space they take.
      useCache: false,
      initProgressCallback: (p) => {
        progress = { progress: p.progress, text: p.text };
        broadcast({ type: "progress", ...progress });
      },
    });
    engine.catch(() => {
      engine = null; // a failed load is tried again by the next "load"
    });
  }
  return engine;
}

function readyMessage(e) {
  return { type: "ready", modelId: e.modelId, contextWindow: e.manifest.context_window };
}

function errorMessage(err, id) {
  return { type: "error", id, name: err?.name ?? "Error", message: String(err?.message ?? err) };
}

/**
 * The user message with the page quoted in it, the page's text cut so that the question and
 * room for the answer fit in the context window (older turns are dropped by truncation).
 */
function withPage(e, question, page, maxTokens) {
  const compose = (text) => `Web page "${page.title}":\n${text}\n\nQuestion: ${question}`;
  const window = e.manifest.context_window;
  const reserve = Math.min(maxTokens, Math.floor(window / 4));
  const fits = (text) => {
    const prompt = e.tokenizer.applyChatTemplate([{ role: "user", content: compose(text) }]);
    return e.tokenizer.encode(prompt).length + reserve < window;
  };
  let [low, high] = [0, page.text.length];
  if (!fits(page.text)) {
    while (low < high) {
      const mid = Math.ceil((low + high) / 2);
      if (fits(page.text.slice(0, mid))) low = mid;
      else high = mid - 1;
    }
    high = low;
  }
  return { content: compose(page.text.slice(0, high)), pageChars: high };
}

async function chat(port, message, controllers) {
  const { id, page } = message;
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    const e = await loadEngine();
    const messages = message.messages.slice();
    let pageChars = 0;
    if (page) {
      const last = messages.pop();
      const quoted = withPage(e, last.content, page, message.max_tokens ?? 256);
      messages.push({ role: "user", content: quoted.content });
      pageChars = quoted.pageChars;
    }
    port.postMessage({ type: "start", id, content: messages.at(-1).content, pageChars });
    const stream = await e.chat.completions.create({
      messages,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: message.max_tokens,
      temperature: message.temperature,
      response_format: message.response_format,
      truncation: "auto",
      signal: controller.signal,
    });
    let finishReason = null;
    let usage = null;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice?.delta.content) port.postMessage({ type: "chunk", id, content: choice.delta.content });
      if (choice?.finish_reason) finishReason = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    lastRequest = { messages, usage };
    port.postMessage({ type: "done", id, finishReason, usage, stats: await e.runtimeStatsText() });
  } catch (err) {
    if (err?.name === "DeviceLostError") engine = null; // the next request loads the model again
    port.postMessage(errorMessage(err, id));
  } finally {
    controllers.delete(id);
  }
}

async function status() {
  const e = await engine?.catch(() => null);
  return {
    type: "status",
    loads,
    loadedModels: e?.loadedModels ?? [],
    weightSources: e?.weightSources ?? {},
    lastRequest,
  };
}

chrome.runtime.onConnect.addListener((port) => {
  if (port.name !== PORT_NAME) return;
  ports.add(port);
  const controllers = new Map(); // request id -> AbortController, this popup's requests
  port.onDisconnect.addListener(() => {
    ports.delete(port);
    // A closed popup cannot show the answer: stop generating it.
    for (const controller of controllers.values()) controller.abort();
  });
  port.onMessage.addListener((message) => {
    switch (message?.type) {
      case "load":
        if (progress && progress.progress < 1) port.postMessage({ type: "progress", ...progress });
        loadEngine().then(
          (e) => port.postMessage(readyMessage(e)),
          (err) => port.postMessage(errorMessage(err)),
        );
        break;
      case "chat":
        chat(port, message, controllers);
        break;
      case "stop":
        controllers.get(message.id)?.abort();
        break;
      case "reset":
        engine?.then((e) => e.resetChat()).catch(() => {});
        break;
      case "status":
        status().then((s) => port.postMessage(s));
        break;
    }
  });
});
