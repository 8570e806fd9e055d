// A request's speeds (the `last_request` of engine.runtimeStats), and the line
// runtimeStatsText gives for them and where the model runs.

/** Speeds over the choices of one request, and where it ran ("webgpu" or "wasm"). */
export function requestStats(timings, backend) {
  const first = timings[0];
  const steps = timings.reduce((s, t) => s + t.decodeSteps, 0);
  const ms = timings.reduce((s, t) => s + t.decodeMs, 0);
  const hostMs = timings.reduce((s, t) => s + (t.hostMs ?? 0), 0);
  return {
    prefill_tokens: first.prefilled,
    prefill_tokens_per_s: first.prefillMs > 0 ? first.prefilled / (first.prefillMs / 1000) : 0,
    decode_tokens_per_s: steps > 0 ? steps / (ms / 1000) : 0,
    time_to_first_token_s: first.prefillMs / 1000,
    // The page's own work per decoded token: the decode loop's time less its waits for the
    // model's steps and for a stream's reader (sampling in JS, grammar, detokenizing).
    host_ms_per_token: steps > 0 ? hostMs / steps : 0,
    // Prompt-lookup speculation: verify steps run, draft tokens checked, and those kept.
    speculation: {
      verify_steps: timings.reduce((s, t) => s + (t.speculation?.steps ?? 0), 0),
      draft_tokens: timings.reduce((s, t) => s + (t.speculation?.drafted ?? 0), 0),
      accepted_tokens: timings.reduce((s, t) => s + (t.speculation?.accepted ?? 0), 0),
    },
    backend,
  };
}

/**
 * The last request's speeds and where the model runs, from its runtime stats, as a line, e.g.
 * "prefill: 11.5 tok/s, decode: 4.2 tok/s, backend: webgpu (software kernels)".
 */
export function statsText(stats) {
  const last = stats.last_request;
  const where =
    stats.backend === "wasm" ? `backend: wasm (CPU, ${cpuText(stats)})` : `backend: webgpu (${stats.variant} kernels)`;
  if (!last) return `prefill: no request yet, decode: no request yet, ${where}`;
  return (
    `prefill: ${last.prefill_tokens_per_s.toFixed(1)} tok/s, ` +
    `decode: ${last.decode_tokens_per_s.toFixed(1)} tok/s, ${where}`
  );
}

function cpuText({ threads, cross_origin_isolated }) {
  if (threads > 1) return `${threads} threads`;
  return cross_origin_isolated ? "1 thread" : "1 thread: the page is not cross-origin isolated";
}
