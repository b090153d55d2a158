"""Errors that the CLI turns into a one-line message and exit code 2 (bad input; nothing written)."""

from __future__ import annotations


class XbenchInputError(Exception):
    """Bad input from the user: a suite field, a name, a file. `field` is the YAML path when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)
