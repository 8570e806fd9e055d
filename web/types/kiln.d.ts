// Type declarations of the runtime: kiln.js beside each model folder, and the npm package kiln-web.

export interface InitProgressReport {
  /** 0 to 1 */
  progress: number;
  text: string;
  timeElapsed?: number;
  /** bytes of weights loaded so far, and in all */
  loaded?: number;
  total?: number;
  bytesPerSecond?: number;
  secondsLeft?: number | null;
  /** a worker engine found the model already loaded (no weights were loaded again) */
  alreadyLoaded?: boolean;
}

export interface ModelRecord {
  /** the name requests give in `model` */
  model_id: string;
  /** a folder written by build-web, or several builds of one model in order of preference */
  model: string | string[];
  /** a Jinja chat template to use instead of the model's own (say, one that renders tools) */
  chat_template?: string;
}

export interface AppConfig {
  model_list: ModelRecord[];
}

export interface EngineOptions {
  initProgressCallback?: (report: InitProgressReport) => void;
  appConfig?: AppConfig;
  /** overrides the kernel set chosen from the adapter */
  variant?: "software" | "gpu";
  /**
   * "wasm" runs on the CPU (WebAssembly), "webgpu" on the GPU; "auto" (the default) takes
   * WebGPU where the browser has it
   */
  backend?: "auto" | "webgpu" | "wasm";
  /** the CPU backend's threads at most (default: one per core, where the page may start them) */
  threads?: number;
  /** false keeps weights out of the browser's Cache API store (default true) */
  useCache?: boolean;
  /**
   * bytes of memory (GPU buffers, or JS memory on the CPU backend) the prefix cache's KV
   * snapshots of earlier prompts may take, least recently used out first (default 128 MiB; 0
   * turns prefix caching off, stored prefixes included)
   */
  prefixCacheBytes?: number;
  /**
   * prompts of this many tokens or more have their KV rows stored in the browser's storage
   * (OPFS) for later page loads (default 256; 0 stores none)
   */
  prefixCachePersistTokens?: number;
  /** bytes of the browser's storage the stored prefixes may take (default 512 MiB) */
  prefixCacheStorageBytes?: number;
  /**
   * prompt-lookup speculation: draft tokens looked up in the prompt and reply, checked in one
   * step and kept as far as the model agrees (replies are those of plain decoding). On by
   * default on the CPU backend; true or options turn it on, false off
   */
  speculation?: boolean | SpeculationOptions;
  /**
   * false reads every step's logits back to the page and picks its token (and logprobs) there,
   * as where the build cannot pick on the device: the reference the device's picks are checked
   * against (default true)
   */
  devicePicks?: boolean;
}

export interface SpeculationOptions {
  /** the longest draft (default 15; a build's verify step takes 15 at most) */
  draftTokens?: number;
  /** the shortest n-gram ending the text that is looked up earlier in it (default 3) */
  minMatch?: number;
  /** the longest (default 4; the longest one found wins, its latest occurrence) */
  maxMatch?: number;
  /**
   * each draft's length chosen from what the request's verify steps have cost and kept, none
   * checked where checking would not pay (default true); false checks every draft found whole
   */
  adaptive?: boolean;
}

export type Role = "system" | "developer" | "user" | "assistant" | "tool";

export interface ToolCall {
  id: string;
  type: "function";
  /** `arguments`: the JSON text of an object */
  function: { name: string; arguments: string };
}

export interface ChatMessage {
  role: Role;
  content: string | { type: "text"; text: string }[] | null;
  /** an assistant message's calls */
  tool_calls?: ToolCall[];
  /** a tool message's answer to this call */
  tool_call_id?: string;
}

export interface Tool {
  type: "function";
  function: { name: string; description?: string; parameters?: object; strict?: boolean };
}

export type ToolChoice = "none" | "auto" | "required" | { type: "function"; function: { name: string } };

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object"; schema?: string | object }
  | { type: "json_schema"; json_schema: { name: string; schema: object; strict?: boolean; description?: string } };

