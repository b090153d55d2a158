"""Progress bars for long work; library code reports through `track`, the CLI decides whether bars are shown."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
_active: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("xbench_progress", default=None)
# Logs and CI are not terminals; rich would wrap them at 80 columns, cutting tables and messages.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Progress | None]:
    """Show bars for every `track` inside this block (on stderr, so stdout stays parseable)."""
    if not enabled:
        yield None
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    token = _active.set(bars)
    try:
        with bars:
            yield bars
    finally:
        _active.reset(token)


def track(items: Iterable[T], description: str, total: int | None = None, transient: bool = True) -> Iterator[T]:
    bars = _active.get()
    if bars is None:
        yield from items
        return
    task = bars.add_task(description, total=total if total is not None else len(items))  # type: ignore[arg-type]
    try:
        for item in items:
            yield item
            bars.advance(task)
    finally:
        if transient:
            bars.remove_task(task)


def log(message: str) -> None:
    bars = _active.get()
    (bars.console if bars is not None else console).print(message)
