"""`xbench stats --suite NAME`: every pruned variant against CR 1, as a verdict with its interval, p-values and margin;
with `--plan`, the seeds that would decide what is still undecided."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import typer

from xbench.cli.choices import StatsFormat
from xbench.core.numbers import finite_or_none

COLUMNS = (
    "model",
    "pruning_method",
    "pruning_scope",
    "pruning_granularity",
    "pruning_schedule",
    "explainer",
    "metric",
    "compression_rate",
    "higher_is_better",
    "verdict",
    "family",
    "margin",
    "n_seeds",
    "suite_seeds",
    "within_one_trained_model",
    "fewer_seeds_than_suite",
    "n_images",
    "n_excluded",
    "reference_mean",
    "variant_mean",
    "mean_diff",
    "ci_low",
    "ci_high",
    "effect_size",
    "p",
    "p_holm",
    "p_equivalent",
    "p_equivalent_holm",
    "p_noninferior",
    "significant",
    "better",
    "df",
    "se",
    "seed_sd",
    "image_sd",
    "residual_sd",
    "seeds_needed",
)


def stats_command(
    suite: str = typer.Option(..., "--suite", help="Suite name (as in its YAML `name:`)."),
    format: StatsFormat = typer.Option(
        StatsFormat.table, "--format", help="table (for people), json or csv (for scripts).", case_sensitive=False
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="File to write; default: stdout."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
    bundle: Path | None = typer.Option(
        None, "--from", help="Read a results bundle (from `xbench export --bundle DIR`) instead of the MLflow store."
    ),
    max_accuracy_drop: float | None = typer.Option(
        None,
        "--max-accuracy-drop",
        help="Accuracy's equivalence margin (0.01 = 1 point). Default: the suite's equivalence.accuracy, else 0.01.",
    ),
    plan: bool = typer.Option(
        False,
        "--plan",
        help="Print, for each undecided comparison, the seeds that would decide it with 80 % power (from the "
        "estimated seed, image and residual variances), and the run command that adds them.",
    ),
) -> None:
    """Every comparison the leaderboard shows (each metric and accuracy, each CR against CR 1 of the same model,
    pruning config and explainer) with its verdict: better, worse, equivalent (within ±margin: no meaningful change)
    or undecided; plus per-metric reliability across seeds.

    The table shows each comparison's verdict, difference with its 95 % interval and its corrected p (differences:
    weighted Benjamini-Hochberg over the suite; equivalence: chains of closed tests up each CR ladder; see the
    families line under it). JSON:
    {"method", "seeds", "margins", "verdicts", "comparisons": [...], "reliability": [...]}. CSV: the comparisons.

    Example: xbench stats --suite quick --format csv -o quick-stats.csv

    Example: xbench stats --suite quick --plan
    """
    from xbench.analyse.findings import safe_compression
    from xbench.analyse.stats import ACCURACY, METHOD, suite_stats
    from xbench.analyse.trust import READING
    from xbench.core.errors import XbenchInputError
    from xbench.store.bundle import open_results

    if max_accuracy_drop is not None and not 0 < max_accuracy_drop <= 1:
        raise XbenchInputError(f"must be in (0, 1], got {max_accuracy_drop}", field="--max-accuracy-drop")
    store = open_results(tracking_uri, bundle)
    if store.experiment_id(suite) is None and suite not in store.suites():
        known = ", ".join(store.suites()) or "none"
        raise XbenchInputError(f"no results of suite {suite!r} in {store.uri} (suites there: {known})", field="--suite")
    records = store.load_results(suite)
    margins = store.equivalence(suite)
    if max_accuracy_drop is not None:
        margins[ACCURACY] = max_accuracy_drop
    per_image, meta = store.per_image_scores(records), store.meta_evaluations(records)
    result = suite_stats(records, per_image, margins, meta, store.human_studies(suite), store.sequential(suite))
    if plan:
        typer.echo(plan_text(suite, result))
        return
    comparisons = [{k: finite_or_none(c.to_dict()[k]) for k in COLUMNS} for c in result.comparisons]
    if format is StatsFormat.table:
        if output is not None:
            raise XbenchInputError(
                "a table is for the terminal; write a file as --format json or csv", field="--output"
            )
        print_table(suite, result)
        return
    if format is StatsFormat.json:
        text = json.dumps(
            {
                "suite": suite,
                "method": METHOD,
                "seeds": result.seeds,
                "within_one_trained_model": result.single_seed,
                "margins": result.margins,
                "families": result.families,
                "verdicts": result.verdicts,
                "safe_compression": [_safe_dict(s) for s in safe_compression(result)],
                "sequential": None
                if result.sequential is None
                else {"looks": list(result.sequential.looks), "levels": list(result.sequential.levels)},
                "comparisons": comparisons,
                "reliability": [{k: finite_or_none(v) for k, v in r.to_dict().items()} for r in result.reliability],
                "trust": [{k: finite_or_none(v) for k, v in t.to_dict().items()} for t in result.trust],
                "trust_reading": READING if result.trust else None,
            },
            indent=2,
        )
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(comparisons)
        text = buffer.getvalue()
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text)
        counts = ", ".join(f"{n} {verdict}" for verdict, n in result.verdicts.items())
        typer.echo(f"wrote {len(comparisons)} comparisons ({counts}) to {output}", err=True)


def _safe_dict(safe: object) -> dict[str, object]:
    from xbench.analyse.findings import SafeCompression

    assert isinstance(safe, SafeCompression)
    return {
        "model": safe.model,
        "pruning_method": safe.pruning_method,
        "pruning_scope": safe.pruning_scope,
        "pruning_granularity": safe.pruning_granularity,
        "pruning_schedule": safe.pruning_schedule,
        "explainer": safe.explainer,
        "safe_rate": safe.safe_rate,
        "failed_rate": safe.failed_rate,
        "shown_unsafe": safe.shown_unsafe,
        "decided": safe.decided,
        "level": safe.level,
        "decided_at_seeds": safe.decided_at,
        "blocking": [
            "accuracy (no comparison)" if c is None else f"{c.metric} (p no worse {c.p_noninferior:.3g})"
            for c in safe.blocking.get(safe.failed_rate, [])
            if safe.failed_rate is not None
        ]
        if safe.failed_rate is not None
        else [],
        "family": "safe compression: per explainer, accuracy and every metric no worse than its margin (each at "
        "the level; no correction within the conjunction), up the CR ladder until the first failure; Holm across "
        "the explainers' ladders",
    }


def plan_text(suite: str, result: object) -> str:
    """The `--plan` report: per undecided comparison the seeds that would decide it, then the command."""
    from xbench.analyse.inference import MAX_PLANNED_SEEDS, POWER
    from xbench.analyse.stats import SuiteStats

    assert isinstance(result, SuiteStats)
    undecided = [c for c in result.comparisons if c.verdict == "undecided"]
    lines = [
        f"suite {suite}: {len(result.seeds)} seeds ({', '.join(map(str, result.seeds))}); "
        + ", ".join(f"{n} {verdict}" for verdict, n in result.verdicts.items()),
        f"Seeds that would decide each undecided comparison with {POWER:.0%} power (shown different, or equivalent "
        "within its margin) at the level its family tests it at now, for any true difference within 2.5 "
        "standard errors of the estimate and the seed variance at its 80 % upper bound, with the images that "
        "constant maps leave scorable shrinking as seeds are added (equivalence is tested up each CR ladder, so "
        "a comparison whose smaller CR is not yet equivalent can only be shown different):",
    ]
    if not undecided:
        lines.append("  none: every comparison is decided")
        return "\n".join(lines)
    width = max(len(_label(c)) for c in undecided)
    planned = []
    for c in sorted(undecided, key=lambda c: (c.seeds_needed is None, c.seeds_needed or 0, _label(c))):
        if c.seeds_needed is not None:
            planned.append(c.seeds_needed)
            need = f"{c.seeds_needed} seeds"
        elif c.n_seeds < 2:
            need = "unknown: one seed gives no seed-to-seed variance (run 3 or more)"
        elif c.floored:
            need = "more eval images, not seeds: too few images changed for the count bound to decide it"
        else:
            need = f"more than {MAX_PLANNED_SEEDS} seeds (too close to the margin, or the images vary too much for it)"
        lines.append(f"  {_label(c):<{width}}  Δ {c.mean_diff:+.3g}, margin ±{c.margin:.3g}: {need}")
    if planned:
        target = sorted(planned)[len(planned) // 2]
        seeds = list(result.seeds)
        while len(seeds) < target:
            seeds.append(max(seeds, default=-1) + 1)
        contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
        spec = f"{seeds[0]}-{seeds[-1]}" if contiguous else ",".join(map(str, seeds))
        lines.append(
            f"{len(planned)} of {len(undecided)} can be decided with more seeds; half of them with {target} or fewer. "
            f"To run {target} seeds (the cells already done are reused): xbench run suite {suite} --seeds {spec}"
        )
    return "\n".join(lines)


def _label(c: object) -> str:
    from xbench.analyse.stats import Comparison

    assert isinstance(c, Comparison)
    where = c.explainer or "accuracy"
    metric = "" if c.metric == "accuracy" else f" {c.metric}"
    return f"{c.model} {c.pruning_method} CR {c.compression_rate:g} {where}{metric}"


def print_table(suite: str, result: object) -> None:
    """The comparisons as a terminal table, decided ones first, with a line on how to read it."""
    from rich.table import Table

    from xbench.analyse.inference import ALPHA
    from xbench.analyse.stats import METHOD, SuiteStats
    from xbench.core.progress import stdout_console

    assert isinstance(result, SuiteStats)
    console = stdout_console()
    order = {"worse": 0, "better": 1, "equivalent": 2, "undecided": 3}
    table = Table(title=f"suite {suite}: each CR against CR 1, {len(result.seeds)} seed(s)", title_justify="left")
    for column in ("model", "pruning", "CR", "explainer", "metric", "verdict"):
        table.add_column(column, justify="right" if column == "CR" else "left")
    for column in ("Δ (variant − CR 1)", "95 % interval", "margin", "p (corrected)", "seeds"):
        table.add_column(column, justify="right")
    colours = {"better": "green", "worse": "red", "equivalent": "cyan", "undecided": "yellow"}
    for c in sorted(result.comparisons, key=lambda c: (order.get(c.verdict, 4), _label(c))):
        table.add_row(
            c.model,
            c.pruning_method,
            f"{c.compression_rate:g}",
            c.explainer or "—",
            c.metric,
            f"[{colours.get(c.verdict, 'white')}]{c.verdict}[/]",
            _number(c.mean_diff),
            f"[{_number(c.ci_low)}, {_number(c.ci_high)}]",
            f"±{_number(c.margin)}",
            _number(c.p_holm, p=True),
            str(c.n_seeds),
        )
    console.print(table)
    counts = ", ".join(f"{n} {verdict}" for verdict, n in result.verdicts.items()) or "no comparisons"
    console.print(
        f"{counts}. better/worse: the difference is significant after the suite's false-discovery-rate correction "
        f"(corrected p < {ALPHA}: of such verdicts at most 5 % are expected false); "
        "equivalent: the two one-sided tests against ±margin hold after the correction (at one comparison, its 90 % "
        "interval inside ±margin); undecided: neither, which is not evidence of no effect (`--plan` says how many "
        f"seeds would decide it). Families: {'; '.join(result.families.values())}. "
        f"Method: {METHOD}.",
        soft_wrap=True,
    )
    if result.sequential is not None:
        looks = result.sequential.looks
        console.print(
            f"Safe compression pays for the {len(looks)} looks of the `--until-decided` run these seeds come from "
            f"({', '.join(map(str, looks))} seeds): tested at the last look's share of α, "
            f"{result.sequential.levels[-1]:.4g}, with the ladders an earlier look decided keeping that verdict "
            "(the shares add up to 0.05). The other families are for these seeds as one look.",
            soft_wrap=True,
        )
    if result.single_seed:
        console.print(
            "[yellow]One seed: the intervals count only image-to-image variation within one trained model; a finding "
            "needs several seeds.[/]"
        )
    print_trust(console, result)


def print_trust(console: object, result: object) -> None:
    """The metric trust table: seed stability per metric and, with a meta-evaluation, its noise resilience and
    adversary reactivity over all explainers and per explainer."""
    from rich.console import Console
    from rich.table import Table

    from xbench.analyse.stats import SuiteStats
    from xbench.analyse.trust import READING, MetricTrust

    assert isinstance(result, SuiteStats) and isinstance(console, Console)
    table = Table(title="metric trust", title_justify="left")
    table.add_column("metric", overflow="fold")
    table.add_column("explainer", overflow="fold")
    # seed stability τ, noise resilience, adversary reactivity, meta-consistency, accuracy moved by the minor noise
    # (points), agreement with people: short headers, so the table fits a terminal
    for column in ("seed τ", "resilience", "reactivity", "MC", "minor Δacc", "people"):
        table.add_column(column, justify="right", min_width=len(column))
    by_metric: dict[str, list[MetricTrust]] = {t.metric: [] for t in result.trust}
    for figures in result.trust:
        by_metric[figures.metric].append(figures)
    for reliability in result.reliability:
        rows: list[MetricTrust | None] = [*by_metric.get(reliability.metric, [])] or [None]
        for trust in rows:
            table.add_row(
                reliability.metric if trust is None or trust.explainer is None else "",
                "all" if trust is None or trust.explainer is None else trust.explainer,
                _number(reliability.seed_tau) if trust is None or trust.explainer is None else "",
                _number(trust.noise_resilience) if trust else "—",
                _number(trust.adversary_reactivity) if trust else "—",
                _number(trust.meta_consistency) if trust else "—",
                _number(trust.minor_accuracy_change) if trust else "—",
                _number(reliability.human_agreement) if trust is None or trust.explainer is None else "",
            )
    console.print(table)
    reading = (
        "Seed τ: mean Kendall τ between the seeds' rankings of the cells (1 = every seed agrees). Minor Δacc: how far "
        "the minor perturbations moved accuracy, in points. "
    )
    if result.trust:
        reading += READING
    else:
        reading += "No meta-evaluation in this suite (`meta_evaluation:` adds noise resilience and reactivity)."
    reading += (
        " People: how often the metric prefers what most people preferred in the suite's newest human study that"
        " measured it (— without one)."
    )
    console.print(reading, soft_wrap=True)
    moved = [t for t in result.trust if t.explainer is None and t.minor_accuracy_change >= 1.0]
    if moved:
        console.print(
            f"[yellow]The minor perturbations moved accuracy by {max(t.minor_accuracy_change for t in moved):.1f} "
            "points (≥ 1): they are not minor for this model; lower meta_evaluation.weight_noise or input_noise.[/]"
        )


def _number(value: float | None, p: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if p and value < 0.001:
        return "<0.001"
    return f"{value:.3g}"
