"""The output formats commands offer, as typer choices: a wrong one is a usage error that lists the allowed ones."""

from __future__ import annotations

from enum import StrEnum


class TableOrJson(StrEnum):
    table = "table"
    json = "json"


class JsonOrCsv(StrEnum):
    json = "json"
    csv = "csv"


class TextOrJson(StrEnum):
    text = "text"
    json = "json"


class StatsFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
