// The messages between the popup and the offscreen document, over a chrome.runtime port
// named PORT_NAME (one port per open popup; closing the popup aborts its requests).
//
// popup -> offscreen
//   {type: "load"}                          load the packaged model unless it is loaded
//   {type: "chat", id, messages, page?, max_tokens?, temperature?, response_format?}
//       `page` ({title, text}) is quoted in the last user message, cut to fit the context
//       window; `messages` is the conversation so far, ending with the user's question
//   {type: "stop", id}                      abort request `id`
//   {type: "reset"}                         forget the conversation held in the KV cache
//   {type: "status"}                        answered with a "status" message
// offscreen -> popup
//   {type: "progress", progress, text}      while the model loads
//   {type: "ready", modelId, contextWindow}
//   {type: "start", id, content, pageChars} the user message as sent (the page quoted in it)
//   {type: "chunk", id, content}            one per streamed piece of the answer
//   {type: "done", id, finishReason, usage, stats}
//   {type: "error", id?, name, message}
//   {type: "status", loads, loadedModels, weightSources, lastRequest}

export const PORT_NAME = "kiln-chat";