/** A report of a request's prefill, after each chunk of the prompt it runs through the model. */
export interface PrefillProgressReport {
  /** 0 to 1 */
  progress: number;
  /** the prompt's tokens prefilled so far, of the `total` not already in the KV cache */
  prefilled: number;
  total: number;
}

interface SamplingFields {
  model?: string;
  stream?: boolean;
  stream_options?: { include_usage?: boolean } | null;
  /** 1 or more */
  max_tokens?: number | null;
  /** 0 to 2; 0 is greedy */
  temperature?: number | null;
  /** 0 to 1 */
  top_p?: number | null;
  /** 0 or more: sampling keeps the top_k most likely tokens (1 is greedy; 0, the default, keeps all) */
  top_k?: number | null;
  stop?: string | string[] | null;
  /** an integer from -9007199254740991 to 9007199254740991 (JavaScript's safe integers) */
  seed?: number | null;
  /** -2 to 2 */
  frequency_penalty?: number | null;
  /** -2 to 2 */
  presence_penalty?: number | null;
  /** greater than 0; 1 is none */
  repetition_penalty?: number | null;
  /** token id to a bias from -100 to 100 */
  logit_bias?: Record<string, number> | null;
  /** 1 to 128 */
  n?: number | null;
  signal?: AbortSignal;
  /**
   * called after each chunk of the prompt's prefill (a long prompt's wait, for a progress bar);
   * behind a worker, its reports come as messages
   */
  prefillProgressCallback?: (report: PrefillProgressReport) => void;
  response_format?: ResponseFormat;
  /** "auto" drops the oldest turns when the prompt exceeds the context window */
  truncation?: "auto" | "disabled";
  ignore_eos?: boolean;
  /** accepted, without effect (it concerns a hosted service) */
  user?: string;
  /** accepted, without effect (it concerns a hosted service) */
  store?: boolean | null;
  /** accepted, without effect (it concerns a hosted service) */
  metadata?: Record<string, string> | null;
  /** accepted, without effect (it concerns a hosted service) */
  service_tier?: string | null;
}

export interface ChatCompletionRequest extends SamplingFields {
  messages: ChatMessage[];
  tools?: Tool[] | null;
  tool_choice?: ToolChoice | null;
  /** false: at most one call a reply */
  parallel_tool_calls?: boolean | null;
  /** 1 or more */
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  /** 0 to 20 */
  top_logprobs?: number | null;
}

export interface CompletionRequest extends SamplingFields {
  prompt: string | number[] | [string] | [number[]];
  echo?: boolean | null;
  /** 0 to 5 */
  logprobs?: number | null;
  /** only n (the default) */
  best_of?: number | null;
}

export type FinishReason = "stop" | "length" | "tool_calls" | "abort";

export interface RequestStats {
  /** prompt tokens not already in the KV cache */
  prefill_tokens: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  time_to_first_token_s: number;
  /**
   * the page's own work per decoded token, in milliseconds: the decode loop's time less its
   * waits for the model's steps and for a stream's reader
   */
  host_ms_per_token: number;
  /**
   * prompt-lookup speculation: the verify steps run, the draft tokens they checked, and those
   * kept (all 0 where it was off)
   */
  speculation: { verify_steps: number; draft_tokens: number; accepted_tokens: number };
  /** where the request ran: on the GPU, or on the CPU (WebAssembly) */
  backend: "webgpu" | "wasm";
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** `cached_tokens`: the prompt's tokens not prefilled (their KV rows were cached) */
  prompt_tokens_details: { cached_tokens: number };
  extra: RequestStats;
}

