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


class XbenchLeaseLost(Exception):
    """This run's lease on its cells ended while it ran (it was stopped past its lease, or could not renew it, and
    another run took its work over): it stops without logging or closing anything more. What it logged stays."""

    def __init__(self, suite: str, why: str) -> None:
        self.suite = suite
        super().__init__(
            f"this run of suite {suite} lost its lease: {why}; it stopped without logging the cell it held or closing "
            f"the suite's parent run, which another run now owns. Every cell logged is kept once; `xbench run suite "
            f"{suite}` again resumes what is left"
        )


class XbenchStoreBusy(Exception):
    """Another process held the store's lock for longer than this run would wait (exit 3, nothing written)."""
