"""Times llama.cpp (llama-cpp-python) natively on a GGUF, as the benchmark's peer.

    python llama_cpp_run.py MODEL.gguf IDS.json DECODE_TOKENS RUNS THREADS

Feeds the prompt token ids of IDS.json (what Kiln fed, template applied), then picks
DECODE_TOKENS greedy tokens with the end-of-sequence token held off, RUNS + 1 times (the
first a warm-up); prints a JSON line of its version and the CPU features it was built for,
then one per run: time to first token (prefill and the first pick), time from the first
token to the last, and the tokens. Runs in the peer's own venv (tools/peer/llama-cpp.txt).
A failure prints one line (what failed and why) and exits with status 1.
"""

import json
import sys
import time


def main(gguf: str, ids_path: str, decode_tokens: int, runs: int, threads: int) -> None:
    import llama_cpp
    import numpy as np

    with open(ids_path) as file:
        ids = json.load(file)
    llm = llama_cpp.Llama(
        model_path=gguf,
        n_ctx=len(ids) + decode_tokens + 8,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    vocab = llm.n_vocab()
    eos = llm.token_eos()
    system = llama_cpp.llama_print_system_info().decode().strip()
    print(json.dumps({"version": llama_cpp.__version__, "system": system}), flush=True)

    def pick() -> int:
        # With logits for the last position only, the context holds just that row.
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).copy()
        logits[eos] = -np.inf
        return int(np.argmax(logits))

    for _ in range(runs + 1):
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        tokens = [pick()]
        first = time.perf_counter()
        while len(tokens) < decode_tokens:
            llm.eval([tokens[-1]])
            tokens.append(pick())
        last = time.perf_counter()
        result = {
            "time_to_first_token_s": first - start,
            "after_first_s": last - first,
            "tokens": tokens,
            "reply": llm.detokenize(tokens[:20]).decode("utf-8", "replace"),
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    gguf, ids_path, decode_tokens, runs, threads = sys.argv[1:]
    try:
        main(gguf, ids_path, int(decode_tokens), int(runs), int(threads))
    except Exception as err:  # one line for the benchmark, not a traceback
        first = (str(err).strip().splitlines() or [""])[0]
        sys.exit(f"llama_cpp_run.py: {type(err).__name__}: {first}"[:500])
