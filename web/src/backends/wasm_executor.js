import { ABORTED, yieldToEventLoop } from "../control.js";
import { ModelLoadError } from "../errors.js";
import { evaluate } from "./expr.js";
import {
  ARGMAX_ROWS,
  GREEDY,
  PICKS,
  pickedBytes,
  planBuffers,
  preparePicks,
  readPicked,
  snapshotLayout,
  tensorBytes,
} from "./plans.js";
import { startThread } from "../platform.js";

// TVM's packed calling convention, as its CPU kernels read it (tvm/ffi/c_api.h, dlpack.h):
// a kernel is `int32 f(void* self, TVMFFIAny* args, int32 count, TVMFFIAny* result)`; an
// argument is 16 bytes (type index, padding, 8-byte value), a tensor argument points to a
// DLTensor (40 bytes on wasm32) whose shape is an array of int64.
const ANY_BYTES = 16;
const FFI_INT = 1;
const FFI_FLOAT = 3;
const FFI_DLTENSOR_PTR = 7;
const DLTENSOR_BYTES = 40;
const DL_CPU = 1;
const DL_TYPE_CODES = { int: 0, uint: 1, float: 2, bfloat: 4 };

/** DLDataType {code, bits} of a dtype name such as "float32" or "uint8". */
function dlDataType(dtype) {
  const match = /^(u?int|float|bfloat)(\d+)$/.exec(dtype);
  if (!match) throw new ModelLoadError(`the CPU kernels use an unknown dtype ${dtype}`);
  return { code: DL_TYPE_CODES[match[1]], bits: Number(match[2]) };
}

const THREAD_STACK_BYTES = 1 << 20;
const THREADS_JOIN_MS = 10000;
// A call with a control lets the event loop run after this many milliseconds of kernels.
const YIELD_MS = 50;

/**
 * Runs the compiled execution plans on the CPU: the kernels of one WebAssembly module (TVM's
 * LLVM output for wasm32 with SIMD), every tensor an address in its memory. Weights, the KV
 * cache, activations and each launch's argument block are allocated once; a call writes the
 * symbolic sizes (n, total_len) into the argument blocks and calls the kernels in order.
 * The memory is shared: with `threads` > 1, worker threads (each an instance of the module
 * with a stack of its own) run their part of every parallel loop.
 */
export class WasmExecutor {
  #lastToken = null; // the argmax or sample plan that picked the last token, whose output holds it
  /**
   * @param {{functions: object, kernels: Record<string, {symbol: string, args: object[]}>,
   *          module: WebAssembly.Module, memory: {initial: number, maximum: number}}} variant
   *   the "wasm" kernels and plans
   * @param {object} manifest  manifest.json
   * @param {{threads?: number}} [options]  threads in all, the calling one included
   */
  static async create(variant, manifest, { threads = 1 } = {}) {
    const memory = new WebAssembly.Memory({ ...variant.memory, shared: true });
    const instance = await WebAssembly.instantiate(variant.module, { env: { memory } });
    const executor = new WasmExecutor(instance, memory, manifest, variant);
    try {
      if (threads > 1) await executor.#startThreads(variant.module, threads - 1);
    } catch (err) {
      executor.destroy();
      throw err;
    }
    return executor;
  }

  constructor(instance, memory, manifest, variant) {
    this.exports = instance.exports;
    this.memory = memory;
    this.manifest = manifest;
    this.variant = variant;
    this.weights = new Map(); // parameter name -> address
    this.bytes = 0;
    this.readbackBytes = 0; // bytes copied out of the module's memory into JS so far
    this.picks = null;
    this.argmaxRows = null;
    this.functions = null;
    this.threads = [];
  }

