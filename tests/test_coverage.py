"""The coverage suite: every explainer and every metric on a CNN and a ViT, run through the CLI's main.

Each (cell, metric) must log a score or an explicit NaN with its reason; nothing may crash the suite.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pytest

from tests.conftest import xbench_here
from xbench.components.explainers import explainers
from xbench.components.models import timm_model
from xbench.core.suite import SUITES_DIR, load_suite
from xbench.measure.metrics import metrics

COVERAGE = SUITES_DIR / "coverage.yaml"


@pytest.mark.slow
def test_every_explainer_and_metric_logs_a_score_or_a_reason(tmp_path: Path) -> None:
    suite, _ = load_suite(str(COVERAGE))
    assert {spec.name for spec in suite.explainers} == set(explainers.names())
    assert {spec.name for spec in suite.metrics} == set(metrics.names())
    xbench_here(
        "run", "suite", str(COVERAGE), "--cache-dir", str(tmp_path / "cache"), "--no-progress", cwd=tmp_path, check=True
    )

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'xbench.db'}")
    runs = mlflow.search_runs(experiment_names=["xbench/coverage"], output_format="list")
    cells = [run for run in runs if run.data.tags.get("xbench.role") == "cell"]
    pairs = {(run.data.params["model"], run.data.params["explainer"]) for run in cells}
    for model_name in ("test_resnet", "test_vit"):
        model = timm_model(model_name, num_classes=8, image_size=32)
        supported = {name for name in explainers.names() if explainers.get(name).unsupported_reason(model) is None}
        assert {e for m, e in pairs if m == model_name} == supported
    assert len(cells) == 2 * len(pairs)  # dense and CR 2 of each pair

    scored = 0
    for run in cells:
        for name in metrics.names():
            value = run.data.metrics[name]
            if math.isnan(value):
                reason = run.data.tags.get(f"xbench.missing.{name}") or run.data.tags.get(
                    f"xbench.missing.{name}_error"
                )
                assert reason, f"{name} is NaN without a reason in {run.info.run_name}"
            else:
                scored += 1
            assert run.data.tags[f"xbench.direction.{name}"] in ("higher", "lower")
            assert f"xbench.metric_version.{name}" in run.data.tags
        assert run.data.metrics["explain_forward_passes_per_image"] >= 0
    # The tiny CNN's CAMs are constant (1x1 feature map at 32 px); everything else scores.
    assert scored >= 0.75 * len(cells) * len(metrics.names())
