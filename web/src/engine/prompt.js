// The prompt builder: a request's prompt as token ids, its messages rendered by the chat
// template (tools included) or its text encoded, the oldest turns dropped with truncation
// "auto" so that the reply has room, and checked against the model's context window.
import { usesTools } from "../api/request_tools.js";
import { ContextWindowExceededError, InvalidRequestError } from "../errors.js";
import { yieldToEventLoop } from "../control.js";
import { messagesWithTools, toolCallFormat } from "../text/tool_formats.js";

const now = () => performance.now();
// Truncation lets the event loop run after about this many milliseconds of work, or this many
// tokenizations (of a turn's contents, or of a render of the kept turns), whichever comes first.
const TRUNCATION_YIELD_MS = 10;
const TRUNCATION_YIELD_UNITS = 16;
// Without max_tokens, truncation keeps this share of the context window for the reply.
const REPLY_SHARE = 0.25;

/** The tokens truncation keeps free for the reply: max_tokens, or REPLY_SHARE of the window. */
function replyRoom(window, maxTokens) {
  return Math.min(maxTokens ?? Math.floor(window * REPLY_SHARE), window - 1);
}

/**
 * The prompt of a checked request (`kind` "chat" or "text"), as `promptTokens` makes it; a
 * ContextWindowExceededError where it leaves no room for a reply.
 * @param {import("./model.js").LoadedModel} model
 */
export async function buildPrompt(model, kind, params) {
  const tokens = await promptTokens(model, kind, params);
  if (tokens.length >= model.contextWindow)
    throw new ContextWindowExceededError(tokens.length, model.contextWindow, kind === "chat" ? "messages" : "prompt");
  return tokens;
}

/**
 * The prompt's token ids. With truncation "auto", the oldest turns are dropped (system
 * messages stay) so that the prompt leaves room for the reply (`replyRoom`). The turns kept
 * are counted from the newest back by their contents' tokens, then the kept conversation is
 * rendered, and the count corrected by what the template adds to each turn: a few
 * tokenizations of what is kept, however long the conversation, with the event loop let run
 * between steps. That is short enough to finish when the request is aborted meanwhile (the
 * abort takes effect before the prefill), so an aborted request reports the prompt it made.
 */
async function promptTokens(model, kind, params) {
  const window = model.contextWindow;
  const { tokenizer } = model;
  const budget = window - replyRoom(window, params.max_tokens);
  if (kind === "text") {
    let tokens = typeof params.prompt === "string" ? tokenizer.encodePrompt(params.prompt) : params.prompt.slice();
    if (tokens.length === 0) throw new InvalidRequestError("prompt", "encodes to no tokens");
    if (tokens.length > budget && params.truncate) tokens = tokens.slice(tokens.length - budget);
    return tokens;
  }
  const { messages } = params;
  const tools = usesTools(params) ? params.tools : null;
  if (tools && !tokenizer.supportsTools)
    throw new InvalidRequestError("tools", "this model's chat template has no place for tools: it cannot call them");
  const format = toolCallFormat(model.manifest);
  const render = (list) =>
    tokenizer.encode(tokenizer.applyChatTemplate(messagesWithTools(format, list, tools), true, tools));
  const turns = messages.flatMap((m, i) => (m.role === "system" ? [] : [i]));
  if (!params.truncate || turns.length <= 1) return render(messages);
  let slice = now();
  let units = 0; // tokenizations since the event loop last ran
  const pause = async () => {
    if (++units < TRUNCATION_YIELD_UNITS && now() - slice < TRUNCATION_YIELD_MS) return;
    await yieldToEventLoop();
    [slice, units] = [now(), 0];
  };
  // Each tokenization is followed by a pause.
  const keep = async (count) => {
    const first = turns[turns.length - count];
    const tokens = render(messages.filter((m, i) => m.role === "system" || i >= first));
    await pause();
    return tokens;
  };
  const contentTokens = async (m) => {
    const length = tokenizer.encode(m.content + (m.tool_calls ? JSON.stringify(m.tool_calls) : "")).length;
    await pause();
    return length;
  };
  // The system messages' and the newest turns' contents, until they alone fill the budget.
  let fixed = 0;
  for (const m of messages) if (m.role === "system") fixed += await contentTokens(m);
  const costs = [];
  for (let sum = fixed, k = turns.length - 1; k >= 0 && sum <= budget; k--) {
    costs.push(await contentTokens(messages[turns[k]]));
    sum += costs[costs.length - 1];
  }
  // How many of the newest turns fit with `extra` tokens of template around each.
  const fitting = (extra) => {
    let total = fixed;
    let count = 0;
    while (count < costs.length && total + costs[count] + extra <= budget) total += costs[count++] + extra;
    return Math.max(count, 1);
  };
  let count = fitting(0);
  let tokens = await keep(count);
  for (let round = 0; round < 3; round++) {
    let contents = fixed;
    for (let j = 0; j < count; j++) contents += costs[j];
    const next = fitting(Math.max(0, (tokens.length - contents) / count));
    if (next === count) break;
    [count, tokens] = [next, await keep(next)];
  }
  // What is left of the estimate's error: the template's differences between turns.
  while (tokens.length > budget && count > 1) tokens = await keep(--count);
  while (count < costs.length) {
    const more = await keep(count + 1);
    if (more.length > budget) break;
    [count, tokens] = [count + 1, more];
  }
  return tokens;
}
