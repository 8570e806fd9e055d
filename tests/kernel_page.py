"""Runs one WebGPU kernel of a build (its WGSL) on a page's adapter, bound as the executor binds
it: its storage buffers in binding order, then a uniform buffer of its scalars. For tests that
hold a kernel to a reference on rows made for it."""

from __future__ import annotations

import math

import numpy as np

# `data`: named arrays ({type: "f32" | "i32", values}), each uploaded once; each run binds some
# of them to the kernel's buffers (`bind`: buffer -> array name, `out` among them), writes its
# scalars (`pods`, u32), dispatches `groups` workgroups and reads back `count` values of `out`.
RUN = """async ([kernel, order, data, runs]) => {
    const adapter = await navigator.gpu.requestAdapter();
    const device = await adapter.requestDevice({requiredLimits: {
        maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
        maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
        maxBufferSize: adapter.limits.maxBufferSize}});
    const module = device.createShaderModule({code: kernel.wgsl});
    const pipeline = device.createComputePipeline(
        {layout: "auto", compute: {module, entryPoint: kernel.name}});
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const types = {f32: Float32Array, i32: Int32Array};
    const buffers = {};
    for (const [name, {type, values}] of Object.entries(data)) {
        const array = types[type].from(values, Number);
        const size = Math.max(16, Math.ceil(array.byteLength / 16) * 16);
        buffers[name] = device.createBuffer({size, usage});
        device.queue.writeBuffer(buffers[name], 0, array);
    }
    const text = (v) => (Number.isFinite(v) ? v : String(v));
    const found = [];
    for (const {bind, pods, groups, count} of runs) {
        const uniforms = device.createBuffer(
            {size: 256, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST});
        device.queue.writeBuffer(uniforms, 0, Uint32Array.from(pods));
        const entries = order.map((slot, binding) =>
            ({binding, resource: {buffer: buffers[bind[slot]]}}));
        entries.push({binding: order.length, resource: {buffer: uniforms}});
        const group = device.createBindGroup({layout: pipeline.getBindGroupLayout(0), entries});
        const size = Math.ceil((count * 4) / 16) * 16;
        const read = device.createBuffer(
            {size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST});
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(groups, 1, 1);
        pass.end();
        encoder.copyBufferToBuffer(buffers[bind.out], 0, read, 0, size);
        device.queue.submit([encoder.finish()]);
        await read.mapAsync(GPUMapMode.READ);
        const out = new types[data[bind.out].type](read.getMappedRange()).slice(0, count);
        found.push(Array.from(out, text));
        read.unmap();
        uniforms.destroy();
        read.destroy();
    }
    device.destroy();
    return found;
}"""


def as_text(values) -> list:
    """Numbers as JSON can hold them: NaN and infinities as the strings Number() reads."""
    return [
        float(v)
        if math.isfinite(v)
        else "NaN"
        if math.isnan(v)
        else ("-" if v < 0 else "") + "Infinity"
        for v in np.asarray(values, np.float64).ravel().tolist()
    ]


def f32(values) -> dict:
    return {"type": "f32", "values": as_text(values)}


def i32(values) -> dict:
    return {"type": "i32", "values": np.asarray(values, np.int64).ravel().tolist()}


def as_floats(values: list) -> np.ndarray:
    return np.array([float(v) for v in values], np.float32)


def run_kernel(page, kernel: dict, order: list[str], data: dict, runs: list[dict]) -> list[list]:
    """Each run's `count` values of its `out` (NaN and infinities as strings); `kernel` is a
    kernels-*.json entry with its "name"."""
    return page.evaluate(RUN, [kernel, order, data, runs])
