// The chat popup. The engine lives in the offscreen document (offscreen.js), shared with the
// extension's other pages; this page is one of its clients (engine.js), so closing the popup
// leaves the model loaded, and ends the request it had running.
//
// popup.html?tab=ID reads tab ID for "Ask about this page" instead of the active tab, for the
// popup opened in a tab of its own. Reading a page still needs the activeTab grant that a
// click on the extension's toolbar button gives for that tab.
import { connectEngine } from "./engine.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_PAGE_QUESTION = "What is this page about?";

/** @type {import("./kiln.js").ExtensionEngine | null} */
let engine = null;
/** The request in progress: {controller, item, text}. */
let current = null;
/** {role, content, display}[]: `content` is what the model saw, `display` what the user typed. */
let conversation = [];

function showProblem(text) {
  $("problem").textContent = text;
  $("problem").hidden = !text;
}

function setBusy(busy) {
  $("send").disabled = busy || !engine;
  $("ask-page").disabled = busy || !engine;
  $("stop").hidden = !busy;
}

function addItem(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("log").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function render() {
  $("log").replaceChildren();
  for (const m of conversation) addItem(m.role, m.display ?? m.content);
}

// The conversation outlives the popup (storage.session: until the browser closes), so that
// reopening it carries on where it was.
function saveConversation() {
  return chrome.storage.session.set({ conversation });
}

function settings() {
  const temperature = Number($("temperature").value);
  const maxTokens = Math.max(1, Math.floor(Number($("max-tokens").value) || 256));
  chrome.storage.local.set({ temperature, maxTokens });
  return { temperature, max_tokens: maxTokens };
}

async function readPage() {
  const wanted = Number(params.get("tab"));
  const tabId = wanted || (await chrome.tabs.query({ active: true, currentWindow: true }))[0]?.id;
  if (tabId === undefined) throw new Error("There is no tab to read.");
  let results;
  try {
    results = await chrome.scripting.executeScript({
      target: { tabId },
      func: () => ({ title: document.title, text: document.body?.innerText ?? "" }),
    });
  } catch (err) {
    throw new Error(
      `Cannot read this page (${err.message}). Click the extension's toolbar button on the page ` +
        "to let it read the page; chrome:// and Web Store pages cannot be read.",
    );
  }
  const page = results[0]?.result;
  if (!page?.text.trim()) throw new Error("This page has no text to read.");
  return page;
}

/**
 * The user message with the page quoted in it, the page's text cut so that the question and
 * room for the answer fit in the context window (older turns are dropped by truncation).
 */
function withPage(question, page, maxTokens) {
  const compose = (text) => `Web page "${page.title}":\n${text}\n\nQuestion: ${question}`;
  const window = engine.manifest.context_window;
  const reserve = Math.min(maxTokens, Math.floor(window / 4));
  const fits = (text) => {
    const prompt = engine.tokenizer.applyChatTemplate([{ role: "user", content: compose(text) }]);
    return engine.tokenizer.encode(prompt).length + reserve < window;
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

function showPageSent(page, pageChars) {
  $("page-summary").textContent = `${pageChars} of ${page.text.length} characters of “${page.title}” sent to the model`;
  $("page-text").textContent = page.text.slice(0, pageChars);
  $("page-context").hidden = false;
}

async function ask(withPageText) {
  if (current || !engine) return;
  showProblem("");
  let question = $("prompt").value.trim();
  if (!question && withPageText) question = DEFAULT_PAGE_QUESTION;
  if (!question) return;
  let page = null;
  if (withPageText) {
    try {
      page = await readPage();
    } catch (err) {
      showProblem(err.message);
      return;
    }
  }
  const { temperature, max_tokens } = settings();
  const quoted = page ? withPage(question, page, max_tokens) : null;
  const display = page ? `${question}\n(about “${page.title || "this page"}”)` : question;
  conversation.push({ role: "user", content: quoted?.content ?? question, display });
  addItem("user", display);
  $("prompt").value = "";
  if (page && quoted) showPageSent(page, quoted.pageChars);
  const request = { controller: new AbortController(), item: addItem("assistant", ""), text: "" };
  current = request;
  setBusy(true);
  try {
    const stream = await engine.chat.completions.create({
      messages: conversation.map(({ role, content }) => ({ role, content })),
      stream: true,
      stream_options: { include_usage: true },
      max_tokens,
      temperature,
      truncation: "auto",
      signal: request.controller.signal,
    });
    let finishReason = null;
    let usage = null;
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta.content;
      if (delta && current === request) {
        request.text += delta;
        request.item.textContent = request.text;
        request.item.scrollIntoView({ block: "end" });
      }
      finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
      usage = chunk.usage ?? usage;
    }
    if (current !== request) return; // "New chat" dropped it
    $("stats").textContent =
      `${usage?.prompt_tokens} prompt tokens, ${usage?.completion_tokens} generated. ` +
      (await engine.runtimeStatsText());
    finish(finishReason === "abort");
  } catch (err) {
    if (current !== request) return;
    showProblem(`${err.name}: ${err.message}`);
    request.item.remove();
    conversation.pop(); // the question the model could not answer
    current = null;
    setBusy(false);
    saveConversation();
    render();
  }
}

function finish(aborted) {
  conversation.push({ role: "assistant", content: current.text });
  if (aborted) current.item.classList.add("aborted");
  current = null;
  setBusy(false);
  saveConversation();
}

async function start() {
  setBusy(false);
  const saved = await chrome.storage.session.get("conversation");
  conversation = saved.conversation ?? [];
  render();
  const stored = await chrome.storage.local.get(["temperature", "maxTokens"]);
  if (stored.temperature !== undefined) $("temperature").value = stored.temperature;
  if (stored.maxTokens !== undefined) $("max-tokens").value = stored.maxTokens;

  const loaded = await connectEngine({
    initProgressCallback: (p) => {
      $("loading").hidden = p.progress >= 1;
      $("progress").value = p.progress;
      $("status").textContent = p.text;
    },
  });
  $("loading").hidden = true;
  $("model").textContent = loaded.loadedModels[0] ?? loaded.manifest.model_id;
  loaded.port.onDisconnect.addListener(() => {
    engine = null;
    current?.controller.abort();
    setBusy(false);
    showProblem("The engine stopped. Close and reopen the popup.");
  });
  engine = loaded;
  setBusy(false);
}

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  ask(false);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    ask(false);
  }
});
$("ask-page").addEventListener("click", () => ask(true));
$("stop").addEventListener("click", () => current?.controller.abort());
$("new-chat").addEventListener("click", () => {
  if (current) {
    current.controller.abort();
    current = null; // its last pieces are not shown
    setBusy(false);
  }
  conversation = [];
  saveConversation();
  showProblem("");
  render();
  $("page-context").hidden = true;
  $("stats").textContent = "";
  engine?.resetChat().catch(() => {});
});

start().catch((err) => {
  $("loading").hidden = true;
  showProblem(err.message);
});
