from __future__ import annotations

import io

from rich.console import Console

from xbench.core import progress
from xbench.core.progress import LineProgress, format_duration, track


def test_lines_report_each_finished_item_with_an_estimate_and_each_inner_loop_once(monkeypatch) -> None:
    buffer = io.StringIO()
    reporter = LineProgress(Console(file=buffer, width=200))
    token = progress._active.set(reporter)
    try:
        for _ in track(["a", "b"], "suite s", transient=False, describe=str.upper):
            for _ in track(range(3), "train m epoch 1/1"):
                pass
    finally:
        progress._active.reset(token)
    lines = buffer.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines[:1]] == ["suite s: 2 to do"]
    assert sum("train m epoch 1/1: done in" in line for line in lines) == 2
    items = [line for line in lines if "suite s: " in line and "elapsed" in line]
    assert len(items) == 2 and "left · A" in items[0] and items[1].endswith("done · B")


def test_an_inner_loop_cut_short_still_reports_its_end() -> None:
    buffer = io.StringIO()
    token = progress._active.set(LineProgress(Console(file=buffer, width=200)))
    try:
        for index in track(range(10), "epoch"):
            if index == 2:
                break
    finally:
        progress._active.reset(token)
    assert "epoch: done in" in buffer.getvalue()


def test_durations_read_as_people_write_them() -> None:
    assert [format_duration(s) for s in (4.4, 65, 3725)] == ["4 s", "1m05s", "1h02m"]
