// Calls kernels of a linked WebAssembly module (compiler/targets/wasm/link.py) the way the CPU
// backend calls them (web/src/backends/wasm_executor.js): TVM's packed calling convention,
// every tensor a DLTensor in the module's memory. For tests/cpu_kernels.py's `run_wasm`.
//
// stdin: one JSON request {wasm: path, tensors: {name: {dtype, shape, data: base64}},
//        calls: [{symbol, args: [tensor name, ...]}]}
// stdout: {name: base64 of the tensor's bytes after the calls}
import { readFileSync } from "node:fs";

// Node 20 and 21 keep relaxed SIMD, which the kernels are built with, behind a flag that V8
// reads when it compiles a module (on by default from Node 22).
if (Number(process.versions.node.split(".")[0]) < 22) {
  (await import("node:v8")).setFlagsFromString(
    "--experimental-wasm-relaxed-simd",
  );
}

const ANY_BYTES = 16; // a TVMFFIAny: type index, padding, 8-byte value
const FFI_DLTENSOR_PTR = 7;
const DLTENSOR_BYTES = 40; // on wasm32
const DL_CPU = 1;
const DTYPES = {
  float32: [2, 32],
  float16: [2, 16],
  int16: [0, 16],
  int32: [0, 32],
  int64: [0, 64],
  uint32: [1, 32],
};

const request = JSON.parse(readFileSync(0, "utf8"));
const module = new WebAssembly.Module(readFileSync(request.wasm));
const memory = new WebAssembly.Memory({
  initial: 256,
  maximum: 65536,
  shared: true,
});
const { exports } = new WebAssembly.Instance(module, { env: { memory } });

function alloc(bytes) {
  const address = exports.kiln_alloc(Math.max(bytes, 16));
  if (address === 0) throw new Error(`out of memory for ${bytes} bytes`);
  return address;
}

// Each tensor: its bytes, and a DLTensor with its shape, allocated once.
const tensors = {};
for (const [name, { dtype, shape, data }] of Object.entries(request.tensors)) {
  const bytes = Buffer.from(data, "base64");
  const address = alloc(bytes.length);
  new Uint8Array(memory.buffer, address, bytes.length).set(bytes);
  const header = alloc(DLTENSOR_BYTES + 8 * shape.length);
  const view = new DataView(memory.buffer);
  const [code, bits] = DTYPES[dtype];
  view.setUint32(header, address, true);
  view.setInt32(header + 4, DL_CPU, true);
  view.setInt32(header + 8, 0, true);
  view.setInt32(header + 12, shape.length, true);
  view.setUint8(header + 16, code);
  view.setUint8(header + 17, bits);
  view.setUint16(header + 18, 1, true);
  view.setUint32(header + 20, header + DLTENSOR_BYTES, true);
  view.setUint32(header + 24, 0, true); // compact: no strides
  view.setBigUint64(header + 32, 0n, true);
  shape.forEach((dim, d) =>
    view.setBigInt64(header + DLTENSOR_BYTES + 8 * d, BigInt(dim), true),
  );
  tensors[name] = { address, size: bytes.length, header };
}

const result = alloc(ANY_BYTES);
for (const { symbol, args } of request.calls) {
  const block = alloc(args.length * ANY_BYTES);
  const view = new DataView(memory.buffer);
  args.forEach((name, i) => {
    view.setInt32(block + i * ANY_BYTES, FFI_DLTENSOR_PTR, true);
    view.setInt32(block + i * ANY_BYTES + 4, 0, true);
    view.setBigUint64(
      block + i * ANY_BYTES + 8,
      BigInt(tensors[name].header),
      true,
    );
  });
  if (exports[symbol](0, block, args.length, result) !== 0) {
    const at = exports.kiln_last_error();
    const bytes = new Uint8Array(memory.buffer, at, 1024);
    throw new Error(
      `${symbol} failed: ${new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(0)))}`,
    );
  }
}

const answer = {};
for (const [name, { address, size }] of Object.entries(tensors)) {
  answer[name] = Buffer.from(
    new Uint8Array(memory.buffer, address, size),
  ).toString("base64");
}
process.stdout.write(JSON.stringify(answer));
