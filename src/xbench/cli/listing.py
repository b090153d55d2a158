"""`xbench list KIND`: what can go into a suite."""

from __future__ import annotations

import typer

KINDS = ("suites", "models", "datasets", "pruners", "quantizers", "explainers", "metrics", "schema")


def list_command(
    kind: str = typer.Argument(..., help=f"One of: {', '.join(KINDS)}"),
    pattern: str = typer.Option("*", "--filter", "-f", help="Glob on the names, e.g. 'resnet*'"),
) -> None:
    """List suites, timm models, datasets, pruning methods, quantization methods, explainers or metrics (or print the
    suite JSON Schema).

    Example: xbench list models --filter 'resnet*'
    """
    from xbench.core.errors import XbenchInputError

    if kind not in KINDS:
        raise XbenchInputError(f"unknown kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if kind == "suites":
        import fnmatch

        from xbench.core.suite import list_suites

        names = [n for n in list_suites() if fnmatch.fnmatch(n, pattern)]
    elif kind == "schema":
        from xbench.core.suite import suite_json_schema

        typer.echo(suite_json_schema())
        return
    elif kind == "models":
        import timm

        names = timm.list_models(pattern)
    else:
        registry = _registry(kind)
        for name in registry.names(pattern):
            typer.echo(f"{name:28s} {_describe(kind, registry.get(name))}")
        return
    for name in names:
        typer.echo(name)


def _registry(kind: str):
    from xbench.core.plugins import load_plugins

    load_plugins()  # installed plug-ins (the xbench.plugins entry points) are listed with the built-in ones
    if kind == "datasets":
        from xbench.components.datasets import datasets

        return datasets
    if kind == "pruners":
        from xbench.components.pruners import pruners

        return pruners
    if kind == "quantizers":
        from xbench.components.quantizers import quantizers

        return quantizers
    if kind == "explainers":
        from xbench.components.explainers import explainers

        return explainers
    from xbench.measure.metrics import metrics

    return metrics


def _describe(kind: str, plugin: object) -> str:
    if kind == "metrics":
        direction = "higher is better" if plugin.higher_is_better else "lower is better"  # type: ignore[attr-defined]
        from xbench.measure.metrics import engine_for

        masks = ", needs masks" if plugin.needs_masks else ""  # type: ignore[attr-defined]
        engine = f", engine {engine_for(plugin, 'torch')}"  # type: ignore[arg-type]
        return f"{plugin.category}, {direction}{masks}{engine}"  # type: ignore[attr-defined]
    if kind == "explainers":
        return f"[{plugin.library}] {plugin.description}"  # type: ignore[attr-defined]
    if kind == "quantizers":
        defaults = plugin.defaults  # type: ignore[attr-defined]
        settings = f" (settings: {', '.join(f'{k}={v}' for k, v in defaults.items())})" if defaults else ""
        return f"{plugin.bits}-bit weights: {plugin.description}{settings}"  # type: ignore[attr-defined]
    return getattr(plugin, "description", "")
