"""Static leaderboard: a self-contained site (no CDN, no server, opens from file://) built from the MLflow store or
bundles: the pages and `build`.

`loading.load_suite` reads a suite's results; the rest is pure: records and `xbench.analyse.stats` in, view models
out (`tables`, `panels`, `charts`, and the front page's `rankings`), rendered by the jinja2 templates in `templates/`
(autoescaped, so every string from a suite or the store is shown as text). No torch import (a test holds it).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from xbench import __version__
from xbench.analyse.findings import summarise_cells
from xbench.analyse.stats import ACCURACY, DEFAULT_ACCURACY_MARGIN, METHOD, SuiteStats, suite_stats
from xbench.present.charts import HEIGHT, PAD_B, PAD_L, PAD_R, PAD_T, WIDTH
from xbench.present.jinja import environment
from xbench.present.loading import SuiteResults, date_of
from xbench.present.panels import (
    agreement_view,
    bytes_view,
    curves_view,
    gallery_view,
    human_view,
    methods_view,
    pareto_view,
    provenance_view,
    replication_view,
)
from xbench.present.rankings import METHOD as RANKING_METHOD
from xbench.present.rankings import ranking_view
from xbench.present.tables import cells_view, effects_view, safe_view, sweet_view
from xbench.store.links import runs_url

DEFAULT_MAX_ACCURACY_DROP = DEFAULT_ACCURACY_MARGIN  # "one point" of accuracy


# ------------------------------------------------------------------------------------------------------ render


def _suite_stats(results: SuiteResults, max_accuracy_drop: float | None) -> tuple[SuiteStats, float]:
    """The suite's statistics and its accuracy margin: `max_accuracy_drop` when given (the command line), else the
    suite's `equivalence.accuracy`, else `DEFAULT_MAX_ACCURACY_DROP`."""
    margins = dict(results.equivalence)
    if max_accuracy_drop is not None:
        margins[ACCURACY] = max_accuracy_drop
    margin = margins.setdefault(ACCURACY, DEFAULT_MAX_ACCURACY_DROP)
    stats = suite_stats(results.records, results.per_image, margins, results.meta, results.human, results.sequential)
    return stats, margin


def suite_page(
    results: SuiteResults,
    max_accuracy_drop: float | None = None,
    mlflow_url: str | None = None,
    computed: tuple[SuiteStats, float] | None = None,
) -> str:
    """A suite's page (the accuracy margin as `_suite_stats` says). With `mlflow_url`, links into that MLflow UI;
    `computed` is the suite's `_suite_stats` when the caller has it already."""
    stats, max_accuracy_drop = computed or _suite_stats(results, max_accuracy_drop)
    summaries = summarise_cells(results.records, results.per_image, results.metric_names)
    return str(
        environment("xbench.present")
        .get_template("suite.html.j2")
        .render(
            name=results.name,
            runs=len(results.records),
            cells=len(summaries),
            seeds=stats.seeds,
            single_seed=stats.single_seed,
            devices=", ".join(sorted({str(r.get("device")) for r in results.records})),
            date=date_of(results.records),
            built=time.strftime("%Y-%m-%d %H:%M"),
            version=__version__,
            method=METHOD,
            table=cells_view(results, summaries, mlflow_url),
            mlflow_runs=runs_url(mlflow_url, results.experiment_id) if mlflow_url and results.experiment_id else None,
            effects=effects_view(results, stats),
            safe=safe_view(stats),
            sweet=sweet_view(results, stats, max_accuracy_drop),
            curves=curves_view(results, summaries),
            methods=methods_view(results, summaries),
            compression=bytes_view(results, summaries),
            pareto=pareto_view(results, summaries),
            agreement=agreement_view(results, summaries, stats),
            gallery=gallery_view(results, summaries),
            provenance=provenance_view(results),
            replication=replication_view(results, summaries),
            human=human_view(results),
            chart_frame={
                "width": WIDTH,
                "height": HEIGHT,
                "left": PAD_L,
                "bottom": PAD_B,
                "top": PAD_T,
                "right": PAD_R,
            },
        )
    )


