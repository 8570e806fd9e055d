"""The runtime in a Node.js process, driven from Python the way a Playwright page is: the tests
of the runtime's logic that a browser adds nothing to (request checks, sampling, stop strings,
truncation, prefix reuse, tool calls) run there, against the same independent references.

`NodeEngine.evaluate(expression, arg)` works as `page.evaluate` does: a function's source is
called with `arg` (and awaited), any other expression is evaluated; `engine` and `kiln` are
globals of the process, as they are of an engine page (tools/browser.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RUNTIME = Path(__file__).resolve().parent.parent / "web" / "build" / "kiln.js"

HOST = Path(__file__).resolve().parent / "node_host.mjs"


class NodeError(Exception):
    """What a script evaluated in Node threw (Playwright raises likewise)."""


class NodeEngine:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def _read(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            status = self._process.wait(10)
            raise NodeError(f"node exited with status {status} (its stderr is above)")
        answer = json.loads(line)
        if "error" in answer:
            raise NodeError(answer["error"])
        return answer["value"]

    def evaluate(self, expression: str, arg: Any = None) -> Any:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"expression": expression, "arg": arg}) + "\n")
        self._process.stdin.flush()
        return self._read()


@contextlib.contextmanager
def node_engine(location: str | Path, **options: Any) -> Iterator[NodeEngine]:
    """A Node process with the engine of the model folder at `location` (a path or URL)
    loaded with `options` (CreateEngine's); the CPU backend unless `backend` says otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
    process = subprocess.Popen(
        ["node", str(HOST), RUNTIME.as_uri(), str(location), json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        node = NodeEngine(process)
        assert node._read() == "ready"
        yield node
    finally:
        process.kill()
        process.wait(10)
