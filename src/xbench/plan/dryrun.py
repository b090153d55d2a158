"""`xbench run suite NAME --dry-run`: the plan in words, and everything that can be checked without running it
(data and weights reachable, masks present). Touches no store or cache."""

from __future__ import annotations

import os
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from xbench.core.cells import plan_key, quantization_label
from xbench.core.suite import Suite, schedule_steps
from xbench.plan.graph import build_graph
from xbench.plan.planner import plan

OFFLINE_VARIABLES = ("XBENCH_OFFLINE", "HF_HUB_OFFLINE")  # set: nothing is fetched, so nothing remote is reachable


@dataclass
class DryRun:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def unreachable(url: str) -> str | None:
    """Why `url` cannot be fetched (None when it can): offline by setting, or the HEAD request's error."""
    offline = [name for name in OFFLINE_VARIABLES if os.environ.get(name, "") not in ("", "0")]
    if offline:
        return f"offline: {offline[0]} is set"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10):
            return None
    except Exception as exc:  # DNS, refused, timeout, HTTP error: all mean "not from here"
        return f"{type(exc).__name__}: {exc}"


def dry_run(suite: Suite, device: str, decided_elsewhere: str | None = None) -> DryRun:
    """What a run would do, on `device` as the run would decide it (`backends.decide_device`)."""
    cells = plan(suite, device)  # every input check the real run makes
    graph = build_graph(cells)
    report = DryRun()
    models = sorted({c.model.name for c in cells})
    rates = sorted({c.compression_rate for c in cells})
    explainers = sorted({c.explainer.name for c in cells})
    seeds = sorted({c.seed for c in cells})
    quantizations = sorted({quantization_label(c.quantization) for c in cells}, key=lambda q: (q != "none", q))
    quantized = f" × {len(quantizations)} quantization(s)" if len(quantizations) > 1 else ""
    report.lines.append(
        f"suite {suite.name}: {len(cells)} cells = {len(models)} model(s) × {len(rates)} CR(s){quantized} × "
        f"{len(explainers)} explainer(s) × {len(seeds)} seed(s)"
    )
    for model, count in sorted(Counter(c.model.name for c in cells).items()):
        report.lines.append(f"  {model}: {count} cells")
    for config in suite.pruning:
        top = max(config.compression_rates)
        chain = " → ".join(f"{s:g}" for s in schedule_steps(top, config.schedule))
        tuned = "fine-tuned after each step" if config.finetune.epochs or config.finetune.steps else "no fine-tuning"
        report.lines.append(
            f"  pruning {config.method} ({config.scope}, {config.granularity}, {config.schedule}): CR {chain}; {tuned}"
        )
    if quantized:
        shown = ", ".join("fp32" if q == "none" else q for q in quantizations)
        report.lines.append(f"  quantization: {shown}; each CR quantized after pruning, compared with fp32 CR 1")
    report.lines.append(f"  device: {device} ({decided_elsewhere or 'decided by this process'})")
    report.lines.append(f"  plan key: {plan_key(cells)} (the suite run's tag xbench.plan_key)")
    report.lines.append(f"  explainers: {', '.join(explainers)}")
    report.lines.append(f"  metrics: {', '.join(spec.name for spec in suite.metrics) or 'none'}")
    report.lines.append(f"  seeds: {', '.join(map(str, seeds))} (eval images from data_seed {suite.data_seed})")
    selection = suite.eval_selection
    if selection.method != "random":
        per_class = f"{selection.per_class} per class" if selection.per_class else "all that qualify"
        report.lines.append(f"  eval images: {selection.method}, {per_class}")
    counts = graph.counts()
    report.lines.append(
        f"  work: {counts.get('train', 0)} trainings, {counts.get('prune', 0)} pruning steps, "
        f"{counts.get('select', 0)} eval selections, {counts.get('cell', 0)} cells (longest chain "
        f"{graph.critical_path()} nodes)"
    )
    _check_data(suite, report)
    _check_weights(suite, report)
    return report


def _check_data(suite: Suite, report: DryRun) -> None:
    config = suite.dataset
    root = Path(config.path).expanduser() if config.path else None
    if config.name == "imagenette" and root is not None:
        from torchvision.datasets import Imagenette

        from xbench.components.data import IMAGENETTE_VARIANTS

        size, folder = IMAGENETTE_VARIANTS[config.variant or "160"]
        if (root / folder).is_dir():
            report.lines.append(f"  data: Imagenette ({size}) found in {root / folder}")
        else:
            url = Imagenette._ARCHIVES[size][0]
            reason = unreachable(url)
            report.lines.append(f"  data: will download Imagenette ({size}) from {url} into {root}")
            if reason:
                report.problems.append(
                    f"dataset: Imagenette ({size}) is not in {root} and {url} cannot be reached ({reason}); "
                    f"download and unpack it there on a machine with the internet"
                )
    elif config.name == "imagefolder" and root is not None:
        for split in ("train", "val"):
            if not (root / split).is_dir():
                report.problems.append(f"dataset.path: {root / split} does not exist")
    if config.masks and not Path(config.masks).expanduser().is_dir():
        report.problems.append(f"dataset.masks: {config.masks} is not a folder")


def _check_weights(suite: Suite, report: DryRun) -> None:
    for index, model in enumerate(suite.models):
        field_name = f"models[{index}].pretrained"
        if isinstance(model.pretrained, str):
            if Path(model.pretrained).expanduser().is_file():
                report.lines.append(f"  weights: {model.name} from {model.pretrained}")
            else:
                report.problems.append(f"{field_name}: weights file {model.pretrained} does not exist")
            continue
        if not model.pretrained:
            report.lines.append(f"  weights: {model.name} trained from scratch")
            continue
        from timm.models import get_pretrained_cfg

        pretrained = get_pretrained_cfg(model.name)
        hub_id = getattr(pretrained, "hf_hub_id", None) if pretrained else None
        if hub_id and _in_hub_cache(hub_id):
            report.lines.append(f"  weights: {model.name} from the local Hugging Face cache ({hub_id})")
            continue
        url = f"https://huggingface.co/{hub_id}" if hub_id else getattr(pretrained, "url", None)
        if not url:
            report.problems.append(f"{field_name}: timm knows no pretrained weights for {model.name}")
            continue
        report.lines.append(f"  weights: will download {model.name} from {url}")
        reason = unreachable(url)
        if reason:
            report.problems.append(
                f"{field_name}: weights of {model.name} are not in the local cache and {url} cannot be reached "
                f"({reason}); fetch them on a machine with the internet (docs/guide/seed-protocol.md) or set "
                "pretrained to a local weights file"
            )


def _in_hub_cache(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return any(
        isinstance(try_to_load_from_cache(hub_id, name), str) for name in ("model.safetensors", "pytorch_model.bin")
    )