def protocol_differences(suites: list[SuiteResults], shown: int = 6) -> list[dict[str, Any]]:
    """Each protocol on the page after the first, with the fields in which its cells' specifications differ from the
    first protocol's (`Store.protocol_fields`): at most `shown` fields, then how many more."""
    first: dict[str, tuple[str, ...]] | None = None
    first_key = ""
    seen: set[str] = set()
    notes = []
    for results in suites:
        if results.protocol in seen:
            continue
        seen.add(results.protocol)
        if first is None:
            first, first_key = results.protocol_fields, results.protocol
            continue
        names = sorted(set(first) | set(results.protocol_fields))
        differ = [n for n in names if first.get(n) != results.protocol_fields.get(n)]

        def values(found: tuple[str, ...] | None) -> str:
            return "absent" if not found else " or ".join(found) if len(found) <= 3 else f"{len(found)} values"

        notes.append(
            {
                "key": results.protocol,
                "against": first_key,
                "suites": sorted({r.name for r in suites if r.protocol == results.protocol}),
                "fields": [
                    {"name": n, "theirs": values(results.protocol_fields.get(n)), "first": values(first.get(n))}
                    for n in differ[:shown]
                ],
                "more": max(len(differ) - shown, 0),
            }
        )
    return notes


def index_page(suites: list[SuiteResults], rankings: list[dict[str, Any]] | None = None) -> str:
    """The front page: the answer sentence and explainer ranking of every suite (`rankings.ranking_view`), then the
    suites themselves."""
    protocols: dict[str, set[str]] = defaultdict(set)
    for results in suites:
        protocols[results.name].add(results.protocol)
    differing = {name: sorted(keys) for name, keys in protocols.items() if len(keys) > 1}
    protocol_notes = protocol_differences(suites)
    rows = [
        {
            "name": results.name,
            "href": results.page,
            "source": results.source,
            "protocol": results.protocol,
            "versions": ", ".join(sorted({str((r.get("provenance") or {}).get("xbench", "")) for r in results.records}))
            or "?",
            "date": date_of(results.records),
            "devices": ", ".join(sorted({str(r.get("device")) for r in results.records})),
            "models": len({r["model"] for r in results.records}),
            "seeds": len({r.get("seed", 0) for r in results.records}),
            "runs": len(results.records),
        }
        for results in suites
    ]
    return str(
        environment("xbench.present")
        .get_template("index.html.j2")
        .render(
            rows=rows,
            differing=differing,
            protocol_notes=protocol_notes,
            rankings=rankings or [],
            ranking_method=RANKING_METHOD,
            built=time.strftime("%Y-%m-%d %H:%M"),
            version=__version__,
        )
    )


def build(
    suites: list[SuiteResults], out: Path, max_accuracy_drop: float | None = None, mlflow_url: str | None = None
) -> Path:
    """Write index.html, one page per suite and each suite's records as JSON; returns the index path."""
    out.mkdir(parents=True, exist_ok=True)
    rankings = []
    names = [results.name for results in suites]
    for position, results in enumerate(suites):
        if names.count(results.name) > 1 and not results.page_name:  # one suite from several sources: a page each
            results.page_name = f"{results.name}-{names[:position].count(results.name) + 1}"
        page = results.page
        computed = _suite_stats(results, max_accuracy_drop)
        (out / page).write_text(suite_page(results, max_accuracy_drop, mlflow_url, computed))
        (out / page.replace(".html", ".json")).write_text(json.dumps(results.records, indent=1, default=str))
        rankings.append(
            ranking_view(results.name, page, computed[0], results.protocol, results.source, results.records)
        )
    index = out / "index.html"
    index.write_text(index_page(suites, rankings))
    return index
