// One engine for every page of a Chrome extension: the worker protocol (handler.js, client.js)
// carried by chrome.runtime ports, one per page, to the extension page that holds the engine
// (an offscreen document, which outlives the popup and is not stopped as a service worker is).
// The pages' requests take turns as the shared worker's do (fair_queue.js); a port says when
// its page is gone (onDisconnect fires on the other end when a page closes or navigates), and
// then the page's running request is aborted and its waiting ones dropped.
//
// A port carries its messages as JSON, not structured clones: every message of the protocol is
// plain data, and what JSON cannot carry (a function, a typed array) does not belong in a request.
//
// An extension page counts tokens itself (the Prompt API's sessions, a prompt cut to fit the
// context window): ExtensionEngine reads the loaded model's manifest and tokenizer in the page,
// beside the weights' one copy in the engine's document.
import { fetchManifest, fetchTokenizerFiles } from "../backends/loader.js";
import { Engine } from "../engine/engine.js";
import * as errors from "../errors.js";
import { ChatTokenizer } from "../text/tokenizer.js";
import { WorkerEngine } from "./client.js";
import { EngineHandler } from "./handler.js";

/**
 * Answers ExtensionEngines from the extension page that holds the engine: `serve(port)` for
 * each port of theirs (chrome.runtime.onConnect).
 */
export class ExtensionEngineHandler extends EngineHandler {
  #ports = 0;

  /** @param {Engine} [engine] */
  constructor(engine = new Engine()) {
    super(engine);
  }

  /**
   * Serves the page at the other end of `port` (a chrome.runtime.Port) until it disconnects.
   * @param {any} port
   */
  serve(port) {
    const client = `port-${++this.#ports}`;
    let open = true;
    const reply = (message) => {
      if (!open) return;
      try {
        port.postMessage(message);
      } catch {
        // The page went between its port's closing and onDisconnect: clientGone follows.
      }
    };
    port.onMessage.addListener((message) => this.handle(message, reply, client));
    port.onDisconnect.addListener(() => {
      open = false;
      this.clientGone(client);
    });
  }
}

/**
 * The URL of the model folder a reload loads first, and the chat template its app config
 * gives it: an entry of `appConfig.model_list` by its model_id, else the spec as a URL.
 */
function firstModel(model, appConfig) {
  const spec = Array.isArray(model) ? model[0] : model;
  const entry = appConfig?.model_list?.find?.((e) => e?.model_id === spec);
  const url = entry ? (Array.isArray(entry.model) ? entry.model[0] : entry.model) : spec;
  return { url: new URL(url, globalThis.location?.href).href, chatTemplate: entry?.chat_template };
}

/** The manifest and chat tokenizer of the model folder at `url`, read in this page. */
async function readTokenizer({ url, chatTemplate }) {
  const { base, manifest } = await fetchManifest(url);
  const { tokenizer, tokenizerConfig } = await fetchTokenizerFiles(base, manifest);
  const config = chatTemplate === undefined ? tokenizerConfig : { ...tokenizerConfig, chat_template: chatTemplate };
  return { url, manifest, tokenizer: new ChatTokenizer(tokenizer, config) };
}

/** An engine held by the extension page that runs an ExtensionEngineHandler, over a port to it. */
export class ExtensionEngine extends WorkerEngine {
  /** @type {{url: string, manifest: any, tokenizer: ChatTokenizer} | null} */
  #model = null;

  /** @param {any} port  a chrome.runtime.Port to the page that serves it (ExtensionEngineHandler) */
  constructor(port) {
    super(
      (message) => port.postMessage(message),
      (receive, fail) => {
        port.onMessage.addListener(receive);
        port.onDisconnect.addListener(() =>
          fail(
            new errors.WorkerError(
              "The extension's engine document closed, or was not open when this page connected: connect again.",
            ),
          ),
        );
      },
    );
    this.port = port;
  }

  /** The manifest of the first loaded model, read in this page. */
  get manifest() {
    return this.#model?.manifest;
  }

  /** The tokenizer of the first loaded model, its chat template included, in this page. */
  get tokenizer() {
    return this.#model?.tokenizer;
  }

  /**
   * Loads models in the engine's page, or finds them loaded there (see WorkerEngine.reload),
   * and reads the first one's manifest and tokenizer here.
   * @param {string | string[]} model
   * @param {Parameters<WorkerEngine["reload"]>[1]} [options]
   */
  async reload(model, options = {}) {
    const wanted = firstModel(model, options?.appConfig);
    const known = this.#model?.url === wanted.url ? this.#model : null;
    const reading = known ? Promise.resolve(known) : readTokenizer(wanted);
    reading.catch(() => {}); // a failed reload is the error to report
    await super.reload(model, options);
    this.#model = await reading;
  }
}

/**
 * An engine over `port` (chrome.runtime.connect to the extension page that serves it with an
 * ExtensionEngineHandler), with `model` loaded there or found loaded.
 * @param {any} port
 * @param {string | string[]} model
 * @param {Parameters<WorkerEngine["reload"]>[1]} [options]
 */
export async function CreateExtensionEngine(port, model, options = {}) {
  const engine = new ExtensionEngine(port);
  await engine.reload(model, options);
  return engine;
}
