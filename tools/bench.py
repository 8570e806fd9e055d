"""Benchmark: build a model, run it in headless Chromium, print one JSON line of figures.

    scripts/bench [MODEL ...] [--quantization as-stored q4f32] [--runs 3] [--variant software|gpu]
                  [--backend webgpu wasm] [--threads N]
    scripts/bench --profile ...   time each kernel of a decode step and of a prefill instead
    scripts/bench ... --peer transformers.js|wllama|llama.cpp [--rounds N]   also run a peer
    scripts/bench ... --peer transformers.js [--peer-dtype q8 q4 fp32]   at these dtypes
    scripts/bench ... --long-prompt   also prefill prompts of 1,000 and 4,000 tokens
    scripts/bench ... --prefix-cache  also time to first token with a cached system prompt
    scripts/bench ... --speculation   also decode with and without prompt-lookup speculation

Per chat model and quantization: prefill tok/s on a fixed prompt of about 100 tokens, decode
tok/s over 64 greedy tokens and over 64 seeded sampled ones (SAMPLED), the bytes read back from
the device and the page's own milliseconds (host_ms_per_token) per token of each, time to
first token, load time, bytes of JS and of the kernels
(WGSL, or the WebAssembly module), the GPU buffer (or WebAssembly memory) bytes the model holds
(allocated once, so also the peak), and the kernel launches of a decode step and of a prefill
chunk in the plans of the kernel set that ran; the median of `runs` runs after one warm-up run,
on each backend asked for. With `--peer`, after a model's rows: the peer's rows on the same
prompt token ids and token counts (see tools/peer.py; transformers.js gives one per dtype, q8
(its default on WebAssembly), q4 and fp32 unless `--peer-dtype` names fewer), each followed by
one line of ratios, ours / that row's, for each of our rows of that model; with `--rounds N`,
ours and the peer's alternate N times and a last line per peer row gives each ratio's median
over the rounds, with its range. An embedding model's row gives embeddings per second for
requests of 1, 8 and 32 sentences instead. With `--long-prompt`, after each row: prefill tok/s
over prompts of 1,000 and 4,000 tokens (the prompt's ids repeated; within the context window),
where attention's share has grown, and the share of the shorter one's speed the longer one
keeps. With `--prefix-cache`, after each row: the time to first token of a chat request whose
system prompt is about 1,000 tokens, cold (an engine and storage that never saw it), cached
(the same system prompt, another question) and after a reload (the page reloaded, a new
engine, the prefix read from the browser's storage), with the prompt tokens each reused. With
`--speculation`, after each row: decode tok/s over SPECULATION_TOKENS greedy tokens of a
copy-heavy request (a code snippet of about 200 tokens to give back with one name changed) and
of a free-form one (a short story), by two engines on the same backend, prompt-lookup
speculation on and off, their runs alternating (`runs` each); the medians, their ratio, the
draft tokens checked and kept, and whether the replies were the same."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from compiler.build import build

from . import peer
from .browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PREFIX_CACHE_WRITTEN,
    open_engine_page,
    serve_folder,
)

PROMPT = (
    "You are given a short passage. Passage: WebGPU is a web standard that exposes modern "
    "graphics and compute capabilities of the device to JavaScript. Compute shaders written in "
    "WGSL can run matrix products, which is what running a language model mostly needs. A "
    "model compiled ahead of time into a set of kernels and an execution plan can then run in "
    "the page with no server. Question: in two sentences, what does WebGPU make possible?"
)
DECODE_TOKENS = 64
# The sampled request timed beside the greedy one: as a chat page sends it.
SAMPLED = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 1}
LONG_PROMPTS = (1000, 4000)
SYSTEM_PROMPT_TOKENS = 1000
QUESTIONS = (
    "In two sentences, what does WebGPU make possible?",
    "Which language are the compute shaders written in?",
    "Does the page need a server to run the model?",
)


def bench_folder(
    browser,
    folder: Path,
    runs: int,
    variant: str | None = None,
    backend: str = "webgpu",
    threads: int | None = None,
) -> tuple[dict, list[int], str]:
    """The row of figures, the prompt's token ids as the engine fed them, and the text it
    tokenized to them (the chat template applied to PROMPT, or PROMPT itself)."""
    with serve_folder(folder) as url:
        page = open_engine_page(browser, url, variant=variant, backend=backend, threads=threads)
        text, prompt = page.evaluate(
            """(t) => {
                const tokenizer = engine.tokenizer;
                // a base model without a chat template reads plain text
                if (!tokenizer.template) return [t, tokenizer.encodePrompt(t)];
                const text = tokenizer.applyChatTemplate([{role: 'user', content: t}]);
                return [text, tokenizer.encode(text)];
            }""",
            PROMPT,
        )
        results = []
        for _ in range(runs + 1):  # the first run warms up pipelines and caches
            results.append(
                page.evaluate(
                    """async ([p, n, sampled]) => {
                        const read = async () => (await engine.runtimeStats()).readback_bytes;
                        const run = async (fields) => {
                            await engine.resetChat();
                            const before = await read();
                            const r = await engine.generate(p,
                                {max_tokens: n, ignore_eos: true, ...fields});
                            const bytes = (await read()) - before;
                            return {...r.stats, readback_per_token: bytes / r.tokens.length};
                        };
                        return {...await run({temperature: 0}), sampled: await run(sampled)};
                    }""",
                    [prompt, DECODE_TOKENS, SAMPLED],
                )
            )
        info = page.evaluate("async () => await engine.runtimeStats()")
        page.close()
    measured = results[1:]
    info_variant = info["variant"]
    kernels = json.loads((folder / f"kernels-{info_variant}.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    row = {
        "model": manifest["model_id"],
        "quantization": manifest["quantization"],
        "prompt_tokens": len(prompt),
        "decode_tokens": DECODE_TOKENS,
        "prefill_tok_s": round(statistics.median(r["prefill_tokens_per_s"] for r in measured), 2),
        "decode_tok_s": round(statistics.median(r["decode_tokens_per_s"] for r in measured), 2),
        "time_to_first_token_s": round(
            statistics.median(r["time_to_first_token_s"] for r in measured), 2
        ),
        # the prefill's and every decode step's reads from the device, over the tokens made
        "readback_bytes_per_token": round(
            statistics.median(r["readback_per_token"] for r in measured), 1
        ),
        # the page's own work per decoded token (engine stats' host_ms_per_token)
        "host_ms_per_token": round(statistics.median(r["host_ms_per_token"] for r in measured), 2),
        "sampled_host_ms_per_token": round(
            statistics.median(r["sampled"]["host_ms_per_token"] for r in measured), 2
        ),
        "sampled_decode_tok_s": round(
            statistics.median(r["sampled"]["decode_tokens_per_s"] for r in measured), 2
        ),
        "sampled_readback_bytes_per_token": round(
            statistics.median(r["sampled"]["readback_per_token"] for r in measured), 1
        ),
        "load_s": round(info["load_seconds"], 2),
        "js_bytes": (folder / "kiln.js").stat().st_size,
        "kernel_bytes": (
            manifest["variants"]["wasm"]["wasm"]["bytes"]
            if backend == "wasm"
            else sum(len(k["wgsl"].encode()) for k in kernels.values())
        ),
        "weight_bytes": sum(s["bytes"] for s in manifest["shards"]),
        "source_tensor_bytes": manifest["source_tensor_bytes"],
        "model_bytes": info["model_bytes"],
        **launches(manifest, info_variant),
        "adapter": info["adapter"],
        "backend": backend,
        "variant": info_variant,
        "threads": info["threads"],
        "runs": runs,
    }
    return row, prompt, text


def launches(manifest: dict, variant: str) -> dict:
    """Kernel launches per decode step and per prefill chunk in the plans of the kernel set that
    ran, and per layer (a step's launches over the model's layers)."""
    plans = manifest["variants"][variant]["functions"]
    decode, prefill = (len(plans[step]["launches"]) for step in ("decode", "prefill"))
    layers = manifest["config"]["num_hidden_layers"]
    return {
        "launches_per_decode_step": decode,
        "launches_per_prefill_chunk": prefill,
        "decode_launches_per_layer": round(decode / layers, 1),
    }


def long_prompt_row(
    browser, folder: Path, prompt: list[int], variant: str | None, backend: str, threads: int | None
) -> dict:
    """Prefill tok/s over LONG_PROMPTS tokens (`prompt` repeated, cut to the context window),
    one run each."""
    with serve_folder(folder) as url:
        page = open_engine_page(browser, url, variant=variant, backend=backend, threads=threads)
        window = page.evaluate("engine.manifest.context_window")
        speeds = {}
        for length in LONG_PROMPTS:
            length = min(length, window - 2)
            ids = (prompt * (length // len(prompt) + 1))[:length]
            stats = page.evaluate(
                """async (p) => {
                    engine.resetChat();
                    return (await engine.generate(p, {temperature: 0, max_tokens: 1})).stats;
                }""",
                ids,
            )
            speeds[length] = stats["prefill_tokens_per_s"]
        page.close()
    manifest = json.loads((folder / "manifest.json").read_text())
    shortest, longest = min(speeds), max(speeds)
    return {
        "model": manifest["model_id"],
        "backend": backend,
        "long_prompt_prefill_tok_s": {str(k): round(v, 2) for k, v in speeds.items()},
        "kept_at_longest": round(speeds[longest] / speeds[shortest], 2),
    }


# A system prompt of SYSTEM_PROMPT_TOKENS tokens or a few more (sentences added until it is that
# long), the page's engine made (again, after a reload), and a request timed to its first token.
SYSTEM_PROMPT = """([sentences, length]) => {
    let text = "Answer from these notes only.";
    for (let i = 0; engine.tokenizer.encode(text).length < length; i++)
        text += " " + sentences[i % sentences.length];
    return text;
}"""
REOPEN = """async (options) => {
    window.kiln = await import(location.origin + "/kiln.js");
    window.engine = await kiln.CreateEngine(location.origin + "/", options);
}"""
FIRST_TOKEN = """async ([system, question]) => {
    const messages = [{role: "system", content: system}, {role: "user", content: question}];
    const start = performance.now();
    const r = await engine.chat.completions.create({messages, max_tokens: 1, temperature: 0});
    return {s: (performance.now() - start) / 1000, prompt: r.usage.prompt_tokens,
            cached: r.usage.prompt_tokens_details.cached_tokens};
}"""


# Prompt-lookup speculation: a request whose reply copies much of its prompt, and one whose reply
# does not.
SPECULATION_CODE = """def load_scores(path):
    scores = {}
    with open(path) as handle:
        for line in handle:
            name, value = line.strip().split(",")
            scores.setdefault(name, []).append(float(value))
    return scores


