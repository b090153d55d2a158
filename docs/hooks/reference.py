"""mkdocs hook: writes the reference pages from the code (typer app, suite models, registries) at build time."""

from __future__ import annotations

import json
from typing import Any


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for marker, render in (
        ("<!-- xbench:cli -->", cli_reference),
        ("<!-- xbench:suite-schema -->", suite_reference),
        ("<!-- xbench:catalogue -->", catalogue),
    ):
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


# ------------------------------------------------------------------------------------------------------ the CLI


def cli_reference() -> str:
    import typer.main

    from xbench.cli import app

    root = typer.main.get_command(app)
    out: list[str] = []

    def visit(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name in sorted(subcommands):
                visit(subcommands[name], [*path, name])
            return
        out.append(f"## `{' '.join(path)}`\n")
        help_text = (command.help or "").strip()
        if help_text:
            out.append(help_text.replace("\b\n", "") + "\n")
        rows = []
        for param in command.params:
            if param.name == "help":
                continue
            names = ", ".join(f"`{o}`" for o in [*param.opts, *getattr(param, "secondary_opts", [])])
            kind = "argument" if param.param_type_name == "argument" else "option"
            if kind == "argument":
                names = f"`{param.name.upper()}`"
            default = "required" if param.required else ("" if param.default in (None, (), []) else param.default)
            if hasattr(default, "value"):  # an Enum choice
                default = default.value
            rows.append(
                f"| {names} | {kind} | {_cell(_param_type(param))} | {_cell(default)} | {_cell(param.help or '')} |"
            )
        if rows:
            out.append("| name | kind | type | default | meaning |\n|---|---|---|---|---|")
            out.extend(rows)
            out.append("")

    visit(root, ["xbench"])
    return "\n".join(out)


def _param_type(param: Any) -> str:
    import enum
    import typing

    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is None:
        return ""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(member.value for member in annotation)
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if arguments:  # list[str], X | None
        inner = " or ".join(getattr(a, "__name__", str(a)) for a in arguments)
        return f"list of {inner}" if typing.get_origin(annotation) is list else inner
    return getattr(annotation, "__name__", str(annotation))


# -------------------------------------------------------------------------------------------- the suite schema


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"mapping to {_type(schema['additionalProperties'])}"
    return str(kind)


def _model_table(name: str, schema: dict[str, Any]) -> str:
    lines = [f"## {name}\n"]
    if schema.get("description"):
        lines.append(schema["description"].strip() + "\n")
    required = set(schema.get("required", []))
    lines.append("| field | type | default | meaning |\n|---|---|---|---|")
    for field, spec in schema.get("properties", {}).items():
        default = "required" if field in required else json.dumps(spec.get("default")) if "default" in spec else ""
        lines.append(f"| `{field}` | {_cell(_type(spec))} | {_cell(default)} | {_cell(spec.get('description', ''))} |")
    return "\n".join(lines) + "\n"


def suite_reference() -> str:
    from xbench.core.suite import Suite

    schema = Suite.model_json_schema()
    definitions = schema.pop("$defs", {})
    parts = [_model_table("Suite", schema)]
    parts += [_model_table(name, definitions[name]) for name in sorted(definitions)]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------- the registries


def catalogue() -> str:
    from xbench.cli.listing import _describe, _registry

    parts = []
    for kind in ("datasets", "pruners", "explainers", "metrics"):
        registry = _registry(kind)
        rows = [f"| `{name}` | {_cell(_describe(kind, registry.get(name)))} |" for name in registry.names()]
        parts.append(
            f"## {kind.capitalize()} ({len(rows)})\n\n| name | what it is |\n|---|---|\n" + "\n".join(rows) + "\n"
        )
    return "\n".join(parts)
