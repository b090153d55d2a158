"""Errors that the CLI turns into sentences instead of tracebacks: bad input (exit 2; nothing written) and a run
that could not finish every cell (exit 1; what finished is kept, and a rerun resumes the rest)."""

from __future__ import annotations


class XbenchInputError(Exception):
    """Bad input from the user: a suite field, a name, a file. `field` is the YAML path when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class XbenchRunFailure(Exception):
    """Cells that could not run, grouped by why: one sentence per reason. What finished is in the store already."""

    def __init__(self, suite: str, failures: dict[str, list[str]]) -> None:
        self.suite, self.failures = suite, failures
        lines = []
        for reason, cells in failures.items():
            shown = "; ".join(cells[:3]) + (f"; and {len(cells) - 3} more" if len(cells) > 3 else "")
            lines.append(f"{len(cells)} cell(s) not run: {reason} ({shown})")
        lines.append(f"every finished cell is logged; `xbench run suite {suite}` again resumes the rest")
        super().__init__("\n".join(lines))
