"""The one helper through which `build-web` reports what it is doing (rich, on stderr)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

console = Console(stderr=True)


@contextlib.contextmanager
def step(title: str) -> Iterator[Callable[[str], None]]:
    notes: list[str] = []
    start = time.perf_counter()
    with console.status(f"{title}..."):
        yield notes.append
    extra = f" ({'; '.join(notes)})" if notes else ""
    console.print(f"[green]✓[/] {title}{extra} in {time.perf_counter() - start:.1f}s")


@contextlib.contextmanager
def bar(title: str, total: int) -> Iterator[Callable[[int], None]]:
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(title, total=total)
        yield lambda n: progress.advance(task, n)
    console.print(f"[green]✓[/] {title} ({total / 1e6:.1f} MB)")
