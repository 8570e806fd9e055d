"""Command line: `build-web MODEL [options]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import BuildError
from .quantization import SCHEMES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build-web",
        description="Compile a language model for WebGPU into a folder a static server can serve.",
    )
    parser.add_argument(
        "model", help="preset name (see models/), Hugging Face folder, or .gguf file"
    )
    parser.add_argument("--quantization", "-q", default="q4f32", choices=sorted(SCHEMES))
    parser.add_argument(
        "--output", "-o", type=Path, help="output folder (default dist/MODEL-QUANT)"
    )
    parser.add_argument("--context-window", type=int, help="KV-cache capacity in tokens")
    parser.add_argument("--prefill-chunk", type=int, default=128, help="tokens per prefill step")
    parser.add_argument("--serve", action="store_true", help="serve the output folder afterwards")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        from .build import build

        out = build(
            args.model, args.quantization, args.output, args.context_window, args.prefill_chunk
        )
    except BuildError as err:
        print(f"build-web: error: {err}", file=sys.stderr)
        return 1
    print(out)
    if args.serve:
        from .serve import serve

        serve(out, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
