import { GRID_POD } from "kiln:contract";

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

const UNIFORM_SLOT = 256; // minUniformBufferOffsetAlignment
const MAX_GROUPS = 65535; // maxComputeWorkgroupsPerDimension (WebGPU's default limit)
const TOKEN_READBACKS = 3; // steps picking on the GPU in flight at most (see the constructor)

/** Copies one weight tensor into a GPU buffer of its own. */
export function uploadWeight(device, tensor, bytes) {
  const size = Math.ceil(tensor.bytes / 4) * 4;
  const buffer = device.createBuffer({
    size: Math.max(size, 16),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    label: tensor.name,
  });
  const padded = new Uint8Array(size);
  padded.set(bytes);
  device.queue.writeBuffer(buffer, 0, padded);
  return buffer;
}

/**
 * Runs the compiled execution plans: every buffer, pipeline and bind group is created once;
 * a call writes the POD values of its launches into one uniform buffer and submits one
 * compute pass. With `{pick}`, a step's pass goes on into the argmax or sample kernel, whose
 * input is bound to the step's logits, and only the token comes back (4 bytes).
 */
export class Executor {
  #previous = Promise.resolve(); // the last call, which the next waits for
  #lastToken = null; // the argmax or sample plan that picked the last token, whose output holds it
  #tokenReadbacks = []; // buffers a token is read back through, not in use
  #readbacks = []; // the buffers plans' outputs are read back through, made as first read
  #pickedBytes = 4; // bytes of a token readback buffer
  /** Bytes copied from the GPU to JS so far (logits, embeddings, tokens). */
  readbackBytes = 0;

