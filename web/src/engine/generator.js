// The generator: the loop that prefills a prompt and decodes a reply token by token, each token
// drawn from logits the request's penalties, bias and grammar (structured output, tool calls)
// have shaped, the reply cut at a stop string, an end-of-sequence token or max_tokens, with its
// logprobs; and a request's n choices, run one after another. A request that does not read the
// logits has its tokens picked on the device (the build's argmax, or its sample for a sampled
// request, from the same random numbers as the JS sampler would take), its penalties, biases
// and grammar mask applied there first (the build's edit). Where the reply may repeat what
// came before, draft tokens looked up in the prompt and reply are checked in one step
// (prompt_lookup.js), and kept as far as the model agrees with them.
import { usesTools } from "../api/request_tools.js";
import { ContextWindowExceededError } from "../errors.js";
import { GrammarEngine } from "../text/grammar.js";
import { StopStrings } from "../text/stop.js";
import { StreamDecoder } from "../text/tokenizer.js";
import { markerTokens, toolCallFormat } from "../text/tool_formats.js";
import { LogitsProcessor, editRows, logSoftmax, topK } from "./logits.js";
import { DraftPolicy, lookupDraft } from "./prompt_lookup.js";
import { GREEDY } from "../backends/plans.js";
import { drawParams, isGreedy, makeRandom, sample, sampleDraft } from "./sampler.js";
import { requestStats } from "./stats.js";

const now = () => performance.now();

/**
 * One completion of `prompt`: the loop of sampling and decoding, with every request field
 * applied. Calls `onToken(id, textDelta, logprob)` for each token, awaiting what it returns
 * (the caller sets the pace), and once more with a null id for the text held back to the end.
 * @param {import("./model.js").LoadedModel} model
 * @param {number[]} prompt
 * @param {object} params  a checked request's fields (api/request.js)
 * @param {ReturnType<typeof makeRandom>} random  makeRandom's source
 * @param {import("../control.js").Control} control  ends it early, with finish "abort"
 * @param {(id: number | null, text: string, logprob: object | null) => unknown} [onToken]
 * @returns {Promise<{tokens: number[], text: string, finish: string, logprobs: object[], timing: object}>}
 */
