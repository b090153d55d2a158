"""Text cells of CSV files a spreadsheet may open, neutralised against formula injection (OWASP's CSV-injection
rule), and read back as they were."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A text cell that starts like a formula (=, +, -, @, a tab or a carriage return) gets a leading apostrophe,
    so a spreadsheet shows it as text; anything else (numbers too) is returned as it is."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_unsafe(value: str) -> str:
    """The text `csv_safe` neutralised, as it was."""
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value