def average(values):
    if not values:
        return 0.0
    return sum(values) / len(values)


def report(scores):
    lines = []
    for name in sorted(scores):
        lines.append(f"{name}: {average(scores[name]):.2f}")
    return "\\n".join(lines)


if __name__ == "__main__":
    print(report(load_scores("scores.csv")))
"""
SPECULATION_TASKS = {
    "copy": "Copy this Python code exactly, but rename the function average to mean:\n\n"
    f"```python\n{SPECULATION_CODE}```",
    "free": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}
SPECULATION_TOKENS = 128
SPECULATE = """async ([content, count]) => {
    const messages = [{role: "user", content}];
    const r = await engine.chat.completions.create({messages, max_tokens: count, temperature: 0});
    const stats = (await engine.runtimeStats()).last_request;
    return {text: r.choices[0].message.content, tokens: r.usage.completion_tokens,
            tok_s: stats.decode_tokens_per_s, speculation: stats.speculation};
}"""


def speculation_row(
    browser, folder: Path, runs: int, variant: str | None, backend: str, threads: int | None
) -> dict:
    """Decode tok/s of each of SPECULATION_TASKS, speculation off and on: two engines (pages)
    on the same backend, their runs alternating after a warm-up each, the medians."""
    row: dict = {"backend": backend}
    with serve_folder(folder) as url:
        pages = {
            name: open_engine_page(
                browser, url, variant=variant, backend=backend, threads=threads, options=options
            )
            for name, options in (("off", {"speculation": False}), ("on", {"speculation": True}))
        }
        for page in pages.values():
            page.evaluate(SPECULATE, ["Hi", 4])
        for task, content in SPECULATION_TASKS.items():
            results: dict[str, list[dict]] = {"off": [], "on": []}
            for _ in range(runs):
                for name, page in pages.items():
                    results[name].append(page.evaluate(SPECULATE, [content, SPECULATION_TOKENS]))
            off, on = (statistics.median(r["tok_s"] for r in results[k]) for k in ("off", "on"))
            row[task] = {
                "tokens": results["on"][0]["tokens"],
                "decode_tok_s_off": round(off, 2),
                "decode_tok_s_on": round(on, 2),
                "ratio": round(on / off, 2),
                "draft_tokens": results["on"][0]["speculation"]["draft_tokens"],
                "accepted_tokens": results["on"][0]["speculation"]["accepted_tokens"],
                "same_reply": all(
                    r["text"] == results["off"][0]["text"] for r in results["on"] + results["off"]
                ),
            }
        for page in pages.values():
            page.close()
    manifest = json.loads((folder / "manifest.json").read_text())
    return {"model": manifest["model_id"], "quantization": manifest["quantization"], **row}


# A greedy request for its tokens' logprobs and the TOP_LOGPROBS likeliest of each: its
# decode tok/s, the page's own milliseconds and the bytes read back per token.
TOP_LOGPROBS = 5
LOGPROBS = """async ([p, n, top]) => {
    await engine.resetChat();
    const before = (await engine.runtimeStats()).readback_bytes;
    const r = await engine.generate(p, {max_tokens: n, ignore_eos: true, temperature: 0,
                                        logprobs: true, top_logprobs: top});
    const bytes = (await engine.runtimeStats()).readback_bytes - before;
    return {...r.stats, readback_per_token: bytes / r.tokens.length};
}"""


def logprobs_row(
    browser,
    folder: Path,
    prompt: list[int],
    runs: int,
    variant: str | None,
    backend: str,
    threads: int | None,
) -> dict:
    """A request for logprobs, picked on the device (the default) and in the page (an engine
    loaded with devicePicks: false, reading each step's logits back): two pages, their runs
    alternating after a warm-up each, the medians."""
    row: dict = {"backend": backend, "top_logprobs": TOP_LOGPROBS}
    with serve_folder(folder) as url:
        pages = {
            where: open_engine_page(
                browser,
                url,
                variant=variant,
                backend=backend,
                threads=threads,
                options={"speculation": False, "devicePicks": where == "device"},
            )
            for where in ("device", "page")
        }
        results: dict[str, list[dict]] = {"device": [], "page": []}
        for index in range(runs + 1):
            for where, page in pages.items():
                result = page.evaluate(LOGPROBS, [prompt, DECODE_TOKENS, TOP_LOGPROBS])
                if index:  # the first run warms up
                    results[where].append(result)
        for page in pages.values():
            page.close()
    for where, measured in results.items():
        row[where] = {
            key: round(statistics.median(r[stat] for r in measured), 2)
            for key, stat in (
                ("decode_tok_s", "decode_tokens_per_s"),
                ("host_ms_per_token", "host_ms_per_token"),
                ("readback_bytes_per_token", "readback_per_token"),
            )
        }
    row["ratio"] = round(row["device"]["decode_tok_s"] / row["page"]["decode_tok_s"], 2)
    manifest = json.loads((folder / "manifest.json").read_text())
    return {"model": manifest["model_id"], "quantization": manifest["quantization"], **row}


def prefix_cache_row(
    browser, folder: Path, variant: str | None, backend: str, threads: int | None
) -> dict:
    """Time to first token (a request of one token, in the page) for a system prompt of about
    1,000 tokens and a short question: cold, cached (another question) and after a reload; one
    run each, in a browser context of its own (an empty storage)."""
    options = {
        k: v
        for k, v in (("variant", variant), ("backend", backend), ("threads", threads))
        if v is not None
    }
    with serve_folder(folder) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/manifest.json")
        page.evaluate(REOPEN, options)
        system = page.evaluate(SYSTEM_PROMPT, [SENTENCES, SYSTEM_PROMPT_TOKENS])
        page.evaluate(FIRST_TOKEN, ["", "Hi"])  # warms the kernels up
        cold = page.evaluate(FIRST_TOKEN, [system, QUESTIONS[0]])
        cached = page.evaluate(FIRST_TOKEN, [system, QUESTIONS[1]])
        stored = page.evaluate(PREFIX_CACHE_WRITTEN)
        page.reload()
        page.evaluate(REOPEN, options)
        reloaded = page.evaluate(FIRST_TOKEN, [system, QUESTIONS[2]])
        context.close()
    manifest = json.loads((folder / "manifest.json").read_text())
    return {
        "model": manifest["model_id"],
        "quantization": manifest["quantization"],
        "backend": backend,
        "prompt_tokens": [r["prompt"] for r in (cold, cached, reloaded)],
        "ttft_cold_s": round(cold["s"], 3),
        "ttft_cached_s": round(cached["s"], 3),
        "ttft_after_reload_s": round(reloaded["s"], 3),
        "cached_tokens": [r["cached"] for r in (cold, cached, reloaded)],
        "stored_bytes": stored["stored_bytes"],
    }


# Sentences of everyday length for the encoder benchmark (10 to 25 words each).
SENTENCES = [
    f"{subject} {verb} {thing} {place}."
    for subject, verb in (
        ("The meeting with the design team", "moved"),
        ("My sister's train from Lyon", "arrives"),
        ("The quarterly report on browser usage", "was sent"),
        ("A short note about the new laptop", "lists"),
    )
    for thing, place in (
        ("to Thursday afternoon", "because the room was booked"),
        ("with the slides and the budget", "in the shared folder"),
        ("before the end of the month", "at the office near the station"),
        ("and everything we decided last week", "on the wiki page for the project"),
        ("after lunch", "so please bring the printed copies"),
        ("three new ideas for the garden", "next to the old oak tree"),
        ("the recipe for lemon cake", "that grandmother wrote down"),
        ("to the client", "by email and by post"),
    )
]
EMBED_BATCHES = (1, 8, 32)


def embed_bench_folder(
    browser, folder: Path, runs: int, backend: str = "webgpu", threads: int | None = None
) -> dict:
    """An encoder's row: embeddings per second for requests of 1, 8 and 32 sentences (the
    median of `runs` requests of each size after a warm-up one)."""
    with serve_folder(folder) as url:
        page = open_engine_page(browser, url, backend=backend, threads=threads)
        timings = page.evaluate(
            """async ([sentences, sizes, runs]) => {
                const out = {};
                for (const size of sizes) {
                    const input = sentences.slice(0, size);
                    const times = [];
                    for (let i = 0; i <= runs; i++) {
                        const start = performance.now();
                        await engine.embeddings.create({input});
                        times.push(performance.now() - start);
                    }
                    out[size] = times.slice(1);
                }
                const tokens = (await engine.embeddings.create({input: sentences})).usage;
                return {out, tokens: tokens.total_tokens};
            }""",
            [SENTENCES, list(EMBED_BATCHES), runs],
        )
        info = page.evaluate("async () => await engine.runtimeStats()")
        page.close()
    manifest = json.loads((folder / "manifest.json").read_text())
    return {
        "model": manifest["model_id"],
        "quantization": manifest["quantization"],
        "backend": backend,
        "variant": info["variant"],
        "threads": info["threads"],
        "embeddings_per_s": {
            str(size): round(size / (statistics.median(ms) / 1000), 1)
            for size, ms in ((int(k), v) for k, v in timings["out"].items())
        },
        "tokens_per_input": round(timings["tokens"] / len(SENTENCES), 1),
        "load_s": round(info["load_seconds"], 2),
        "weight_bytes": sum(s["bytes"] for s in manifest["shards"]),
        "model_bytes": info["model_bytes"],
        "runs": runs,
    }


def ratios(rows: list[dict], peer_row: dict) -> dict:
    """Ours / peer, for prefill and decode, for each of our rows of the peer's model."""
    return {
        "model": peer_row["model"],
        "peer": peer_row["peer"],
        "peer_dtype": peer_row["dtype"],
        "ours_over_peer": [
            {
                "model": row["model"],
                "quantization": row["quantization"],
                "backend": row["backend"],
                "variant": row["variant"],
                "prefill": round(row["prefill_tok_s"] / peer_row["prefill_tok_s"], 2),
                "decode": round(row["decode_tok_s"] / peer_row["decode_tok_s"], 2),
            }
            for row in rows
        ],
    }


