"""`xbench verify-metrics`: the torch engine against its references on random inputs, with times and the floor."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from xbench.cli.choices import TableOrJson


def verify_metrics_command(
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    seed: int = typer.Option(0, "--seed", help="Seeds the model, inputs, attributions and random draws."),
    model: str = typer.Option("resnet18", "--model", help="A timm model name (randomly initialised)."),
    image_size: int = typer.Option(64, "--image-size", help="Input height and width."),
    images: int = typer.Option(8, "--images", help="How many random images each metric scores."),
    metric: list[str] = typer.Option([], "--metric", help="Only these engine metrics (repeat); default: all."),
    case: list[str] = typer.Option(
        [], "--case", help="Attributions (repeat): random | gradcam | flat_background; default: all."
    ),
    format: TableOrJson = typer.Option(TableOrJson.table, "--format", help="table | json"),
) -> None:
    """Run every torch-engine metric and its reference on the same random model, inputs, explanations and random
    draws, and print per metric: the max abs difference, the engine's time, the reference's time, and the floor: the
    model passes the metric needs, run bare at the model's best batch size on this device (best of 3, interleaved with
    the engine's 3 runs). Exit code 1 if any difference exceeds 1e-4.

    The reference is Quantus 0.6 (its draws are recorded and replayed) where Quantus has the metric; for the metrics
    it lacks, an independent implementation the metric names: RISE's CausalMetric image by image for insertion and
    deletion, pytorch-grad-cam's CamMultImageConfidenceChange for average_drop, increase_in_confidence and
    average_gain.

    IROF and ROAD are compared on a 1-channel copy of the model: Quantus 0.6 fails on them with RGB inputs.

    The metrics that order features are also compared on tied attributions: Grad-CAM maps (a coarse map upsampled)
    and input x gradient on images with a flat background (every background pixel 0). Tied values have no order of
    their own, so the engine replays the order Quantus's argsort gave them (recorded during Quantus's run); against a
    reference that sorts stably, the engine uses its `index` tie policy.

    Example: xbench verify-metrics --device cpu --seed 0 --model resnet18 --format json
    """
    from xbench.core.errors import XbenchInputError
    from xbench.core.progress import console, log
    from xbench.execute.runner import resolve_device
    from xbench.measure.engine import engine_metrics
    from xbench.measure.verify import verify_all

    unknown = [name for name in metric if name not in engine_metrics]
    if unknown:
        raise XbenchInputError(
            f"{', '.join(unknown)} is not an engine metric; choose from {', '.join(engine_metrics.names())}",
            field="--metric",
        )
    from xbench.measure.verify import ATTRIBUTION_CASES

    unknown_cases = [name for name in case if name not in ATTRIBUTION_CASES]
    if unknown_cases:
        choices = ", ".join(ATTRIBUTION_CASES)
        raise XbenchInputError(f"unknown case(s) {', '.join(unknown_cases)}; choose from {choices}", field="--case")
    resolved = resolve_device(device)
    results, times = verify_all(
        model,
        image_size,
        images,
        seed,
        resolved,
        names=metric or None,
        progress=lambda name: log(f"verifying {name}"),
        cases=case or None,
    )
    failed = [f"{r.metric} ({r.case})" for r in results if not r.max_abs_diff <= 1e-4]
    if format == "json":
        typer.echo(
            json.dumps(
                {
                    "model": model,
                    "image_size": image_size,
                    "images": images,
                    "seed": seed,
                    "device": str(resolved),
                    "best_batch_size": times.batch_size,
                    "forward_seconds_per_image": times.forward,
                    "backward_seconds_per_image": times.backward,
                    "metrics": [r.as_dict() for r in results],
                },
                indent=2,
            )
        )
    else:
        table = Table(
            title=f"torch engine vs its references: {model} @ {image_size}px, {images} images, {resolved} "
            f"(best batch {times.batch_size}: {times.forward * 1e3:.2f} ms forward, "
            f"{times.backward * 1e3:.2f} ms backward per image)"
        )
        for column in (
            "metric",
            "attributions",
            "tie share",
            "max |diff|",
            "engine s",
            "reference s",
            "floor s",
            "engine/floor",
            "speed-up",
            "passes fwd/bwd",
            "reference",
            "note",
        ):
            left = column in ("metric", "attributions", "reference", "note")
            table.add_column(column, justify="left" if left else "right")
        for r in results:
            table.add_row(
                r.metric,
                r.case,
                f"{r.tie_share:.2f}",
                f"{r.max_abs_diff:.1e}",
                f"{r.engine_seconds:.3f}",
                f"{r.reference_seconds:.3f}",
                f"{r.floor_seconds:.3f}",
                f"{r.floor_ratio:.2f}x",
                f"{r.speedup:.1f}x",
                f"{r.forward_passes}/{r.backward_passes}",
                r.reference,
                r.note,
            )
        console.print(table)
    if failed:
        raise typer.Exit(1)