/** Where a loaded model runs, what it holds and how fast its last request went. */
export interface RuntimeStats {
  model_id: string;
  task: "chat" | "embedding";
  backend: "webgpu" | "wasm";
  /** the kernel set: "software" or "gpu" on WebGPU, "wasm" on the CPU */
  variant: "software" | "gpu" | "wasm";
  /** the CPU backend's threads, the calling one included; null on WebGPU */
  threads: number | null;
  cross_origin_isolated: boolean;
  /** the WebGPU adapter; null on the CPU backend */
  adapter: { vendor: string; architecture: string; is_fallback_adapter: boolean } | null;
  /** bytes the model holds: weights, KV cache, activations (GPU buffers, or the CPU backend's memory) */
  model_bytes: number;
  /**
   * bytes read back from the device into JS since the model loaded (logits, embeddings, or a
   * greedy step's 4-byte token id)
   */
  readback_bytes: number;
  /**
   * the prefix cache: its KV snapshots in memory (entries, bytes), those in the browser's
   * storage, and the writes to it not finished; null where it is off (or for an embedding model)
   */
  prefix_cache: {
    entries: number;
    bytes: number;
    stored_entries: number;
    stored_bytes: number;
    pending_writes: number;
  } | null;
  /** prompt-lookup speculation's options; null where it is off */
  speculation: Required<SpeculationOptions> | null;
  /** the size of the CPU backend's WebAssembly memory; 0 on WebGPU */
  wasm_memory_bytes: number;
  load_seconds: number;
  /** how many weight shards came from the browser's Cache API store and from the network */
  weights_from: { cache: number; network: number };
  /** null before the first request */
  last_request: RequestStats | null;
}

export interface TopLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
}

export interface TokenLogprob extends TopLogprob {
  top_logprobs: TopLogprob[];
}

export interface ChoiceLogprobs {
  content: TokenLogprob[] | null;
  refusal: null;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: {
    index: number;
    message: { role: "assistant"; content: string | null; tool_calls?: ToolCall[]; refusal: null };
    logprobs: ChoiceLogprobs | null;
    finish_reason: FinishReason;
  }[];
  usage: CompletionUsage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: {
    index: number;
    delta: {
      role?: "assistant";
      content?: string;
      /** a call's first delta has its id, type and name; the next ones, pieces of its arguments */
      tool_calls?: {
        index: number;
        id?: string;
        type?: "function";
        function: { name?: string; arguments: string };
      }[];
    };
    logprobs: ChoiceLogprobs | null;
    finish_reason: FinishReason | null;
  }[];
  usage?: CompletionUsage | null;
}

export interface Completion {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: {
    text: string;
    index: number;
    logprobs: {
      tokens: string[];
      token_logprobs: number[];
      top_logprobs: Record<string, number>[];
      text_offset: number[];
    } | null;
    finish_reason: FinishReason | null;
  }[];
  usage?: CompletionUsage | null;
}

