// A thread of the CPU backend: its own instance of the model's kernels on the shared memory,
// with its own stack, running its share of every parallel loop until the worker is
// terminated (kiln_thread_loop in compiler/wasm/runtime.c). A browser's Worker, or in Node a
// worker_threads Worker, whose messages come through parentPort.
async function run({ module, memory, index, stackTop }) {
  const instance = await WebAssembly.instantiate(module, { env: { memory } });
  instance.exports.__stack_pointer.value = stackTop;
  instance.exports.kiln_thread_loop(index);
}

if (typeof self === "object" && typeof self.postMessage === "function") {
  self.onmessage = ({ data }) => run(data);
} else {
  import("node:worker_threads").then(({ parentPort }) => parentPort.once("message", run));
}