def median_ratios(rounds: list[dict]) -> dict:
    """Each row's median ratio over rounds of `ratios`, with the lowest and the highest."""
    rows = []
    for index, first in enumerate(rounds[0]["ours_over_peer"]):
        row = {k: first[k] for k in ("model", "quantization", "backend", "variant")}
        for phase in ("prefill", "decode"):
            values = sorted(r["ours_over_peer"][index][phase] for r in rounds)
            row[phase] = round(statistics.median(values), 2)
            row[f"{phase}_range"] = [values[0], values[-1]]
        rows.append(row)
    return {
        "model": rounds[0]["model"],
        "peer": rounds[0]["peer"],
        "peer_dtype": rounds[0]["peer_dtype"],
        "rounds": len(rounds),
        "median_ours_over_peer": rows,
    }


def _per_kernel(runs: list[list[dict]]) -> dict:
    """Each kernel's launches and time, the median of its per-run totals."""
    per_run: list[dict[str, list]] = []
    for times in runs:
        kernels: dict[str, list] = {}
        for t in times:
            entry = kernels.setdefault(t["kernel"], [0, 0.0])
            entry[0] += 1
            entry[1] += t["ms"]
        per_run.append(kernels)
    return {
        k: {"launches": count, "ms": round(statistics.median(run[k][1] for run in per_run), 1)}
        for k, (count, _) in per_run[0].items()
    }


