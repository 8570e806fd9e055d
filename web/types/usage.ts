// Compiled by `npm run typecheck` (never shipped): the declarations in kiln.d.ts must accept
// what README.md shows and type what the engine returns.
import {
  checkModel,
  ChatCompletion,
  ChatCompletionChunk,
  Completion,
  ContextWindowExceededError,
  CreateEngine,
  CreateExtensionEngine,
  CreateSharedWorkerEngine,
  CreateWebWorkerEngine,
  createLanguageModel,
  installLanguageModel,
  Engine,
  EngineInterface,
  ExtensionEngineHandler,
  ExtensionPort,
  InvalidRequestError,
  ModelCheck,
  ModelWontFitError,
  newEngineWorker,
  newSharedEngineWorker,
  SharedEngine,
  Tool,
  WebWorkerEngine,
} from "./kiln.js";

// As an app that installed the package writes it: the runtime finds its own worker script.
export async function inItsOwnWorker(url: string): Promise<Worker> {
  const engine = await CreateWebWorkerEngine(null, url, { backend: "wasm" });
  const other = new WebWorkerEngine(newEngineWorker());
  await other.reload(url);
  return engine.worker;
}

// One engine for every tab: the runtime's own shared worker, or a leader tab.
export async function sharedByTheTabs(url: string): Promise<string> {
  const engine: SharedEngine = await CreateSharedWorkerEngine(null, url, { host: "auto", backend: "webgpu" });
  const inTheirWorker = await CreateSharedWorkerEngine(newSharedEngineWorker(), url, { host: "shared-worker" });
  const reply = await engine.chat.completions.create({ messages: [{ role: "user", content: "Hi" }] });
  return `${engine.host} ${engine.leading} ${inTheirWorker.host} ${reply.choices[0].message.content}`;
}

export async function inAWorker(base: string): Promise<string> {
  const engine: EngineInterface = await CreateWebWorkerEngine(
    new Worker(base + "kiln-worker.js", { type: "module" }),
    base,
    { initProgressCallback: (p) => console.log(p.alreadyLoaded, p.secondsLeft) },
  );
  const reply = await engine.chat.completions.create({ messages: [{ role: "user", content: "Hi" }] });
  const stats = await engine.runtimeStats();
  const threads: number | null = stats.threads;
  return (reply.choices[0].message.content ?? "") + stats.backend + threads + stats.last_request?.decode_tokens_per_s;
}

// The prefix cache: its budget, what a reply says it reused, and what it holds.
export async function withAPrefixCache(url: string): Promise<number> {
  const engine = await CreateEngine(url, {
    prefixCacheBytes: 64 * 2 ** 20,
    prefixCachePersistTokens: 512,
    prefixCacheStorageBytes: 2 ** 30,
  });
  const reply = await engine.chat.completions.create({ messages: [{ role: "user", content: "Hi" }] });
  const held = (await engine.runtimeStats()).prefix_cache;
  return reply.usage.prompt_tokens_details.cached_tokens + (held ? held.entries + held.stored_bytes : 0);
}

export async function example(): Promise<string> {
  const engine = await CreateEngine("tiny", {
    appConfig: { model_list: [{ model_id: "tiny", model: ["/q4f16/", "/q4f32/"] }] },
    initProgressCallback: (p) => console.log(p.progress, p.text),
    backend: "auto",
    threads: 2,
  });
  const reply: ChatCompletion = await engine.chat.completions.create({
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hello!" },
    ],
    max_tokens: 64,
    temperature: 0.7,
    stop: ["\n\n"],
    logprobs: true,
    top_logprobs: 2,
    response_format: { type: "json_schema", json_schema: { name: "a", schema: { type: "object" } } },
  });
  const controller = new AbortController();
  const stream: AsyncIterable<ChatCompletionChunk> = await engine.chat.completions.create({
    messages: [{ role: "user", content: "Hi" }],
    stream: true,
    stream_options: { include_usage: true },
    signal: controller.signal,
    prefillProgressCallback: ({ progress, prefilled, total }) => console.log(progress, `${prefilled}/${total}`),
  });
  let text = reply.choices[0].message.content;
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
  const completion: Completion = await engine.completions.create({ prompt: "Once", max_tokens: 8, echo: true });
  try {
    await engine.chat.completions.create({ messages: [], n: 2 });
  } catch (err) {
    if (err instanceof InvalidRequestError) text += err.param;
    if (err instanceof ContextWindowExceededError) text += err.code;
  }
  await engine.resetChat();
  return text + completion.choices[0].text + (await engine.runtimeStatsText());
}

