"""Progress for long work; library code reports through `track`, the CLI decides how it is shown.

On a terminal, rich bars. In a log (stderr is not a terminal: `make quickstart > log 2>&1`, CI, a Ray worker's
output), plain lines instead, because rich draws nothing there until the work ends: one line per finished item of an
outer loop (a cell) with the elapsed time and an estimate of the rest, and one line per finished inner loop (a
training epoch) with its duration.
"""

from __future__ import annotations

import contextvars
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
# Off a terminal (a pipe, a file, a CI log) rich assumes 80 columns and truncates every cell of a wide table to fit.
# There a table or message is written at its full width instead (wide enough that rich never needs to cut), unless
# COLUMNS says how wide.
UNCUT_WIDTH = 4096


def _width(stream: TextIO) -> int | None:
    return None if stream.isatty() or os.environ.get("COLUMNS") else UNCUT_WIDTH


console = Console(stderr=True, width=_width(sys.stderr))


def stdout_console() -> Console:
    """A console on stdout for a command's result (a table you may pipe: `xbench stats | less`): the terminal's width
    on a terminal, full width elsewhere."""
    return Console(width=_width(sys.stdout))


class LineProgress:
    """Progress as plain, timestamped lines, readable in a log file while the work runs."""

    def __init__(self, out: Console) -> None:
        self.console = out

    def line(self, message: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {message}", highlight=False, soft_wrap=True)


_active: contextvars.ContextVar[Progress | LineProgress | None] = contextvars.ContextVar(
    "xbench_progress", default=None
)


def format_duration(seconds: float) -> str:
    """12 s, 3m05s, 1h02m: short enough for a log line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@contextmanager
def progress_bars(enabled: bool = True, lines: bool | None = None) -> Iterator[Progress | LineProgress | None]:
    """Report every `track` inside this block on stderr (stdout stays parseable).

    `lines`: plain lines instead of bars; by default, when stderr is not a terminal.
    """
    if not enabled:
        yield None
        return
    if lines if lines is not None else not console.is_terminal:
        reporter = LineProgress(console)
        token = _active.set(reporter)
        try:
            yield reporter
        finally:
            _active.reset(token)
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


def track(
    items: Iterable[T],
    description: str,
    total: int | None = None,
    transient: bool = True,
    describe: Callable[[T], str] | None = None,
) -> Iterator[T]:
    """Yield `items`, reporting progress.

    `transient` loops (batches of an epoch) report one line when they end; the others (the cells of a suite) one
    line per item, named by `describe`, with elapsed time and an estimate of the time left.
    """
    reporter = _active.get()
    if reporter is None:
        yield from items
        return
    count = total if total is not None else len(items)  # type: ignore[arg-type]
    if isinstance(reporter, LineProgress):
        yield from _track_lines(reporter, items, description, count, transient, describe)
        return
    task = reporter.add_task(description, total=count)
    try:
        for item in items:
            yield item
            reporter.advance(task)
    finally:
        if transient:
            reporter.remove_task(task)


def _track_lines(
    reporter: LineProgress,
    items: Iterable[T],
    description: str,
    count: int,
    transient: bool,
    describe: Callable[[T], str] | None,
) -> Iterator[T]:
    started = time.perf_counter()
    done = 0
    if not transient:
        reporter.line(f"{description}: {count} to do")
    try:
        for item in items:
            yield item
            done += 1
            if not transient:
                _item_line(reporter, description, done, count, started, describe(item) if describe else "")
    except GeneratorExit:  # the caller stopped early (e.g. an epoch cut short by a step budget): still finished
        pass
    if transient:
        reporter.line(f"{description}: done in {format_duration(time.perf_counter() - started)}")


def _item_line(reporter: LineProgress, description: str, done: int, count: int, started: float, name: str) -> None:
    elapsed = time.perf_counter() - started
    estimate = f"~{format_duration(elapsed / done * (count - done))} left" if done < count else "done"
    suffix = f" · {name}" if name else ""
    reporter.line(f"{description}: {done}/{count} · {format_duration(elapsed)} elapsed · {estimate}{suffix}")


def log(message: str) -> None:
    reporter = _active.get()
    if isinstance(reporter, LineProgress):
        reporter.line(message)
        return
    (reporter.console if reporter is not None else console).print(message)
