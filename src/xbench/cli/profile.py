"""`xbench profile MODEL`: cost figures of one timm model, optionally pruned, without a suite."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from xbench.cli.choices import TableOrJson


def profile_command(
    model: str = typer.Argument(..., help="A timm model name, e.g. resnet50."),
    image_size: int = typer.Option(224, "--image-size", help="Input height and width."),
    batch_size: list[int] = typer.Option([1, 32], "--batch-size", help="Repeat for several batch sizes."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    prune: str | None = typer.Option(None, "--prune", help="METHOD:CR, e.g. channel_magnitude:4 or magnitude:8."),
    scope: str = typer.Option("conv", "--scope", help="conv | conv_linear | all"),
    warmup: int = typer.Option(10, "--warmup", help="Untimed passes before timing (caches, allocator, compilation)."),
    repeats: int = typer.Option(
        50, "--repeats", help="Timed passes per batch size; the median and spread are reported."
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 | fp16 (autocast)"),
    channels_last: bool = typer.Option(False, "--channels-last", help="Time in channels_last memory format."),
    compile: bool = typer.Option(False, "--compile", help="Time torch.compile(model) (compiled during warm-up)."),
    format: TableOrJson = typer.Option(TableOrJson.table, "--format", help="table | json"),
) -> None:
    """Params (total, nonzero), compression rate (whole model and pruned scope), sparsity, FLOPs and MACs (dense and
    effective), latency p50/p90/std, throughput, peak memory (CUDA) and file size; with --prune, the pruned variant
    next to the unpruned one, with theoretical (FLOPs) and measured (latency) speed-ups.

    Example: xbench profile resnet18 --image-size 224 --batch-size 1 --batch-size 32 --prune channel_magnitude:4
    """
    from xbench.core.errors import XbenchInputError
    from xbench.core.progress import console
    from xbench.core.suite import PerfConfig
    from xbench.execute.runner import resolve_device
    from xbench.measure.profiling import profile

    if scope not in ("conv", "conv_linear", "all"):
        raise XbenchInputError(f"must be conv, conv_linear or all, got {scope!r}", field="--scope")
    if precision not in ("fp32", "bf16", "fp16"):
        raise XbenchInputError(f"must be fp32, bf16 or fp16, got {precision!r}", field="--precision")
    settings = PerfConfig(
        warmup=warmup, repeats=repeats, precision=precision, channels_last=channels_last, compile=compile
    )
    result = profile(model, image_size, batch_size, resolve_device(device), prune=prune, scope=scope, settings=settings)
    if format == "json":
        typer.echo(json.dumps(result, indent=2))
        return
    variants = result["variants"]
    layout = ", channels_last" if channels_last else ""
    table = Table(
        title=f"{model} @ {image_size}px on {result['device']} ({precision}{layout}"
        f"{', compiled' if compile else ''}, {warmup} warm-up + {repeats} timed passes)"
    )
    table.add_column("figure")
    for label in variants:
        table.add_column(label, justify="right")
    names = list(dict.fromkeys(name for v in variants.values() for name in v["figures"]))
    for name in names:
        table.add_row(name, *(_fmt(v["figures"].get(name)) for v in variants.values()))
    for name in dict.fromkeys(name for v in variants.values() for name in v["missing"]):
        table.add_row(name, *(v["missing"].get(name, "") for v in variants.values()))
    console.print(table)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
