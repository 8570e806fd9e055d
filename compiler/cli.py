"""Command line: `build-web MODEL [options]` and `build-web serve DIR [options]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import BuildError

USAGE = """
  build-web MODEL [-q QUANT] [-o DIR] [--context-window N] [--prefill-chunk N]
                  [--cache-dir DIR] [--no-runtime]
                  [--extension] [--serve [--port N] [--host H]]
  build-web serve DIR [--port N] [--host H]"""


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )


def _serve(folder: Path, port: int, host: str) -> int:
    from .serve import serve

    # One line per request from the server's logger, on stderr beside the build's progress.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("kiln.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        serve(folder, port, host)
    except OSError as err:  # e.g. the port is taken, or the address is not this machine's
        print(f"build-web: error: cannot serve on {host}:{port}: {err.strerror}", file=sys.stderr)
        return 1
    return 0


def serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="build-web serve",
        description="Serve a folder written by build-web (a model folder, or the folder "
        "holding several with the chat page) over HTTP.",
    )
    parser.add_argument("folder", type=Path, metavar="DIR", help="the folder to serve")
    _add_server_options(parser)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"build-web: error: {args.folder} is not a folder", file=sys.stderr)
        return 1
    return _serve(args.folder, args.port, args.host)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # "serve" as the first word serves a built folder; a model folder named "serve" is
    # still reachable as ./serve.
    if argv[:1] == ["serve"]:
        return serve_main(argv[1:])
    from .loader import PRESETS_DIR
    from .quantization import SCHEMES  # imports TVM (seconds), which serving does not need

    parser = argparse.ArgumentParser(
        prog="build-web",
        usage=USAGE,
        description="Compile a language model for WebGPU into a folder a static server can "
        "serve; `build-web serve DIR` serves such a folder.",
    )
    parser.add_argument(
        "model",
        help="preset name ("
        + ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.json")))
        + "), Hugging Face folder, or .gguf file",
    )
    parser.add_argument(
        "--quantization",
        "-q",
        choices=sorted(SCHEMES),
        help="as-stored keeps a GGUF file's tensor types (the default for .gguf and presets); "
        "the others quantize every weight again (q4f32 is the default for Hugging Face folders)",
    )
    parser.add_argument(
        "--output", "-o", type=Path, help="output folder (default dist/MODEL-QUANT)"
    )
    parser.add_argument("--context-window", type=int, help="KV-cache capacity in tokens")
    parser.add_argument("--prefill-chunk", type=int, default=128, help="tokens per prefill step")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="where compiled kernels and fetched presets are kept (default: $KILN_CACHE_DIR, "
        "else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln)",
    )
    parser.add_argument(
        "--runtime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="copy the runtime and chat page into the model folder and refresh the chat site "
        "beside it (the default); --no-runtime writes the model alone, for an app that has "
        "the runtime from npm",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="serve the chat site (the output folder's parent) afterwards",
    )
    parser.add_argument(
        "--extension",
        action="store_true",
        help="also package a Chrome extension (folder and .zip beside the output folder)",
    )
    _add_server_options(parser)
    args = parser.parse_args(argv)
    if not args.runtime and (args.serve or args.extension):
        print(
            "build-web: error: --serve and --extension need the runtime that --no-runtime "
            "leaves out",
            file=sys.stderr,
        )
        return 1
    if args.cache_dir:
        os.environ["KILN_CACHE_DIR"] = str(args.cache_dir.resolve())  # read by resources.py
    try:
        from .build import build

        out = build(
            args.model,
            args.quantization,
            args.output,
            args.context_window,
            args.prefill_chunk,
            runtime=args.runtime,
        )
        if args.extension:
            from .extension import build_extension

            print(*build_extension(out), sep="\n")
    except BuildError as err:
        print(f"build-web: error: {err}", file=sys.stderr)
        return 1
    print(out)
    if args.serve:
        # The chat site sits beside the model folders: its picker offers every one of them.
        return _serve(out.parent, args.port, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
