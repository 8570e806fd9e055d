// The chat popup. The engine lives in the offscreen document (offscreen.js); this page only
// talks to it over a port, so closing the popup leaves the model loaded.
//
// popup.html?tab=ID reads tab ID for "Ask about this page" instead of the active tab, for the
// popup opened in a tab of its own. Reading a page still needs the activeTab grant that a
// click on the extension's toolbar button gives for that tab.
import { PORT_NAME } from "./protocol.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_PAGE_QUESTION = "What is this page about?";

/** @type {chrome.runtime.Port | null} */
let port = null;
/** The request in progress: {id, item, text, page}. */
let current = null;
/** {role, content, display}[]: `content` is what the model saw, `display` what the user typed. */
let conversation = [];
let requestCount = 0;

function showProblem(text) {
  $("problem").textContent = text;
  $("problem").hidden = !text;
}

function setBusy(busy) {
  $("send").disabled = busy || !port;
  $("ask-page").disabled = busy || !port;
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

async function ask(withPage) {
  if (current || !port) return;
  showProblem("");
  let question = $("prompt").value.trim();
  if (!question && withPage) question = DEFAULT_PAGE_QUESTION;
  if (!question) return;
  let page = null;
  if (withPage) {
    try {
      page = await readPage();
    } catch (err) {
      showProblem(err.message);
      return;
    }
  }
  const display = page ? `${question}\n(about “${page.title || "this page"}”)` : question;
  conversation.push({ role: "user", content: question, display });
  addItem("user", display);
  $("prompt").value = "";
  const id = `r${Date.now().toString(36)}-${requestCount++}`;
  current = { id, item: addItem("assistant", ""), text: "", page };
  setBusy(true);
  port.postMessage({
    type: "chat",
    id,
    messages: conversation.map(({ role, content }) => ({ role, content })),
    page,
    ...settings(),
  });
}

function finish(aborted) {
  conversation.push({ role: "assistant", content: current.text });
  if (aborted) current.item.classList.add("aborted");
  current = null;
  setBusy(false);
  saveConversation();
}

function onMessage(message) {
  const mine = current && message.id === current.id;
  switch (message.type) {
    case "progress":
      $("loading").hidden = false;
      $("progress").value = message.progress;
      $("status").textContent = message.text;
      break;
    case "ready":
      $("loading").hidden = true;
      $("model").textContent = message.modelId;
      setBusy(Boolean(current));
      break;
    case "start":
      if (!mine) break;
      conversation.at(-1).content = message.content; // the page quoted in it
      if (current.page) {
        const { title, text } = current.page;
        $("page-summary").textContent =
          `${message.pageChars} of ${text.length} characters of “${title}” sent to the model`;
        $("page-text").textContent = text.slice(0, message.pageChars);
        $("page-context").hidden = false;
      }
      break;
    case "chunk":
      if (!mine) break;
      current.text += message.content;
      current.item.textContent = current.text;
      current.item.scrollIntoView({ block: "end" });
      break;
    case "done":
      if (!mine) break;
      $("stats").textContent =
        `${message.usage?.prompt_tokens} prompt tokens, ${message.usage?.completion_tokens} ` +
        `generated. ${message.stats}`;
      finish(message.finishReason === "abort");
      break;
    case "error":
      showProblem(`${message.name}: ${message.message}`);
      if (mine) {
        current.item.remove();
        conversation.pop(); // the question the model could not answer
        current = null;
        setBusy(false);
        saveConversation();
        render();
      } else if (!current) {
        $("loading").hidden = true;
      }
      break;
  }
}

async function start() {
  setBusy(false);
  const saved = await chrome.storage.session.get("conversation");
  conversation = saved.conversation ?? [];
  render();
  const stored = await chrome.storage.local.get(["temperature", "maxTokens"]);
  if (stored.temperature !== undefined) $("temperature").value = stored.temperature;
  if (stored.maxTokens !== undefined) $("max-tokens").value = stored.maxTokens;

  const reply = await chrome.runtime.sendMessage({ type: "ensure-offscreen" });
  if (!reply?.ok) throw new Error(`Could not start the engine: ${reply?.error ?? "no answer"}`);
  port = chrome.runtime.connect({ name: PORT_NAME });
  port.onMessage.addListener(onMessage);
  port.onDisconnect.addListener(() => {
    port = null;
    setBusy(false);
    showProblem("The engine stopped. Close and reopen the popup.");
  });
  port.postMessage({ type: "load" });
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
$("stop").addEventListener("click", () => current && port?.postMessage({ type: "stop", id: current.id }));
$("new-chat").addEventListener("click", () => {
  if (current) {
    port?.postMessage({ type: "stop", id: current.id });
    current = null; // its last messages are ignored
    setBusy(false);
  }
  conversation = [];
  saveConversation();
  showProblem("");
  render();
  $("page-context").hidden = true;
  $("stats").textContent = "";
  port?.postMessage({ type: "reset" });
});

start().catch((err) => showProblem(err.message));
