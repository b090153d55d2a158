"""`xbench human export` and `xbench human analyse`: the seed paper's crowd experiments for any finished suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import typer

from xbench.cli.choices import TextOrJson

app = typer.Typer(
    help="Human studies: export a suite's explanations for people to judge (MTurk, or an offline study page), and "
    "analyse their answers against the suite's metrics.",
    no_args_is_help=True,
)


@app.command("export")
def export_command(
    suite: str = typer.Option(..., "--suite", help="A finished suite (as in its YAML `name:`)."),
    design: str = typer.Option(
        "pairwise",
        "--design",
        help="pairwise: two variants' explanations of one image side by side (left / right / equally reasonable); "
        "identify: one occlusion map, name the class (or don't know).",
    ),
    pairs: str | None = typer.Option(
        None, "--pairs", help="Compression rates to compare, e.g. 1:2,1:32 (default: the least pruned against each)."
    ),
    view: list[str] | None = typer.Option(
        None,
        "--view",
        help="heatmap (jet overlay) or occlusion (top pixels only); repeat for both. Default: heatmap "
        "for pairwise, occlusion for identify.",
    ),
    images: int | None = typer.Option(None, "--images", help="Images per variant (default: every kept one)."),
    per_task: int = typer.Option(1, "--per-task", help="Stimuli per MTurk HIT."),
    top_fraction: float = typer.Option(0.10, "--top-fraction", help="Share of pixels an occlusion map keeps."),
    checks: int | None = typer.Option(
        None, "--checks", help="Attention checks (tasks with a known answer) mixed in; default: 1 per 10 tasks."
    ),
    model: str | None = typer.Option(None, "--model", help="The suite's model to study (default: its first)."),
    explainer: str | None = typer.Option(None, "--explainer", help="Its explainer (default: the suite's first)."),
    model_seed: int | None = typer.Option(None, "--model-seed", help="Its training seed (default: the lowest)."),
    pruning: str | None = typer.Option(None, "--pruning", help="Its pruning method (default: the suite's first)."),
    base_url: str | None = typer.Option(
        None, "--base-url", help="Where the stimuli/ folder will be served from, for the MTurk input file."
    ),
    seed: int = typer.Option(0, "--seed", help="Draws sides, task order and attention checks."),
    out: Path = typer.Option(Path("human-study"), "--out", help="Output folder (new or empty, unless --force)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out, replacing an earlier export."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
    bundle: Path | None = typer.Option(
        None, "--from", help="Read a results bundle (from `xbench export --bundle DIR`) instead of the MLflow store."
    ),
) -> None:
    """Draw a study's stimuli from a finished suite's kept attributions (its first `gallery_images` explained images
    per cell; raise it in the suite for bigger studies) and write manifest.csv, stimuli/, study.html (a self-contained
    page for lab or Prolific studies: no server, answers downloaded as CSV), mturk/input.csv with mturk/template.html,
    instructions.txt and study.json.

    Example: xbench human export --suite quick --design pairwise --pairs 1:2,1:32 --out study
    """
    from xbench.core.errors import XbenchInputError
    from xbench.human.study import Design, View, build_study, parse_pairs, write_study
    from xbench.store.bundle import open_results

    if design not in ("pairwise", "identify"):
        raise XbenchInputError(f"must be pairwise or identify, got {design!r}", field="--design")
    views = view or (["heatmap"] if design == "pairwise" else ["occlusion"])
    for item in views:
        if item not in ("heatmap", "occlusion"):
            raise XbenchInputError(f"must be heatmap or occlusion, got {item!r}", field="--view")
    if checks is not None and checks < 0:
        raise XbenchInputError(f"must be >= 0, got {checks}", field="--checks")
    if out.exists() and any(out.iterdir()) and not force:
        raise XbenchInputError(
            f"{out} is not empty (an earlier export's answers would be matched against this one's stimuli); "
            "choose a new folder, or --force to replace it",
            field="--out",
        )
    study = build_study(
        open_results(tracking_uri, bundle),
        suite,
        cast(Design, design),  # checked above
        parse_pairs(pairs),
        cast(list[View], views),
        images,
        top_fraction,
        -1 if checks is None else checks,
        seed,
        model,
        explainer,
        model_seed,
        pruning,
    )
    if force and (out / "stimuli").is_dir():
        import shutil

        shutil.rmtree(out / "stimuli")  # the earlier export's stimuli; its other files are overwritten
    files = write_study(study, out, per_task, base_url)
    described = study.description
    typer.echo(
        f"wrote {described['stimuli']} stimuli ({described['attention_checks']} attention checks) of "
        f"{described['images']} images, {', '.join(described['variants'])}, to {out}/"
    )
    for role, path in files.items():
        typer.echo(f"  {role:<15} {path}")


@app.command("analyse")
def analyse_command(
    results: Path = typer.Argument(..., help="MTurk batch results CSV, or the study page's downloaded answers."),
    manifest: Path = typer.Option(..., "--manifest", help="The export's manifest.csv."),
    answer: list[str] | None = typer.Option(
        None,
        "--answer",
        help="Map an answer to a result column, repeatable: pairwise left=COL right=COL equal=COL (boolean columns; "
        "default Answer.left.on ...); identify dont_know=COL, or label=COL for one column holding the class. {k} in "
        "COL is a HIT's stimulus position (_1, _2 ...).",
    ),
    answer_prefix: str | None = typer.Option(
        None, "--answer-prefix", help="identify: one-hot boolean columns PREFIX<class> (default Answer.class_)."
    ),
    min_check_accuracy: float | None = typer.Option(
        None, "--min-check-accuracy", help="Leave out workers whose attention-check accuracy is below this (0-1)."
    ),
    suite: str | None = typer.Option(
        None, "--suite", help="Score the suite's metrics against the answers; log the study to its MLflow experiment."
    ),
    format: TextOrJson = typer.Option(TextOrJson.text, "--format", help="text | json"),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow store (default: ./xbench.db)."),
    first_answer_only: bool = typer.Option(
        False,
        "--first-answer-only",
        help="Keep each worker's first answer to a stimulus and leave out the repeats (the report says how many); "
        "without it, a repeated answer is an error.",
    ),
) -> None:
    """Counts, chi-squared and binomial tests, Krippendorff's alpha and per-worker attention checks of a study's
    answers; with --suite, how often each metric prefers what most people preferred, and an MLflow run.

    Example: xbench human analyse Batch_123_batch_results.csv --manifest study/manifest.csv --suite quick
    """
    import tempfile

    from xbench.analyse.crowd import analyse, metric_agreement
    from xbench.core.errors import XbenchInputError
    from xbench.human.answers import load_description, read_answers, read_manifest
    from xbench.human.report import (
        pseudonym_key,
        pseudonymised_answers,
        pseudonymised_report,
        text_report,
        variants_of_study,
    )

    if min_check_accuracy is not None and not 0 <= min_check_accuracy <= 1:
        raise XbenchInputError(f"must be between 0 and 1, got {min_check_accuracy}", field="--min-check-accuracy")
    columns = {}
    for item in answer or []:
        key, separator, column = item.partition("=")
        if not separator or key not in ("left", "right", "equal", "dont_know", "label"):
            raise XbenchInputError(
                f"{item!r} is not ANSWER=COLUMN with ANSWER one of left, right, equal, dont_know, label",
                field="--answer",
            )
        columns[key] = column
    study = read_manifest(manifest)
    counts: dict[str, int] = {}
    answers, unusable = read_answers(results, study, columns, answer_prefix, first_answer_only, counts)
    if not answers:
        raise XbenchInputError(f"{results} holds no answer to a stimulus of {manifest}", field="RESULTS")
    report = analyse(answers, study, min_check_accuracy, unusable)
    report["repeated_answers_left_out"] = counts.get("repeated_answers", 0)
    if suite is not None:
        from xbench.store.tracking import Store

        store = Store(tracking_uri)
        variants = variants_of_study(load_description(manifest), store.load_cell_results(suite))
        kept = [a for a in answers if a.worker not in report["excluded_workers"]]
        report["agreement"] = metric_agreement(kept, study, variants)
        report["suite"] = suite
        # Worker ids leave this machine only as keyed pseudonyms; the key stays beside the raw results file.
        pseudonym = pseudonym_key(results)
        shared = pseudonymised_report(report, pseudonym)
        with tempfile.TemporaryDirectory(prefix="xbench-human-") as workdir:
            text_file = Path(workdir) / "report.txt"
            text_file.write_text(text_report(shared) + "\n")
            answers_file = pseudonymised_answers(results, pseudonym, Path(workdir))
            run_id = store.log_human_study(suite, shared, [manifest, answers_file, text_file])
        report["run_id"] = run_id
    # valid JSON: a figure that is not a number is null, never a bare NaN
    typer.echo(json.dumps(_finite(report), indent=1, allow_nan=False) if format == "json" else text_report(report))


def _finite(value: object) -> object:
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
