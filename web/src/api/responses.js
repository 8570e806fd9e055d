// OpenAI's response objects for the text endpoints (chat completions and the legacy
// completions), whole and streamed, shaped from what the engine generated. The engine runs the
// model; this module only shapes (request.js checks what comes in, embeddings.js does both for
// the embeddings endpoint).
//
// A `job` is one checked request: {kind: "chat" | "text", id, created, model, params, prompt},
// `model` a LoadedModel (its id, vocabulary and tokenizer are read here). A result is one
// choice: {tokens, text, finish, logprobs: [{id, logprob, top: [{id, logprob}]}]}.
import { toolCallFormat } from "../text/tool_formats.js";
import { usesTools } from "./request_tools.js";
import { ToolCallParser, parseReply } from "./tools.js";

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * OpenAI's `usage`, with the request's speeds as `extra`; `prompt_tokens_details.cached_tokens`:
 * the prompt's tokens that were not prefilled, their keys and values taken from the KV cache or
 * the prefix cache (the first choice's).
 */
export function usage(job, results) {
  const completion = results.reduce((sum, r) => sum + r.tokens.length, 0);
  return {
    prompt_tokens: job.prompt.length,
    completion_tokens: completion,
    total_tokens: job.prompt.length + completion,
    extra: job.model.lastStats,
    prompt_tokens_details: { cached_tokens: results[0]?.timing?.cached ?? 0 },
  };
}

/** A chat.completion or text_completion object of all the request's choices. */
export function completionResponse(job, results) {
  const { kind, model, params } = job;
  const head = { id: job.id, object: kind === "chat" ? "chat.completion" : "text_completion", created: job.created };
  if (kind === "chat") {
    return {
      ...head,
      model: model.id,
      choices: results.map((r, index) => {
        const message = usesTools(params) ? parseReply(r.text, toolCallFormat(model.manifest)) : { content: r.text };
        return {
          index,
          message: { role: "assistant", ...message, refusal: null },
          logprobs: params.logprobs ? chatLogprobs(model, r.logprobs) : null,
          finish_reason: message.tool_calls && r.finish === "stop" ? "tool_calls" : r.finish,
        };
      }),
      usage: usage(job, results),
    };
  }
  const echo = params.echo ? promptText(job) : "";
  return {
    ...head,
    model: model.id,
    choices: results.map((r, index) => ({
      text: echo + r.text,
      index,
      logprobs: params.logprobs ? textLogprobs(model, r.logprobs, echo.length) : null,
      finish_reason: r.finish,
    })),
    usage: usage(job, results),
  };
}

/**
 * The streamed form: chat.completion.chunk (or text_completion) objects from the engine's
 * events, `{index, start: true}`, `{index, text, logprob}` and `{index, finish}` per choice;
 * `finalUsage()`, where the request asked for usage, gives the last chunk's.
 * @param {AsyncIterable<object>} events
 * @param {(() => object) | null} finalUsage
 */
export async function* completionChunks(job, events, finalUsage) {
  const { kind, model, params } = job;
  const head = {
    id: job.id,
    object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
    created: job.created,
    model: model.id,
  };
  const chunk = (index, content, logprobs, finish = null) => ({
    ...head,
    choices: [
      kind === "chat"
        ? { index, delta: content, logprobs, finish_reason: finish }
        : { text: content, index, logprobs, finish_reason: finish },
    ],
    ...(finalUsage ? { usage: null } : {}),
  });
  const echo = kind === "text" && params.echo ? promptText(job) : "";
  let text = "";
  let pending = []; // logprobs of tokens whose text has not been sent yet
  const flush = (index) => {
    const logprobs = !params.logprobs
      ? null
      : kind === "chat"
        ? chatLogprobs(model, pending)
        : textLogprobs(model, pending, 0);
    pending = [];
    const out = kind === "chat" ? chunk(index, { content: text }, logprobs) : chunk(index, text, logprobs);
    text = "";
    return out;
  };
  const parsers = kind === "chat" && usesTools(params) ? [] : null; // per choice
  for await (const event of events) {
    if (parsers) {
      // With tools, text and calls arrive as their deltas (tools.js); no logprobs.
      const { index } = event;
      if (event.start) {
        parsers[index] = new ToolCallParser(toolCallFormat(model.manifest));
        yield chunk(index, { role: "assistant", content: "" }, null);
      } else {
        const parser = parsers[index];
        for (const delta of event.finish ? parser.flush() : parser.push(event.text)) yield chunk(index, delta, null);
        if (event.finish) {
          const finish = parser.calls.length && event.finish === "stop" ? "tool_calls" : event.finish;
          yield chunk(index, {}, null, finish);
        }
      }
      continue;
    }
    if (event.start) {
      if (kind === "chat") yield chunk(event.index, { role: "assistant", content: "" }, null);
      else if (echo) yield chunk(event.index, echo, null);
    } else if (event.finish) {
      if (text || pending.length) yield flush(event.index);
      yield kind === "chat" ? chunk(event.index, {}, null, event.finish) : chunk(event.index, "", null, event.finish);
    } else {
      text += event.text;
      if (event.logprob) pending.push(event.logprob);
      if (text) yield flush(event.index);
    }
  }
  if (finalUsage) yield { ...head, choices: [], usage: finalUsage() };
}

function promptText(job) {
  const { params, model } = job;
  return typeof params.prompt === "string" ? params.prompt : model.tokenizer.decode(params.prompt);
}

function tokenInfo(model, id) {
  const bytes = model.vocabulary.bytes(id);
  try {
    return { token: STRICT_UTF8.decode(Uint8Array.from(bytes)), bytes };
  } catch {
    // Part of a character: named by its bytes, as OpenAI does.
    return { token: "bytes:" + bytes.map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join(""), bytes };
  }
}

/** OpenAI's chat `logprobs`: each token with its log probability and the most likely alternatives. */
function chatLogprobs(model, entries) {
  return {
    content: entries.map(({ id, logprob, top }) => ({
      ...tokenInfo(model, id),
      logprob,
      top_logprobs: top.map((t) => ({ ...tokenInfo(model, t.id), logprob: t.logprob })),
    })),
    refusal: null,
  };
}

/** The legacy completions `logprobs`: parallel lists, and character offsets into the text. */
function textLogprobs(model, entries, offset) {
  const tokens = entries.map((e) => tokenInfo(model, e.id).token);
  const textOffset = [];
  for (const token of tokens) {
    textOffset.push(offset);
    offset += token.length;
  }
  return {
    tokens,
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [tokenInfo(model, t.id).token, t.logprob]))),
    text_offset: textOffset,
  };
}