export interface ChatCompletions {
  create(request: ChatCompletionRequest & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(request: ChatCompletionRequest & { stream?: false | null }): Promise<ChatCompletion>;
  create(request: ChatCompletionRequest): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
}

export interface Completions {
  create(request: CompletionRequest & { stream: true }): Promise<AsyncIterable<Completion>>;
  create(request: CompletionRequest & { stream?: false | null }): Promise<Completion>;
  create(request: CompletionRequest): Promise<Completion | AsyncIterable<Completion>>;
}

export interface EmbeddingRequest {
  /** a string, strings, token ids (special tokens included) or arrays of them */
  input: string | string[] | number[] | number[][];
  model?: string | null;
  encoding_format?: "float" | "base64" | null;
  /** only the model's own number of dimensions */
  dimensions?: number | null;
  user?: string | null;
}

export interface CreateEmbeddingResponse {
  object: "list";
  data: { object: "embedding"; index: number; embedding: number[] | string }[];
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

export interface Embeddings {
  create(request: EmbeddingRequest): Promise<CreateEmbeddingResponse>;
}

/** What every engine offers, in the page or behind a worker. */
export interface EngineInterface {
  chat: { completions: ChatCompletions };
  completions: Completions;
  /** with an embedding model loaded (a build of an encoder such as all-MiniLM-L6-v2) */
  embeddings: Embeddings;
  /** ids of the loaded models */
  readonly loadedModels: string[];
  reload(model: string | string[], options?: EngineOptions): Promise<void>;
  unload(): Promise<void>;
  resetChat(keepStats?: boolean, modelId?: string): Promise<void>;
  interruptGenerate(): void;
  runtimeStats(modelId?: string): Promise<RuntimeStats>;
  runtimeStatsText(modelId?: string): Promise<string>;
}

export interface Engine extends EngineInterface {}
/** The engine in the page. */
export class Engine {
  /** how many weight shards of each loaded model came from the cache and from the network */
  readonly weightSources: Record<string, { cache: number; network: number }>;
  /** the first loaded model's manifest.json (its contract: web/src/manifest.schema.json) */
  readonly manifest:
    | { model_id: string; task: "chat" | "embedding"; context_window: number; [field: string]: unknown }
    | undefined;
  /** the first loaded model's tokenizer, its chat template included (to count or render prompts) */
  readonly tokenizer: ChatTokenizer | undefined;
  /** the logits of the last position of `tokens`, run on a fresh KV cache */
  forwardLogits(tokens: number[], modelId?: string): Promise<Float32Array>;
  /** greedy or sampled ids after prompt ids, with a request's sampling fields */
  generate(
    promptTokens: number[],
    params?: Omit<ChatCompletionRequest, "messages">,
    onToken?: (id: number | null, textDelta: string) => void | Promise<void>,
  ): Promise<{ tokens: number[]; text: string; finish: string; stats: RequestStats }>;
  /** each kernel launch of one decode step after `tokens`, timed alone (for benchmarks) */
  profileDecode(tokens: number[], modelId?: string): Promise<{ kernel: string; ms: number }[]>;
  /** each kernel launch of the prefill of `tokens`, timed alone (for benchmarks) */
  profilePrefill(tokens: number[], modelId?: string): Promise<{ kernel: string; ms: number }[]>;
}

/**
 * An engine with `model` loaded: a model folder's URL (absolute, or relative to the page; in
 * Node.js also a filesystem path or a `file:` URL), a model id of `options.appConfig`, or
 * several of either.
 */
export function CreateEngine(model: string | string[], options?: EngineOptions): Promise<Engine>;

/** An engine in a dedicated worker running kiln-worker.js; the same API as Engine. */
export interface WebWorkerEngine extends EngineInterface {}
export class WebWorkerEngine {
  /** without a worker (or with null), starts the runtime's own kiln-worker.js (newEngineWorker) */
  constructor(worker?: Worker | null);
  readonly worker: Worker;
}

/**
 * A module worker running the runtime's kiln-worker.js, found beside the runtime through
 * `import.meta.url` (bundlers such as Vite bundle and rewrite it).
 */
export function newEngineWorker(): Worker;

/** An engine in the service worker kiln-sw.js, shared by the pages it serves and kept across reloads. */
export interface ServiceWorkerEngine extends EngineInterface {}
export class ServiceWorkerEngine {
  constructor(serviceWorker: ServiceWorker);
}

/** `worker` null: the runtime starts its own kiln-worker.js (newEngineWorker). */
export function CreateWebWorkerEngine(
  worker: Worker | null,
  model: string | string[],
  options?: EngineOptions,
): Promise<WebWorkerEngine>;
export function CreateServiceWorkerEngine(
  model: string | string[],
  options?: EngineOptions,
): Promise<ServiceWorkerEngine>;

/**
 * One engine shared by every page of an origin that makes one: held by a
 * SharedWorker running kiln-shared-worker.js (`host` "shared-worker"), or by one of the pages,
 * elected with a Web Lock (`host` "tab"; `leading` says whether it is this page).
 */
export interface SharedEngine extends EngineInterface {}
export class SharedEngine {
  readonly host: "shared-worker" | "tab";
  /** whether this page runs the engine (a leader tab) */
  readonly leading: boolean;
}

export interface SharedEngineOptions extends EngineOptions {
  /**
   * where the engine runs: "auto" (the default) takes the shared worker where it has what the
   * backend needs (WebGPU; threads for the CPU backend where the page has them), a leader tab
   * where it has not or where there is no SharedWorker
   */
  host?: "auto" | "shared-worker" | "tab";
}

/**
 * Connects to the engine the origin's pages share, and loads `model` there or finds it loaded.
 * `worker` null: the runtime's own kiln-shared-worker.js (newSharedEngineWorker).
 */
export function CreateSharedWorkerEngine(
  worker: SharedWorker | null,
  model: string | string[],
  options?: SharedEngineOptions,
): Promise<SharedEngine>;
/** A module SharedWorker running the runtime's kiln-shared-worker.js, found beside the runtime. */
export function newSharedEngineWorker(): SharedWorker;

/** A chrome.runtime.Port, as much of it as the extension's engine uses. */
export interface ExtensionPort {
  readonly name: string;
  postMessage(message: unknown): void;
  onMessage: { addListener(listener: (message: any) => void): void };
  onDisconnect: { addListener(listener: () => void): void };
}

/**
 * An engine held by one extension page (an offscreen document running an
 * ExtensionEngineHandler) for every page of the extension, reached over a port: the pages'
 * requests take turns, and a page that closes ends its request.
 */
export interface ExtensionEngine extends EngineInterface {}
export class ExtensionEngine {
  constructor(port: ExtensionPort);
  readonly port: ExtensionPort;
  /** the first loaded model's manifest, read in this page */
  readonly manifest: Engine["manifest"];
  /** the first loaded model's tokenizer, in this page (to count or render prompts) */
  readonly tokenizer: ChatTokenizer | undefined;
}
/** An ExtensionEngine over `port`, with `model` loaded in the engine's page or found loaded there. */
export function CreateExtensionEngine(
  port: ExtensionPort,
  model: string | string[],
  options?: EngineOptions,
): Promise<ExtensionEngine>;
/** Holds the engine in an extension page: `serve(port)` for each port of the other pages. */
export class ExtensionEngineHandler {
  constructor(engine?: Engine);
  serve(port: ExtensionPort): void;
}

/** Answers a WebWorkerEngine from inside its worker (what kiln-worker.js starts). */
export class WebWorkerEngineHandler {
  constructor(engine?: Engine, scope?: object);
}
/** Answers ServiceWorkerEngines from inside a service worker (what kiln-sw.js starts). */
export class ServiceWorkerEngineHandler {
  constructor(engine?: Engine, scope?: object);
}
/** Answers SharedEngines from inside a shared worker (what kiln-shared-worker.js starts). */
export class SharedWorkerEngineHandler {
  constructor(engine?: Engine, scope?: object);
}

/** The Cache API store that holds downloaded weight shards. */
export const WEIGHT_CACHE: string;
/** Deletes the cached shards of the model folder at `baseUrl`, or all cached shards. */
export function deleteWeightCache(baseUrl?: string): Promise<void>;

export interface CheckOptions {
  appConfig?: AppConfig;
  backend?: "auto" | "webgpu" | "wasm";
  variant?: "software" | "gpu";
  /** the tokens of context to check for (default: the build's context window) */
  contextWindow?: number;
}

/** What checkModel answers, from the manifest alone (no weight is fetched). */
export interface ModelCheck {
  /** the model loads here at `context_window` tokens (`reasons` is empty) */
  ok: boolean;
  model_id: string;
  /** where it would run; null where no backend runs it here (`reasons` says why) */
  backend: "webgpu" | "wasm" | null;
  /** the kernel set: "gpu", "software" (a fallback adapter) or "wasm" (the CPU backend) */
  variant: "gpu" | "software" | "wasm" | null;
  /** why it would not load, each saying what to do */
  reasons: string[];
  /** what would not stop it loading, e.g. too little storage quota to cache the weights */
  warnings: string[];
  /** bytes of the weight shards not in the weight cache: what a load downloads */
  download_bytes: number | null;
  /** bytes of the weight shards already in the weight cache */
  cached_bytes: number | null;
  /** the CPU backend's kernel module (fetched on each load through the HTTP cache); null on WebGPU */
  kernel_bytes: number | null;
  /** bytes it holds at `context_window` tokens: weights, KV cache, activations (the plans' storages) */
  memory: { weights: number; kv_cache: number; activations: number; total: number } | null;
  limits: {
    /** WebGPU features the build needs (shader-f16) */
    required_features: string[];
    /** the WebGPU adapter's limits, and the largest buffer the model needs (WebGPU) */
    max_buffer_size?: number;
    max_storage_buffer_binding_size?: number;
    largest_buffer?: number;
    /** the adapter's maxStorageBuffersPerShaderStage (WebGPU), which a kernel set's storage_buffers must not pass */
    max_storage_buffers_per_shader_stage?: number;
    /** the memory the CPU backend's WebAssembly module can address (CPU backend) */
    wasm_memory_bytes?: number;
  };
  /** navigator.storage.estimate(), and whether the shards to cache fit in what is left; null where unknown */
  storage: { quota: number | null; usage: number | null; fits: boolean | null } | null;
  /** the context window checked */
  context_window: number;
  /**
   * the largest context window at most `context_window` that fits here (its KV cache shrinks
   * with it), or null where none does; the runtime runs a model at the context window it was
   * built with, so a smaller one means a rebuild with --context-window
   */
  fitting_context_window: number | null;
}

/**
 * Whether the model at `model` (a model folder's URL, or a model id of `options.appConfig`)
 * would run here, answered from its manifest before any weight is fetched.
 */
export function checkModel(model: string, options?: CheckOptions): Promise<ModelCheck>;

export class ChatTokenizer {
  constructor(tokenizerJson: object, tokenizerConfig: object);
  encode(text: string): number[];
  /** A raw prompt's ids, with the special tokens the model puts around text (its BOS). */
  encodePrompt(text: string): number[];
  decode(ids: number[]): string;
  applyChatTemplate(messages: { role: string; content: string }[], addGenerationPrompt?: boolean): string;
}

export class KilnError extends Error {
  code: string;
}
export class WebGPUUnavailableError extends KilnError {}
export class FeatureUnsupportedError extends KilnError {}
export class DeviceLostError extends KilnError {}
export class ModelLoadError extends KilnError {}
/** The model would not run here (CreateEngine finds it before fetching any weight). */
export class ModelWontFitError extends ModelLoadError {
  /** checkModel's answer, in part (an in-page engine's error; not carried from a worker) */
  check?: Pick<ModelCheck, "model_id" | "reasons" | "memory" | "limits" | "context_window" | "fitting_context_window">;
}
export class ShardIntegrityError extends KilnError {}
export class GrammarError extends KilnError {}
export class WorkerError extends KilnError {}
export class InvalidRequestError extends KilnError {
  /** the request field at fault */
  param: string;
}
export class ModelNotFoundError extends KilnError {
  param: "model";
}
export class ContextWindowExceededError extends KilnError {
  code: "context_length_exceeded";
}

// The Prompt API (github.com/webmachinelearning/prompt-api): a LanguageModel over a Kiln model.

export interface LanguageModelMessage {
  role: "system" | "user" | "assistant";
  /** a string, or text parts (other types are a NotSupportedError) */
  content: string | { type: "text"; value: string }[];
}

/** a string is one user message */
export type LanguageModelPrompt = string | LanguageModelMessage[];

export type LanguageModelAvailability = "unavailable" | "downloadable" | "downloading" | "available";

export type LanguageModelSamplingMode = "most-predictable" | "predictable" | "balanced" | "creative" | "most-creative";

export interface LanguageModelParams {
  defaultTopK: number;
  maxTopK: number;
  defaultTemperature: number;
  maxTemperature: number;
}

export interface LanguageModelExpected {
  /** only "text" is supported */
  type: "text" | "image" | "audio" | "tool-call" | "tool-response";
  languages?: string[];
}

export interface LanguageModelCreateCoreOptions {
  /** 1 or more (fractions rounded down, past maxTopK clamped); 1 is greedy */
  topK?: number;
  /** 0 or more (past maxTemperature clamped); 0 is greedy */
  temperature?: number;
  /** instead of topK and temperature */
  samplingMode?: LanguageModelSamplingMode;
  expectedInputs?: LanguageModelExpected[];
  expectedOutputs?: LanguageModelExpected[];
}

/** The target create() passes to `monitor`, which fires "downloadprogress" events. */
export interface LanguageModelMonitor extends EventTarget {
  addEventListener(type: "downloadprogress", listener: (event: ProgressEvent) => void): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null): void;
}

export interface LanguageModelCreateOptions extends LanguageModelCreateCoreOptions {
  /** aborts create(), and destroys the session later */
  signal?: AbortSignal;
  /** "downloadprogress" events' `loaded` goes from 0 to 1 (both always fired) */
  monitor?: (monitor: LanguageModelMonitor) => void;
  /** kept in the session whatever the overflow; a system message only first */
  initialPrompts?: LanguageModelMessage[];
}

export interface LanguageModelPromptOptions {
  /** a JSON schema the reply follows (a RegExp is a NotSupportedError) */
  responseConstraint?: object;
  /** true: the schema is not put in the prompt (by default it is appended to the input) */
  omitResponseConstraintInput?: boolean;
  signal?: AbortSignal;
}

/** A session: an instance of a LanguageModel class. */
export interface LanguageModelSession extends EventTarget {
  prompt(input: LanguageModelPrompt, options?: LanguageModelPromptOptions): Promise<string>;
  /** the reply's text, a new piece per chunk, generated as it is read */
  promptStreaming(input: LanguageModelPrompt, options?: LanguageModelPromptOptions): ReadableStream<string>;
  /** adds to the conversation without a reply (prefilled now) */
  append(input: LanguageModelPrompt, options?: { signal?: AbortSignal }): Promise<void>;
  /** the tokens `input` would add */
  measureContextUsage(input: LanguageModelPrompt, options?: LanguageModelPromptOptions): Promise<number>;
  /** the former name of measureContextUsage */
  measureInputUsage(input: LanguageModelPrompt, options?: LanguageModelPromptOptions): Promise<number>;
  /** the tokens the conversation takes */
  readonly contextUsage: number;
  /** the model's context window */
  readonly contextWindow: number;
  readonly inputUsage: number;
  readonly inputQuota: number;
  /** fired when the oldest turns were dropped to make room */
  oncontextoverflow: ((event: Event) => void) | null;
  onquotaoverflow: ((event: Event) => void) | null;
  readonly topK: number;
  readonly temperature: number;
  readonly samplingMode: LanguageModelSamplingMode;
  clone(options?: { signal?: AbortSignal }): Promise<LanguageModelSession>;
  destroy(): void;
}

/** A LanguageModel class: the Prompt API's static methods, its instances sessions. */
export interface LanguageModelClass {
  /** "downloadable" until the model is loaded; "unavailable" where checkModel finds it would not run, or a load failed */
  availability(options?: LanguageModelCreateCoreOptions): Promise<LanguageModelAvailability>;
  params(): Promise<LanguageModelParams>;
  /** the first loads the model */
  create(options?: LanguageModelCreateOptions): Promise<LanguageModelSession>;
  readonly prototype: LanguageModelSession;
}

/** An engine the Prompt API can use: one with its model's tokenizer and manifest in this page. */
export type LanguageModelEngine = Engine | ExtensionEngine;

export interface LanguageModelOptions extends EngineOptions {
  /** makes the engine instead of CreateEngine (say, an ExtensionEngine), from the model and these options */
  createEngine?: (model: string, options: EngineOptions) => Promise<LanguageModelEngine>;
}

/**
 * A LanguageModel class bound to `model`: a model folder's URL (loaded with `options` by the
 * first create()) or an engine made by CreateEngine.
 */
export function createLanguageModel(
  model: string | LanguageModelEngine,
  options?: LanguageModelOptions,
): LanguageModelClass;
/**
 * Sets globalThis.LanguageModel to createLanguageModel(model, options) where it is undefined;
 * returns globalThis.LanguageModel (the browser's own where it has one).
 */
export function installLanguageModel(
  model: string | LanguageModelEngine,
  options?: LanguageModelOptions,
): LanguageModelClass;