  /**
   * @param {GPUDevice} device
   * @param {object} manifest  manifest.json
   * @param {{functions: object, kernels: Record<string, {wgsl: string, pods: {type: string}[]}>}} variant
   *   the execution plans and kernels chosen for this adapter
   * @param {Map<string, GPUBuffer>} weights  parameter name -> buffer
   */
  constructor(device, manifest, variant, weights) {
    this.device = device;
    this.manifest = manifest;
    this.kernels = variant.kernels;
    this.weights = weights;
    this.pipelines = new Map();
    this.buffers = [];
    this.cache = manifest.kv_cache.map((tensor) => this.#buffer(tensorBytes(tensor)));
    this.functions = {};
    for (const [name, plan] of Object.entries(variant.functions)) {
      if (!PICKS.includes(name)) this.functions[name] = this.#prepare(plan);
    }
    // argmax, sample and edit (a request's penalties, biases and mask) once per step, reading
    // its logits where they are.
    this.picks = preparePicks(variant.functions, this.functions, (plan, bound) => this.#prepare(plan, bound));
    // argmax of each row of a verify step's logits, where the build has it.
    const rows = variant.functions[ARGMAX_ROWS];
    this.argmaxRows =
      rows && this.functions.verify ? this.#prepare(rows, { logits: this.functions.verify.output }) : null;
    // The buffers picked tokens are read back through, made once: as many as steps can be in
    // flight (the one read, the one queued ahead, one discarded and still mapping).
    // Each holds a token and, where the build gives them, its logprobs.
    this.#pickedBytes = pickedBytes(this.picks);
    for (let i = 0; (this.picks.hasArgmax || this.picks.hasSample) && i < TOKEN_READBACKS; i++)
      this.#tokenReadbacks.push(this.#tokenReadback());
  }

  #tokenReadback() {
    return this.#buffer(this.#pickedBytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
  }

  #buffer(bytes, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST) {
    const buffer = this.device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 4) * 4), usage });
    this.buffers.push(buffer);
    return buffer;
  }

  /** Bytes of every GPU buffer the model holds: weights, KV cache, activations. */
  get modelBytes() {
    let bytes = 0;
    for (const buffer of this.buffers) bytes += buffer.size;
    for (const buffer of this.weights.values()) bytes += buffer.size;
    return bytes;
  }

  #pipeline(name) {
    if (!this.pipelines.has(name)) {
      const kernel = this.kernels[name];
      const module = this.device.createShaderModule({ code: kernel.wgsl, label: name });
      this.pipelines.set(
        name,
        this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: name }, label: name }),
      );
    }
    return this.pipelines.get(name);
  }

  #prepare(plan, bound = {}) {
    const { inputs, resolve } = planBuffers(
      plan,
      this.manifest,
      (b) => this.#buffer(b),
      this.cache,
      this.weights,
      bound,
    );
    const uniforms = this.#buffer(
      plan.launches.length * UNIFORM_SLOT,
      GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    );
    const launches = plan.launches.map((launch, i) => {
      const pipeline = this.#pipeline(launch.kernel);
      const entries = launch.buffers.map((ref, binding) => ({ binding, resource: { buffer: resolve(ref) } }));
      entries.push({
        binding: entries.length,
        resource: { buffer: uniforms, offset: i * UNIFORM_SLOT, size: UNIFORM_SLOT },
      });
      const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
      // The launch's pods fill the kernel's scalar arguments in order, around TVM's grid pod.
      const pods = this.kernels[launch.kernel].pods;
      const gridSlot = pods.findIndex((p) => p.name === GRID_POD);
      const podSlots = pods.map((_, j) => j).filter((j) => j !== gridSlot);
      if (podSlots.length !== launch.pods.length)
        throw new ModelLoadError(
          `${launch.kernel} takes ${podSlots.length} scalars but its launch gives ${launch.pods.length}`,
        );
      return { ...launch, pipeline, bindGroup, podTypes: pods.map((p) => p.type), podSlots, gridSlot };
    });
    return {
      plan,
      inputs,
      launches,
      uniforms,
      podData: new ArrayBuffer(plan.launches.length * UNIFORM_SLOT),
      output: resolve(plan.outputs[0]),
      // The buffer its output is read back through, made when first read (#submit): the plans
      // that pick on the device are never read whole, and verify's logits (up to 16 rows of
      // the vocabulary) only by a sampled request under speculation.
      readback: null,
    };
  }

  /**
   * Runs `prefill` or `decode` on `ids` (the new tokens), with `totalLen` tokens in the
   * cache afterwards; resolves to the logits of the last token, or with `pick` (plans.js
   * GREEDY where `picks.hasArgmax`, a draw's parameters where `picks.hasSample`) to the picked
   * token's id, or ABORTED as soon as `control` is aborted (the GPU work submitted finishes on its own; the
   * next call waits for it). With `pick`, `ids` null decodes the token the last step that
   * picked left on the device, before it is read back. With `edit` too (the edit rows, at
   * most `picks.maxEdits`, and a grammar's mask or null), the logits go through edit first.
   * With `logprobs` (where `picks.hasLogprobs`), resolves to `{token, logprobs}` (plans.js
   * readPicked).
   * @param {number[] | null} ids
   * @param {{pick?: string | Float32Array | null, edit?: {rows: Float32Array, mask: Int32Array | null} | null,
   *          logprobs?: boolean}} [options]
   * @returns {Promise<Float32Array | number | {token: number, logprobs: object} | typeof ABORTED>}
   */
  run(name, ids, totalLen, control = undefined, { pick = null, edit = null, logprobs = false } = {}) {
    const vars = { n: ids?.length ?? 1, total_len: totalLen };
    let run;
    if (pick !== null) {
      // In order of submission, but the next call waits for this one's submission only, not
      // its token: a step can be queued behind another before that one's token is read.
      const submitted = this.#previous.then(() => this.#submitPicking(name, ids, vars, pick, edit, logprobs));
      this.#previous = submitted.catch(() => {});
      run = submitted.then(({ token }) => token);
    } else {
      run = this.call(name, { input_ids: Int32Array.from(ids) }, vars, this.manifest.config.vocab_size);
    }
    return control ? control.race(run) : run;
  }

  /**
   * Submits `name` then argmax or sample (and logprobs) in one pass, `ids` written, or (null)
   * the token the last step left on the GPU copied in; returns {token}, a promise of what is
   * read back (each step a readback buffer of its own, so that several can be in flight).
   */
  #submitPicking(name, ids, vars, pick, edit, withLogprobs) {
    const fn = this.functions[name];
    const { edited, then, logprobs } = this.picks.after(name, pick, Boolean(edit), withLogprobs);
    // Queued writes keep their order with the submissions: a step queued behind another writes
    // its inputs after that one's pass was submitted.
    if (pick !== GREEDY) this.device.queue.writeBuffer(then.inputs.sampling, 0, pick);
    if (edited) {
      this.device.queue.writeBuffer(edited.inputs.edits, 0, edit.rows);
      if (edit.mask) this.device.queue.writeBuffer(edited.inputs.mask, 0, edit.mask);
    }
    const encoder = this.device.createCommandEncoder();
    if (ids) this.device.queue.writeBuffer(fn.inputs.input_ids, 0, Int32Array.from(ids));
    else encoder.copyBufferToBuffer(this.#lastToken.output, 0, fn.inputs.input_ids, 0, 4);
    const pass = encoder.beginComputePass();
    this.#record(pass, fn, vars);
    if (edited) this.#record(pass, edited, {});
    this.#record(pass, then, {});
    if (logprobs) this.#record(pass, logprobs, {});
    pass.end();
    const readback = this.#tokenReadbacks.pop() ?? this.#tokenReadback();
    const bytes = logprobs ? this.#pickedBytes : 4;
    encoder.copyBufferToBuffer(then.output, 0, readback, 0, 4);
    if (logprobs) encoder.copyBufferToBuffer(logprobs.output, 0, readback, 4, bytes - 4);
    this.device.queue.submit([encoder.finish()]);
    this.#lastToken = then;
    const token = readback.mapAsync(GPUMapMode.READ, 0, bytes).then(() => {
      const picked = readPicked(readback.getMappedRange(0, bytes), Boolean(logprobs));
      readback.unmap();
      this.#tokenReadbacks.push(readback);
      return picked;
    });
    // Counted with the submission, so that the copy of a step queued ahead and discarded is the
    // request's that made it, not the next one's (its mapping may end during the next request).
    this.readbackBytes += bytes;
    return { token };
  }

  /**
   * Runs function `name` of the plan with its tensor inputs (name -> Int32Array) and the
   * values of its symbolic sizes; resolves to the first `count` floats of its output.
   * @returns {Promise<Float32Array>}
   */
  call(name, tensors, vars, count) {
    // One call at a time: a caller may stop waiting for one (an aborted request), whose
    // readback buffer stays mapped until its GPU work is done.
    const run = this.#previous.then(() => this.#submit(name, tensors, vars, count));
    this.#previous = run.catch(() => {});
    return run;
  }

  /** Fills `fn`'s uniforms for `vars` and records its dispatches into `pass`. */
  #record(pass, fn, vars) {
    const i32 = new Int32Array(fn.podData);
    const u32 = new Uint32Array(fn.podData);
    const f32 = new Float32Array(fn.podData);
    fn.launches.forEach((launch, i) => {
      const base = (i * UNIFORM_SLOT) / 4;
      launch.pods.forEach((expr, j) => {
        const value = evaluate(expr, vars);
        const slot = launch.podSlots[j];
        const type = launch.podTypes[slot];
        if (type === "f32") f32[base + slot] = value;
        else if (type === "u32") u32[base + slot] = value;
        else i32[base + slot] = value;
      });
      const x = evaluate(launch.grid[0], vars);
      const y = evaluate(launch.grid[1], vars);
      // Kernels read blockIdx.z * gridDim.x + blockIdx.x as the x block and stop past
      // the grid pod (packGridDimX), so an x count over the per-dimension limit is folded into z.
      const z = Math.ceil(x / MAX_GROUPS);
      u32[base + launch.gridSlot] = x - 1;
      launch.dispatch = x > 0 && y > 0 ? [Math.min(x, MAX_GROUPS), y, z] : null;
    });
    this.device.queue.writeBuffer(fn.uniforms, 0, fn.podData);
    for (const launch of fn.launches) {
      if (!launch.dispatch) continue;
      pass.setPipeline(launch.pipeline);
      pass.setBindGroup(0, launch.bindGroup);
      pass.dispatchWorkgroups(...launch.dispatch);
    }
  }

  /**
   * Runs verify with its inputs and the values of its symbolic sizes, then argmax_rows on its
   * logits in the same pass (where `argmaxRows`); resolves to the greedy token of each of its
   * `vars.v` rows.
   * @returns {Promise<Int32Array>}
   */
  callArgmaxRows(tensors, vars) {
    const run = this.#previous.then(() => this.#submit("verify", tensors, vars, vars.v, this.argmaxRows));
    this.#previous = run.catch(() => {});
    return run;
  }

  /**
   * Submits function `name` (and `then`, a function reading its output, in the same pass) and
   * reads back the first `count` floats of its output (or int32s of `then`'s).
   */
  async #submit(name, tensors, vars, count, then = null) {
    const fn = this.functions[name];
    for (const [input, values] of Object.entries(tensors)) this.device.queue.writeBuffer(fn.inputs[input], 0, values);
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    this.#record(pass, fn, vars);
    if (then) this.#record(pass, then, vars);
    pass.end();
    const read = then ?? fn;
    if (!read.readback) {
      read.readback = this.device.createBuffer({
        size: read.output.size,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      this.#readbacks.push(read.readback);
    }
    const { output: source, readback } = read;
    encoder.copyBufferToBuffer(source, 0, readback, 0, count * 4);
    this.device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ, 0, count * 4);
    const bytes = readback.getMappedRange(0, count * 4).slice(0);
    readback.unmap();
    this.readbackBytes += count * 4;
    return then ? new Int32Array(bytes) : new Float32Array(bytes);
  }

  /**
   * A copy of the KV cache's first `count` rows (snapshotLayout) in a GPU buffer of its own,
   * taken after the calls made before it; null where the GPU has no memory for it, or the
   * model's rows cannot be copied.
   * @returns {Promise<{buffer: GPUBuffer, count: number, bytes: number} | null>}
   */
  snapshot(count) {
    return this.#inTurn(async () => {
      const layout = snapshotLayout(this.manifest, count);
      if (!layout || count === 0) return null;
      this.device.pushErrorScope("out-of-memory");
      const buffer = this.device.createBuffer({
        size: layout.bytes,
        usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      });
      const encoder = this.device.createCommandEncoder();
      layout.segments.forEach(({ offset, rowBytes }, i) =>
        encoder.copyBufferToBuffer(this.cache[i], 0, buffer, offset, count * rowBytes),
      );
      this.device.queue.submit([encoder.finish()]);
      if (await this.device.popErrorScope()) {
        buffer.destroy();
        return null;
      }
      return { buffer, count, bytes: layout.bytes };
    });
  }

  /** Copies rows `from`..`to` of a snapshot into the KV cache, after the calls made before. */
  restore(snapshot, from, to) {
    return this.#inTurn(() => {
      const { segments } = snapshotLayout(this.manifest, snapshot.count);
      const encoder = this.device.createCommandEncoder();
      segments.forEach(({ offset, rowBytes }, i) =>
        encoder.copyBufferToBuffer(
          snapshot.buffer,
          offset + from * rowBytes,
          this.cache[i],
          from * rowBytes,
          (to - from) * rowBytes,
        ),
      );
      this.device.queue.submit([encoder.finish()]);
    });
  }

  /**
   * The bytes of a snapshot's first `count` rows, in snapshotLayout's order (to be stored).
   * Not counted in readbackBytes: they are no step's output.
   * @returns {Promise<Uint8Array>}
   */
  async readSnapshot(snapshot, count) {
    const from = snapshotLayout(this.manifest, snapshot.count);
    const to = snapshotLayout(this.manifest, count);
    const readback = this.device.createBuffer({
      size: to.bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = this.device.createCommandEncoder();
    from.segments.forEach(({ offset, rowBytes }, i) =>
      encoder.copyBufferToBuffer(snapshot.buffer, offset, readback, to.segments[i].offset, count * rowBytes),
    );
    this.device.queue.submit([encoder.finish()]);
    try {
      await readback.mapAsync(GPUMapMode.READ);
      return new Uint8Array(readback.getMappedRange().slice(0));
    } finally {
      readback.destroy();
    }
  }

  /**
   * A snapshot of `count` rows made from stored bytes (readSnapshot's), or null where the GPU
   * has no memory for it.
   * @param {Uint8Array} bytes
   * @returns {Promise<{buffer: GPUBuffer, count: number, bytes: number} | null>}
   */
  async snapshotFrom(bytes, count) {
    this.device.pushErrorScope("out-of-memory");
    const buffer = this.device.createBuffer({
      size: bytes.length,
      usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.device.queue.writeBuffer(buffer, 0, bytes);
    if (await this.device.popErrorScope()) {
      buffer.destroy();
      return null;
    }
    return { buffer, count, bytes: bytes.length };
  }

  /** Frees a snapshot's memory. */
  freeSnapshot(snapshot) {
    snapshot.buffer.destroy();
  }

  /** Runs `task` once the calls made before it are submitted; the next call waits for it. */
  #inTurn(task) {
    const run = this.#previous.then(task);
    this.#previous = run.catch(() => {});
    return run;
  }

  /**
   * Times every launch of one call separately (one submit each): for `scripts/bench --profile`.
   * @returns {Promise<{kernel: string, ms: number}[]>}
   */
  async profile(name, ids, totalLen) {
    const fn = this.functions[name];
    await this.run(name, ids, totalLen); // fills the uniforms and dispatch sizes
    const times = [];
    for (const launch of fn.launches) {
      if (!launch.dispatch) continue;
      const start = performance.now();
      const encoder = this.device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(launch.pipeline);
      pass.setBindGroup(0, launch.bindGroup);
      pass.dispatchWorkgroups(...launch.dispatch);
      pass.end();
      this.device.queue.submit([encoder.finish()]);
      await this.device.queue.onSubmittedWorkDone();
      times.push({ kernel: launch.kernel, ms: performance.now() - start });
    }
    return times;
  }

  destroy() {
    for (const buffer of [...this.buffers, ...this.#readbacks]) buffer.destroy();
    this.buffers = [];
    this.#readbacks = [];
  }
}
