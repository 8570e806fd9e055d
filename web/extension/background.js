// The extension's service worker: it only creates the offscreen document that holds the
// engine. Chrome stops idle service workers after 30 s, which would drop a loaded model;
// an offscreen document lives until the browser closes or the extension closes it.

const OFFSCREEN_URL = "offscreen.html";
let creating = null; // one creation at a time: two popups may ask at once

async function ensureOffscreen() {
  const documentUrl = chrome.runtime.getURL(OFFSCREEN_URL);
  const existing = await chrome.runtime.getContexts({
    contextTypes: ["OFFSCREEN_DOCUMENT"],
    documentUrls: [documentUrl],
  });
  if (existing.length > 0) return;
  creating ??= chrome.offscreen
    .createDocument({
      url: OFFSCREEN_URL,
      reasons: ["WORKERS"],
      justification: "Runs the language model on WebGPU so it stays loaded while the popup is closed.",
    })
    .finally(() => {
      creating = null;
    });
  // Resolves once the document has loaded, so its port listener is in place.
  await creating;
}

chrome.runtime.onMessage.addListener((message, _sender, sendResponse) => {
  if (message?.type !== "ensure-offscreen") return false;
  ensureOffscreen().then(
    () => sendResponse({ ok: true }),
    (err) => sendResponse({ ok: false, error: String(err?.message ?? err) }),
  );
  return true; // answers asynchronously
});