export async function generateCompletion(model, prompt, params, random, control, onToken) {
  const window = model.contextWindow;
  if (prompt.length >= window) throw new ContextWindowExceededError(prompt.length, window, "prompt");
  if (control.aborted) {
    const timing = { prefilled: 0, cached: 0, prefillMs: 0, decodeSteps: 0, decodeMs: 0 };
    return { tokens: [], text: "", finish: "abort", logprobs: [], timing };
  }
  const processor = new LogitsProcessor(params, prompt);
  const grammar = () => grammarOf(model);
  const mask = params.response_format
    ? await grammar().matcher(params.response_format)
    : usesTools(params)
      ? await grammar().toolMatcher(toolCallFormat(model.manifest), params.tools, params.toolChoice, params.parallel)
      : null;
  const stops = new StopStrings(params.stop ?? []);
  const eos = new Set(model.manifest.eos_token_ids);
  const decoder = new StreamDecoder(model.tokenizer, usesTools(params) ? toolMarkers(model) : undefined);
  const maxTokens = params.max_tokens ?? Infinity;
  const topLogprobs = params.top_logprobs ?? 0;
  const tokens = [];
  const logprobs = [];
  let text = "";
  let finish = "length";
  try {
    // Speculation, where the model can verify drafts and nothing reads or shapes the logits
    // (logprobs, structured output and tools, penalties and biases keep it off for now): a
    // sampled request's verify step reads back the logits of every draft token (a greedy one's
    // only their tokens, picked on the device), and the steps are not queued ahead.
    const speculation =
      model.speculation && model.hasVerify && !params.logprobs && !mask && !processor.changesLogits
        ? model.speculation
        : null;
    // A step picks its token where the logits are (greedy, or drawn from a random number taken
    // as the step is submitted, in the tokens' order) and reads back the id alone, or with
    // logprobs the token's and the likeliest tokens' too (where the build computes them).
    // Penalties, biases and a grammar's mask are applied there first (edit), where the
    // request's edits, one per token touched, stay within the build's bound however long the
    // reply grows.
    const greedy = isGreedy(params);
    const vocab = model.manifest.config.vocab_size;
    const shapes = Boolean(mask) || processor.changesLogits;
    const growth = Math.min(maxTokens, window - prompt.length);
    const editable = !shapes || processor.edits().length + growth <= model.maxEdits;
    const canPick = (!params.logprobs || model.hasLogprobs) && editable && (greedy ? model.hasArgmax : model.hasSample);
    const scoring = Boolean(params.logprobs) && canPick; // each pick comes with its logprobs
    // The edits of the next step: from the tokens accepted so far, the grammar's next mask.
    const edit = async () =>
      shapes
        ? { rows: editRows(processor.edits(), Boolean(mask)), mask: mask ? await mask.bitmask(vocab) : null }
        : null;
    const drawn = () => {
      if (greedy) return { pick: GREEDY, u: null };
      const u = random();
      return { pick: drawParams(params, vocab, () => u), u };
    };
    // Without speculation, every step picks so; where the steps queue on a GPU, the step after
    // the next is submitted before the next's token is read (it takes that token on the
    // device), so that the GPU does not wait for the page between steps; a step past a stop is
    // then discarded, and its random number put back. Not where the logits are edited: each
    // step's edits follow from the token before.
    const picking = !speculation && canPick;
    const lead = picking && model.queuesSteps && !shapes ? 1 : 0;
    let rows = null; // a verify step's logits (or tokens), and the draft token each row was checked against
    let row = 0; // the next of them to use
    let draftToken = null; // the draft token guessed for the token picked from `logits`
    // Whether the next token was picked on the device (`picked`), not from `logits`: every
    // step's when picking; with speculation, the prefill's and the steps' that checked no draft.
    const draftlessOnDevice = Boolean(speculation) && canPick;
    // and a greedy request's verify steps pick each row's token there too, reading back the ids.
    const verifyOnDevice = draftlessOnDevice && greedy && model.hasVerifyArgmax;
    let onDevice = picking || draftlessOnDevice;
    const spec = { drafted: 0, accepted: 0, steps: 0 };
    // How much of each draft found to check: from the steps' times and the drafts kept so far
    // (adaptive), or all of it.
    const policy = speculation?.adaptive ? new DraftPolicy() : null;
    let drafting = null; // the draft being checked: its length, how many were kept, its step's time
    // Decode steps submitted and not read: each its `out`, the next's logits or token, and the
    // random number it drew (`u`, where it draws).
    const steps = [];
    let submitted = 0; // decode steps submitted: step j decodes tokens[j]
    let read = 0; // decode steps read back
    // Submits the decode steps up to that of tokens[last] within max_tokens and the window.
    const submitUpTo = async (last) => {
      for (; submitted <= last && submitted + 1 < maxTokens && prompt.length + submitted + 1 < window; submitted++) {
        const known = submitted < tokens.length ? tokens[submitted] : null;
        const { pick, u } = picking ? drawn() : { pick: null, u: null };
        const edits = picking && shapes ? await edit() : null;
        steps.push({ out: model.decode(known, control, { pick, edit: edits, logprobs: scoring }), u });
      }
    };
    // Time the decode loop spends waiting for the model's steps and for a stream's reader; the
    // rest is the page's own work (sampling in JS, grammar, detokenizing, stop strings).
    let waited = 0;
    const waiting = async (promise) => {
      const start = now();
      try {
        return await promise;
      } finally {
        waited += now() - start;
      }
    };
    const t0 = now();
    const first = await model.prefill(prompt, control, params.prefillProgressCallback, {
      pick: onDevice ? drawn().pick : null,
      edit: onDevice ? await edit() : null,
      logprobs: scoring,
    });
    const { prefilled, reused: cached } = first;
    let { logits, token: picked } = first;
    const t1 = now();
    try {
      for (;;) {
        if (control.aborted || (onDevice ? picked === null : logits === null)) {
          finish = "abort";
          break;
        }
        let token = picked;
        let scores = null; // the logprobs picked with it, on the device
        if (onDevice && scoring) ({ token, logprobs: scores } = picked);
        if (!onDevice) {
          processor.apply(logits);
          if (mask) await mask.apply(logits);
          token =
            draftToken === null ? sample(logits, params, random) : sampleDraft(logits, params, random, draftToken);
        }
        if (draftToken !== null) {
          if (token === draftToken) {
            spec.accepted++;
            drafting.kept++;
          } else {
            // The rest of the draft is rejected: the cache keeps what the reply holds so far.
            rows = null;
            model.rewind(prompt.length + tokens.length);
          }
        }
        if (eos.has(token) && !params.ignore_eos) {
          finish = "stop";
          break;
        }
        tokens.push(token);
        processor.accept(token);
        mask?.accept(token);
        let entry = null;
        if (scores) {
          entry = { id: token, logprob: scores.logprob, top: scores.top.slice(0, topLogprobs) };
          logprobs.push(entry);
        } else if (params.logprobs) {
          const lp = logSoftmax(logits);
          entry = {
            id: token,
            logprob: lp[token],
            top: topK(lp, topLogprobs)
              .filter((id) => Number.isFinite(lp[id]))
              .map((id) => ({ id, logprob: lp[id] })),
          };
          logprobs.push(entry);
        }
        const delta = stops.push(decoder.push(token));
        text += delta;
        const stopping = stops.stopped || mask?.terminated;
        if (!stopping && !speculation) await submitUpTo(tokens.length - 1 + lead); // the GPU works while the reader reads
        await waiting(onToken?.(token, delta, entry)); // a stream's reader sets the pace
        if (stopping) {
          finish = "stop";
          break;
        }
        if (speculation) {
          if (!rows) {
            // Up to the draft whose every row's token stays within max_tokens and the window.
            const room = Math.min(maxTokens - tokens.length, window - prompt.length - tokens.length) - 1;
            if (room < 0) break; // max_tokens or the context window
            if (drafting) {
              policy?.verified(drafting.length, drafting.kept, drafting.ms);
              drafting = null;
            }
            const limit = Math.min(speculation.draftTokens, model.maxDraft, room);
            const found = limit > 0 ? lookupDraft(prompt.concat(tokens), { ...speculation, draftTokens: limit }) : [];
            const draft = policy ? found.slice(0, policy.size(found.length)) : found;
            const started = now();
            if (draft.length > 0) {
              const out = await waiting(model.verify(token, draft, control, { argmax: verifyOnDevice }));
              if (out === null) {
                onDevice = false;
                logits = null;
                continue;
              }
              spec.steps++;
              spec.drafted += draft.length;
              drafting = { length: draft.length, kept: 0, ms: now() - started };
              const vocab = model.manifest.config.vocab_size;
              rows = draft
                .concat([null])
                .map((d, i) =>
                  verifyOnDevice
                    ? { token: out[i], draft: d }
                    : { logits: out.subarray(i * vocab, (i + 1) * vocab), draft: d },
                );
              row = 0;
            } else {
              const out = await waiting(
                model.decode(token, control, { pick: draftlessOnDevice ? drawn().pick : null }),
              );
              policy?.stepped(now() - started);
              if (draftlessOnDevice) picked = out;
              else logits = out;
              onDevice = draftlessOnDevice;
              draftToken = null;
              continue;
            }
          }
          const next = rows[row++];
          onDevice = next.logits === undefined;
          if (onDevice) picked = next.token;
          else logits = next.logits;
          draftToken = next.draft;
          if (row === rows.length) rows = null;
          continue;
        }
        await submitUpTo(tokens.length - 1);
        if (steps.length === 0) break; // max_tokens or the context window
        const out = await waiting(steps.shift().out);
        if (out !== null) read++;
        if (picking) picked = out;
        else logits = out;
      }
    } finally {
      for (const step of steps) step.out.catch(() => {}); // discarded
      random.putBack(steps.flatMap((step) => (step.u === null ? [] : [step.u])));
      // The cache holds the prompt's chunks that ran (all of them unless the prefill was
      // aborted) and the tokens of the steps read back; a step discarded (or aborted) may have
      // written its row, which the next prefill writes again.
      if (picking) {
        const kept = Math.min(model.cachedTokens.length, prompt.length + read);
        model.cachedTokens = prompt.concat(tokens).slice(0, kept);
      }
    }
    // Text held back (an unfinished character or a possible stop string) is released.
    const rest = stops.push(decoder.rest()) + stops.flush();
    if (rest) {
      text += rest;
      onToken?.(null, rest, null);
    }
    const t2 = now();
    const timing = {
      prefilled,
      cached,
      prefillMs: t1 - t0,
      decodeSteps: Math.max(tokens.length - 1, 0),
      decodeMs: t2 - t1,
      hostMs: t2 - t1 - waited,
      speculation: spec,
    };
    model.lastStats = requestStats([timing], model.backend);
    return { tokens, text, finish, logprobs, timing };
  } finally {
    mask?.dispose();
  }
}

/** The model's grammar engine, made on its first structured-output request. */
function grammarOf(model) {
  const { config, eos_token_ids } = model.manifest;
  model.grammar ??= new GrammarEngine(model.vocabulary, config.vocab_size, eos_token_ids, toolMarkers(model));
  return model.grammar;
}

/** The special tokens the model writes its tool calls with (tool_formats.js). */
function toolMarkers(model) {
  model.toolMarkers ??= markerTokens(toolCallFormat(model.manifest), model.vocabulary);
  return model.toolMarkers;
}

/** Runs the request's n choices one after another (the prompt stays in the KV cache). */
export async function runChoices(job, emit = undefined) {
  const { model, params, prompt, control } = job;
  model.usable();
  const random = makeRandom(params.seed);
  const results = [];
  for (let index = 0; index < params.n; index++) {
    emit?.({ index, start: true });
    const result = await generateCompletion(model, prompt, params, random, control, (token, text, logprob) =>
      emit?.({ index, text, logprob }),
    );
    results.push(result);
    emit?.({ index, finish: result.finish });
  }
  model.lastStats = requestStats(
    results.map((r) => r.timing),
    model.backend,
  );
  return results;
}