export async function embeddings(chat: string, encoder: string): Promise<number> {
  const engine = await CreateEngine([chat, encoder]);
  const notes = ["Buy milk", "The train leaves at nine"];
  const { data, usage } = await engine.embeddings.create({ model: encoder, input: notes });
  const packed = await engine.embeddings.create({ input: "When is the train?", encoding_format: "base64" });
  const first = data[0].embedding as number[];
  return first.length + usage.total_tokens + (packed.data[0].embedding as string).length;
}

export async function tools(engine: EngineInterface): Promise<string> {
  const weather: Tool = {
    type: "function",
    function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } },
  };
  const reply = await engine.chat.completions.create({
    messages: [{ role: "user", content: "Weather in Paris?" }],
    tools: [weather],
    tool_choice: "required",
  });
  const call = reply.choices[0].message.tool_calls?.[0];
  if (!call) return reply.choices[0].message.content ?? "";
  const answer = await engine.chat.completions.create({
    messages: [
      { role: "user", content: "Weather in Paris?" },
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", tool_call_id: call.id, content: "18 degrees" },
    ],
    tools: [weather],
  });
  return answer.choices[0].finish_reason === "tool_calls" ? call.function.arguments : "";
}

export async function tooling(engine: Engine): Promise<number> {
  const ids = engine.tokenizer?.encode(engine.tokenizer.applyChatTemplate([{ role: "user", content: "Hi" }])) ?? [];
  const logits: Float32Array = await engine.forwardLogits(ids);
  const run = await engine.generate(ids, { temperature: 0, max_tokens: 4, ignore_eos: true });
  const steps = await engine.profileDecode(ids);
  const launches = await engine.profilePrefill(ids);
  return (
    logits.length +
    run.tokens.length +
    run.stats.decode_tokens_per_s +
    steps.length +
    launches.length +
    (engine.manifest?.context_window ?? 0)
  );
}

export async function beforeDownloading(url: string): Promise<string> {
  const check: ModelCheck = await checkModel(url, { backend: "auto", contextWindow: 2048 });
  if (!check.ok) return `${check.reasons.join("; ")} (fits: ${check.fitting_context_window ?? "none"})`;
  try {
    await CreateEngine(url);
  } catch (err) {
    if (err instanceof ModelWontFitError) return err.check?.reasons.join("; ") ?? err.message;
  }
  return `${check.download_bytes} to download, ${check.cached_bytes} cached, ${check.memory?.total} bytes in all`;
}

// The Prompt API's shape, as README.md shows it.
export async function promptApi(url: string): Promise<string> {
  const LanguageModel = installLanguageModel(url, { backend: "wasm" });
  if ((await LanguageModel.availability()) === "unavailable") return "";
  const session = await LanguageModel.create({
    initialPrompts: [{ role: "system", content: "Answer in one sentence." }],
    monitor: (m) => m.addEventListener("downloadprogress", (e) => console.log(e.loaded)),
  });
  let text = "";
  for await (const chunk of session.promptStreaming("What is WebGPU?")) text += chunk;
  const bound = createLanguageModel(await CreateEngine(url), {});
  const twin = await (await bound.create({ topK: 1 })).clone();
  const json = await twin.prompt("Rate it.", { responseConstraint: { type: "object" } });
  return text + json + twin.contextUsage + "/" + twin.contextWindow;
}

// A Chrome extension's one engine: held by its offscreen document, reached by its pages over
// ports; the Prompt API over it.
export function holdTheExtensionsEngine(onConnect: (listener: (port: ExtensionPort) => void) => void): void {
  const handler = new ExtensionEngineHandler();
  onConnect((port) => handler.serve(port));
}

export async function fromAnExtensionPage(port: ExtensionPort, url: string): Promise<string> {
  const engine = await CreateExtensionEngine(port, url, { useCache: false });
  const window = engine.manifest?.context_window ?? 0;
  const LanguageModel = createLanguageModel(url, {
    createEngine: (model, options) => CreateExtensionEngine(port, model, options),
  });
  const session = await LanguageModel.create({ temperature: 0 });
  return (await session.prompt("Hi")) + window + engine.tokenizer?.encode("Hi").length;
}