  /**
   * Starts `count` worker threads and waits until each has joined the module's pool (all of
   * them: a launch hands task i to thread i).
   */
  async #startThreads(module, count) {
    let failure = null;
    for (let index = 1; index <= count; index++) {
      const stackTop = this.#alloc(THREAD_STACK_BYTES) + THREAD_STACK_BYTES;
      const message = { module, memory: this.memory, index, stackTop };
      this.threads.push(await startThread(message, (error) => (failure ??= error)));
    }
    const started = performance.now();
    while (this.exports.kiln_threads_ready() < count) {
      if (failure !== null || performance.now() - started > THREADS_JOIN_MS)
        throw new ModelLoadError(`The CPU backend's ${count} worker threads did not start: ${failure ?? "timeout"}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** Threads that run the kernels, the calling one included. */
  get threadCount() {
    return this.threads.length + 1;
  }

  #alloc(bytes) {
    const address = this.exports.kiln_alloc(Math.max(bytes, 16));
    if (address === 0) throw new ModelLoadError(`WebAssembly memory is full (asked for ${bytes} more bytes)`);
    this.bytes += bytes;
    return address;
  }

  /** Copies one weight tensor into the module's memory. */
  upload(tensor, bytes) {
    const address = this.#alloc(bytes.length);
    new Uint8Array(this.memory.buffer, address, bytes.length).set(bytes);
    this.weights.set(tensor.name, address);
  }

  /** Allocates the KV cache and each function's buffers and argument blocks (after upload). */
  prepare() {
    this.cache = this.manifest.kv_cache.map((tensor) => this.#alloc(tensorBytes(tensor)));
    this.result = this.#alloc(ANY_BYTES);
    this.functions = {};
    for (const [name, plan] of Object.entries(this.variant.functions)) {
      if (!PICKS.includes(name)) this.functions[name] = this.#prepare(plan);
    }
    // argmax, sample and edit (a request's penalties, biases and mask) once per step, reading
    // its logits where they are.
    this.picks = preparePicks(this.variant.functions, this.functions, (plan, bound) => this.#prepare(plan, bound));
    // argmax of each row of a verify step's logits, where the build has it.
    const rows = this.variant.functions[ARGMAX_ROWS];
    this.argmaxRows =
      rows && this.functions.verify ? this.#prepare(rows, { logits: this.functions.verify.output }) : null;
  }

  /** Bytes of memory the model holds: weights, KV cache, activations. */
  get modelBytes() {
    return this.bytes;
  }

  #prepare(plan, bound = {}) {
    const { inputs, resolve } = planBuffers(
      plan,
      this.manifest,
      (b) => this.#alloc(b),
      this.cache,
      this.weights,
      bound,
    );
    const dynamic = []; // [address of an int64, expression over the symbolic sizes]: set per call
    const int64 = (view, at, expr) => {
      if (typeof expr === "number") view.setBigInt64(at, BigInt(expr), true);
      else dynamic.push([at, expr]);
    };
    const launches = plan.launches.map((launch) => {
      const kernel = this.variant.kernels[launch.kernel];
      const call = this.exports[kernel.symbol];
      if (typeof call !== "function") throw new ModelLoadError(`kernels.wasm lacks ${kernel.symbol}`);
      const tensors = kernel.args.filter((a) => !("scalar" in a));
      const shapeWords = tensors.reduce((a, t) => a + t.ndim, 0);
      const block = this.#alloc(kernel.args.length * ANY_BYTES + tensors.length * DLTENSOR_BYTES + shapeWords * 8);
      const view = new DataView(this.memory.buffer);
      let tensorAt = block + kernel.args.length * ANY_BYTES;
      let shapeAt = tensorAt + tensors.length * DLTENSOR_BYTES;
      let bufferIndex = 0;
      let podIndex = 0;
      kernel.args.forEach((arg, i) => {
        const at = block + i * ANY_BYTES;
        view.setBigInt64(at + 8, 0n, true);
        if ("scalar" in arg) {
          const expr = launch.pods[podIndex++];
          if (arg.scalar.startsWith("float")) {
            view.setInt32(at, FFI_FLOAT, true);
            view.setFloat64(at + 8, evaluate(expr, {}), true);
          } else {
            view.setInt32(at, FFI_INT, true);
            int64(view, at + 8, expr);
          }
          return;
        }
        const shape = launch.shapes[bufferIndex];
        const { code, bits } = dlDataType(arg.dtype);
        view.setInt32(at, FFI_DLTENSOR_PTR, true);
        view.setUint32(at + 8, tensorAt, true);
        view.setUint32(tensorAt, resolve(launch.buffers[bufferIndex++]), true); // data
        view.setInt32(tensorAt + 4, DL_CPU, true); // device type
        view.setInt32(tensorAt + 8, 0, true); // device id
        view.setInt32(tensorAt + 12, arg.ndim, true);
        view.setUint8(tensorAt + 16, code);
        view.setUint8(tensorAt + 17, bits);
        view.setUint16(tensorAt + 18, 1, true); // lanes
        view.setUint32(tensorAt + 20, shapeAt, true);
        view.setUint32(tensorAt + 24, 0, true); // strides: compact
        view.setBigUint64(tensorAt + 32, 0n, true); // byte offset
        shape.forEach((dim, d) => int64(view, shapeAt + 8 * d, dim));
        tensorAt += DLTENSOR_BYTES;
        shapeAt += 8 * arg.ndim;
      });
      return { kernel: launch.kernel, call, block, count: kernel.args.length };
    });
    return { plan, inputs, launches, dynamic, output: resolve(plan.outputs[0]) };
  }

  #fail(launch) {
    const at = this.exports.kiln_last_error();
    const bytes = new Uint8Array(this.memory.buffer, at, 1024);
    const message = new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(0)));
    return new Error(`kernel ${launch.kernel} failed: ${message}`);
  }

  #setup(fn, tensors, vars) {
    for (const [input, values] of Object.entries(tensors))
      new Int32Array(this.memory.buffer, fn.inputs[input], values.length).set(values);
    const view = new DataView(this.memory.buffer);
    for (const [at, expr] of fn.dynamic) view.setBigInt64(at, BigInt(evaluate(expr, vars)), true);
  }

  #launch(launch) {
    if (launch.call(0, launch.block, launch.count, this.result) !== 0) throw this.#fail(launch);
  }

  /**
   * Runs `prefill` or `decode` on `ids` (the new tokens), with `totalLen` tokens in the
   * cache afterwards; resolves to the logits of the last token, or with `pick` (plans.js
   * GREEDY where `picks.hasArgmax`, a draw's parameters where `picks.hasSample`) to the picked
   * token's id, or ABORTED when `control` was aborted on the way (the cache rows of `ids` then hold
   * anything, and are written again). With `pick`, `ids` null decodes the token the last step
   * that picked left in memory. With `edit` too (the edit rows, at most `picks.maxEdits`, and a
   * grammar's mask or null), the logits go through edit first. With `logprobs` (where
   * `picks.hasLogprobs`), resolves to `{token, logprobs}` (plans.js readPicked).
   * @param {number[] | null} ids
   * @param {{pick?: string | Float32Array | null, edit?: {rows: Float32Array, mask: Int32Array | null} | null,
   *          logprobs?: boolean}} [options]
   * @returns {Promise<Float32Array | number | {token: number, logprobs: object} | typeof ABORTED>}
   */
  async run(name, ids, totalLen, control = undefined, { pick = null, edit = null, logprobs = false } = {}) {
    // null: the token the last step that picked left in memory (calls run one after another).
    ids ??= [new Int32Array(this.memory.buffer, this.#lastToken.output, 1)[0]];
    const vars = { n: ids.length, total_len: totalLen };
    const count = pick === null ? this.manifest.config.vocab_size : 0;
    const logits = await this.call(name, { input_ids: ids }, vars, count, control);
    if (pick === null || logits === ABORTED) return logits;
    const { edited, then, logprobs: scored } = this.picks.after(name, pick, Boolean(edit), logprobs);
    if (pick !== GREEDY) new Float32Array(this.memory.buffer, then.inputs.sampling, pick.length).set(pick);
    if (edited) {
      new Float32Array(this.memory.buffer, edited.inputs.edits, edit.rows.length).set(edit.rows);
      if (edit.mask) new Int32Array(this.memory.buffer, edited.inputs.mask, edit.mask.length).set(edit.mask);
      for (const launch of edited.launches) this.#launch(launch);
    }
    for (const launch of then.launches) this.#launch(launch);
    this.#lastToken = then;
    if (!scored) {
      this.readbackBytes += 4;
      return new Int32Array(this.memory.buffer, then.output, 1)[0];
    }
    for (const launch of scored.launches) this.#launch(launch);
    const bytes = pickedBytes(this.picks);
    const picked = new Uint8Array(bytes);
    picked.set(new Uint8Array(this.memory.buffer, then.output, 4));
    picked.set(new Uint8Array(this.memory.buffer, scored.output, bytes - 4), 4);
    this.readbackBytes += bytes;
    return readPicked(picked.buffer, true);
  }

  /**
   * Runs verify with its inputs and the values of its symbolic sizes, then argmax_rows on its
   * logits (where `argmaxRows`); resolves to the greedy token of each of its `vars.v` rows, or
   * ABORTED as `call` does.
   * @returns {Promise<Int32Array | typeof ABORTED>}
   */
  async callArgmaxRows(tensors, vars, control = undefined) {
    if ((await this.call("verify", tensors, vars, 0, control)) === ABORTED) return ABORTED;
    const then = this.argmaxRows;
    this.#setup(then, {}, vars);
    for (const launch of then.launches) this.#launch(launch);
    this.readbackBytes += vars.v * 4;
    return new Int32Array(this.memory.buffer.slice(then.output, then.output + vars.v * 4));
  }

  /**
   * Runs function `name` of the plan with its tensor inputs (name -> Int32Array) and the
   * values of its symbolic sizes; resolves to the first `count` floats of its output. With a
   * `control`, the event loop runs after every YIELD_MS of kernels (messages, timers, the
   * page) and an abort seen then ends the call: a long prefill chunk is stopped within tens
   * of milliseconds, and the page stays responsive meanwhile.
   * @returns {Promise<Float32Array | typeof ABORTED>}
   */
  async call(name, tensors, vars, count, control = undefined) {
    await yieldToEventLoop();
    if (control?.aborted) return ABORTED;
    const fn = this.functions[name];
    this.#setup(fn, tensors, vars);
    let slice = performance.now();
    for (const launch of fn.launches) {
      this.#launch(launch);
      if (control && performance.now() - slice > YIELD_MS) {
        await yieldToEventLoop();
        if (control.aborted) return ABORTED;
        slice = performance.now();
      }
    }
    // Kernels may grow the memory (workspace), which replaces its buffer: view it afresh.
    this.readbackBytes += count * 4;
    return new Float32Array(this.memory.buffer.slice(fn.output, fn.output + count * 4));
  }

  /**
   * A copy of the KV cache's first `count` rows (snapshotLayout) out of the module's memory.
   * @returns {Promise<{data: Uint8Array, count: number, bytes: number} | null>}
   */
  async snapshot(count) {
    const layout = snapshotLayout(this.manifest, count);
    if (!layout || count === 0) return null;
    const data = new Uint8Array(layout.bytes);
    layout.segments.forEach(({ offset, rowBytes }, i) =>
      data.set(new Uint8Array(this.memory.buffer, this.cache[i], count * rowBytes), offset),
    );
    return { data, count, bytes: layout.bytes };
  }

  /** Copies rows `from`..`to` of a snapshot into the KV cache. */
  async restore(snapshot, from, to) {
    const { segments } = snapshotLayout(this.manifest, snapshot.count);
    const memory = new Uint8Array(this.memory.buffer);
    segments.forEach(({ offset, rowBytes }, i) =>
      memory.set(
        snapshot.data.subarray(offset + from * rowBytes, offset + to * rowBytes),
        this.cache[i] + from * rowBytes,
      ),
    );
  }

  /**
   * The bytes of a snapshot's first `count` rows, in snapshotLayout's order (to be stored).
   * @returns {Promise<Uint8Array>}
   */
  async readSnapshot(snapshot, count) {
    if (count === snapshot.count) return snapshot.data;
    const from = snapshotLayout(this.manifest, snapshot.count);
    const to = snapshotLayout(this.manifest, count);
    const data = new Uint8Array(to.bytes);
    from.segments.forEach(({ offset, rowBytes }, i) =>
      data.set(snapshot.data.subarray(offset, offset + count * rowBytes), to.segments[i].offset),
    );
    return data;
  }

  /**
   * A snapshot of `count` rows made from stored bytes (readSnapshot's).
   * @param {Uint8Array} bytes
   */
  async snapshotFrom(bytes, count) {
    return { data: bytes, count, bytes: bytes.length };
  }

  /** A snapshot is JS memory, freed with its last reference. */
  freeSnapshot() {}

  /**
   * Times every launch of one call separately: for `scripts/bench --profile`.
   * @returns {Promise<{kernel: string, ms: number}[]>}
   */
  async profile(name, ids, totalLen) {
    const fn = this.functions[name];
    this.#setup(fn, { input_ids: ids }, { n: ids.length, total_len: totalLen });
    const times = [];
    for (const launch of fn.launches) {
      const start = performance.now();
      this.#launch(launch);
      times.push({ kernel: launch.kernel, ms: performance.now() - start });
    }
    return times;
  }

  /** Stops the threads; the memory goes with the last reference to this executor. */
  destroy() {
    for (const thread of this.threads) thread.terminate();
    this.threads = [];
    this.functions = null;
    this.bytes = 0;
  }
}