def profile_folder(
    browser,
    folder: Path,
    variant: str | None = None,
    backend: str = "webgpu",
    threads: int | None = None,
    steps: int = 5,
) -> dict:
    """One decode step after a short prompt, and the prefill of the benchmark's prompt, each
    launch run alone (on WebGPU submitted and awaited alone: the per-kernel times include a
    submit round trip each, so their sum overstates a real step); `steps` of each, each
    kernel's time the median of its per-run totals (one run alone can carry a pause of the
    machine's)."""
    with serve_folder(folder) as url:
        page = open_engine_page(browser, url, variant=variant, backend=backend, threads=threads)
        decode, prefill, prompt_tokens = page.evaluate(
            """async ([steps, text]) => {
                const short = engine.tokenizer.encode("Hello, how are you?");
                const long = engine.tokenizer.encode(text);
                const decode = [];
                const prefill = [];
                for (let i = 0; i < steps; i++) {
                    decode.push(await engine.profileDecode(short));
                    prefill.push(await engine.profilePrefill(long));
                }
                return [decode, prefill, long.length];
            }""",
            [steps, PROMPT],
        )
        info = page.evaluate("async () => await engine.runtimeStats()")
        page.close()
    return {
        "model": folder.name,
        "backend": backend,
        "variant": info["variant"],
        "threads": info["threads"],
        "steps": steps,
        "decode_step_ms": round(statistics.median(sum(t["ms"] for t in r) for r in decode), 1),
        "kernels": _per_kernel(decode),
        "prefill_tokens": prompt_tokens,
        "prefill_ms": round(statistics.median(sum(t["ms"] for t in r) for r in prefill), 1),
        "prefill_kernels": _per_kernel(prefill),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["smollm2-135m-instruct"])
    parser.add_argument("--quantization", nargs="+", default=["as-stored", "q4f32"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--variant", choices=["software", "gpu"], help="kernel set (default: the adapter's pick)"
    )
    parser.add_argument(
        "--backend", nargs="+", choices=["webgpu", "wasm"], default=["webgpu"], help="where to run"
    )
    parser.add_argument(
        "--threads", type=int, help="the CPU backend's threads at most (default: one per core)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="per-kernel times of a decode step and of the prompt's prefill (median of 5)",
    )
    parser.add_argument(
        "--peer", choices=peer.PEERS, help="also run this peer on the same model and prompt"
    )
    parser.add_argument(
        "--peer-dtype",
        nargs="+",
        choices=peer.DTYPES,
        help="with --peer transformers.js: its dtypes to run, a row each (default: "
        f"{' '.join(peer.DTYPES)}; {peer.DEFAULT_DTYPE} is its default on WebAssembly)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --peer: alternate our runs and the peer's this many times and print the "
        "median of each round's ratios (a busy neighbour slows one round, not one side)",
    )
    parser.add_argument(
        "--long-prompt",
        action="store_true",
        help="also prefill prompts of 1,000 and 4,000 tokens (one run each)",
    )
    parser.add_argument(
        "--prefix-cache",
        action="store_true",
        help="also time to first token with a system prompt of about 1,000 tokens: cold, "
        "cached and after a reload (one run each)",
    )
    parser.add_argument(
        "--speculation",
        action="store_true",
        help="also decode tok/s with and without prompt-lookup speculation, on a copy-heavy and "
        "a free-form request (runs alternating)",
    )
    parser.add_argument(
        "--logprobs",
        action="store_true",
        help=f"also decode tok/s of a greedy request for logprobs (top {TOP_LOGPROBS}), picked "
        "on the device and in the page (devicePicks: false), runs alternating",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("dist/bench"))
    args = parser.parse_args(argv)
    if args.peer and args.profile:
        parser.error("--peer measures whole runs; it does not go with --profile")
    if args.peer_dtype and args.peer != "transformers.js":
        parser.error(
            "--peer-dtype picks transformers.js's dtypes: it goes with --peer transformers.js"
        )
    try:
        return _run(args)
    except peer.PeerError as err:
        raise SystemExit(f"bench: {err}") from None


def _run(args: argparse.Namespace) -> int:
    from playwright.sync_api import sync_playwright

    if args.peer:
        peer.install(args.peer)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for model in args.models:
            rows: list[dict] = []
            prompts: list[list[int]] = []
            texts: list[str] = []
            ours: list[tuple[Path, str | None, str]] = []  # the rows' folder, variant, backend
            for quantization in args.quantization:
                folder = build(
                    model, quantization, args.out_dir / f"{Path(model).name}-{quantization}"
                )
                encoder = json.loads((folder / "manifest.json").read_text())["task"] == "embedding"
                if encoder and (args.peer or args.profile):
                    raise SystemExit(f"{model}: --peer and --profile measure chat models only")
                for backend in args.backend:
                    variant = args.variant if backend == "webgpu" else None
                    if encoder:
                        print(
                            json.dumps(
                                embed_bench_folder(
                                    browser, folder, args.runs, backend, args.threads
                                )
                            ),
                            flush=True,
                        )
                        continue
                    if args.profile:
                        result = profile_folder(browser, folder, variant, backend, args.threads)
                    else:
                        result, prompt, text = bench_folder(
                            browser, folder, args.runs, variant, backend, args.threads
                        )
                        rows.append(result)
                        prompts.append(prompt)
                        texts.append(text)
                        ours.append((folder, variant, backend))
                    print(json.dumps(result), flush=True)
                    if args.long_prompt and not args.profile:
                        long_row = long_prompt_row(
                            browser, folder, prompt, variant, backend, args.threads
                        )
                        print(json.dumps(long_row), flush=True)
                    if args.prefix_cache and not args.profile:
                        prefix_row = prefix_cache_row(
                            browser, folder, variant, backend, args.threads
                        )
                        print(json.dumps(prefix_row), flush=True)
                    if args.logprobs and not args.profile:
                        lp_row = logprobs_row(
                            browser, folder, prompt, args.runs, variant, backend, args.threads
                        )
                        print(json.dumps(lp_row), flush=True)
                    if args.speculation and not args.profile:
                        spec_row = speculation_row(
                            browser, folder, args.runs, variant, backend, args.threads
                        )
                        print(json.dumps(spec_row), flush=True)
            if args.peer:
                if any(ids != prompts[0] for ids in prompts):
                    raise SystemExit(f"{model}: the builds tokenize the prompt differently")
                rounds: list[list[dict]] = []  # per round, the ratios to each peer row
                for round_index in range(args.rounds):
                    if round_index:
                        rows = [
                            bench_folder(browser, f, args.runs, v, b, args.threads)[0]
                            for f, v, b in ours
                        ]
                        for row in rows:
                            print(json.dumps(row), flush=True)
                    peer_rows = peer.bench(
                        args.peer,
                        browser,
                        model,
                        prompts[0],
                        PROMPT,
                        texts[0],
                        args.runs,
                        DECODE_TOKENS,
                        args.peer_dtype or peer.DTYPES,
                    )
                    rounds.append([])
                    for peer_row in peer_rows:
                        if peer_row["prompt_tokens"] != rows[0]["prompt_tokens"]:
                            raise SystemExit(f"{model}: the peer's prompt is not ours")
                        print(json.dumps(peer_row), flush=True)
                        rounds[-1].append(ratios(rows, peer_row))
                        print(json.dumps(rounds[-1][-1]), flush=True)
                if args.rounds > 1:
                    for each_round in zip(*rounds, strict=True):
                        print(json.dumps(median_ratios(list(each_round))), flush=True)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
