"""The suites of the new axes through the CLI's main (one seed each, to fit CI): the ViT with the transformer
explainers (fewer training epochs), pruning by explaining against pruning by magnitude, and Fashion-MNIST from
Debian's files."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import xbench_here
from tests.services import fashion_mnist_dir
from xbench.core.suite import SUITES_DIR


def _cells(tmp_path: Path, suite: str) -> list[mlflow.entities.Run]:
    command = ["run", "suite", suite, "--seeds", "0", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    xbench_here(*command, cwd=tmp_path, check=True)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'xbench.db'}")
    name = yaml.safe_load(Path(suite).read_text())["name"] if suite.endswith(".yaml") else suite
    runs = mlflow.search_runs(experiment_names=[f"xbench/{name}"], output_format="list")
    return [run for run in runs if run.data.tags.get("xbench.role") == "cell"]


@pytest.mark.slow
def test_vit_suite_scores_every_transformer_explainer(tmp_path: Path) -> None:
    """The shipped suite trained for 6 epochs instead of 20: its 20 are for its accuracy (benchmarks/RESULTS.md), this
    checks that every explainer, metric and CR of it runs and says what its CR counts."""
    suite = yaml.safe_load((SUITES_DIR / "vit.yaml").read_text())
    suite["models"][0]["train"]["epochs"] = 6
    (tmp_path / "vit.yaml").write_text(yaml.safe_dump(suite))
    cells = _cells(tmp_path, str(tmp_path / "vit.yaml"))
    explained = {run.data.params["explainer"] for run in cells}
    assert explained == {"attention_rollout", "transformer_attribution", "attnlrp"}
    assert sorted({float(run.data.params["compression_rate"]) for run in cells}) == [1.0, 2.0, 4.0]
    for run in cells:
        assert 0 <= run.data.metrics["accuracy"] <= 1
        for metric in ("insertion", "deletion", "sparseness", "attribution_localisation"):
            assert math.isfinite(run.data.metrics[metric]), (run.info.run_name, metric)
        rate = float(run.data.params["compression_rate"])
        # the logged figure counts nonzero params of the whole model; channel pruning lands within 2 % of the request
        assert run.data.metrics["compression_rate_model"] == pytest.approx(rate, rel=0.02)


@pytest.mark.slow
def test_explain_prune_suite_pairs_lrp_and_magnitude_at_the_same_rates(tmp_path: Path) -> None:
    """The shipped suite trained on 512 images for 2 epochs (it trains on 1500 for 6): this checks the pairing of the
    methods, the rates each reaches and the page, not how well the model learns."""
    suite = yaml.safe_load((SUITES_DIR / "explain-prune.yaml").read_text())
    suite["dataset"]["train_size"] = 512
    suite["models"][0]["train"]["epochs"] = 2
    (tmp_path / "explain-prune.yaml").write_text(yaml.safe_dump(suite))
    cells = _cells(tmp_path, str(tmp_path / "explain-prune.yaml"))
    rates: dict[str, set[float]] = {}
    for run in cells:
        rates.setdefault(run.data.params["pruning_method"], set()).add(float(run.data.params["compression_rate"]))
    assert rates["lrp"] <= rates["magnitude"] and rates["channel_lrp"] <= rates["channel_magnitude"]
    for run in cells:
        method, rate = run.data.params["pruning_method"], float(run.data.params["compression_rate"])
        counted = "compression_rate_model" if method.startswith("channel_") else "compression_rate_scope"
        if method != "none":
            assert run.data.metrics[counted] == pytest.approx(rate, rel=0.02), (method, rate)
    xbench_here(
        "leaderboard", "build", "--suite", "explain-prune", "--out", str(tmp_path / "site"), cwd=tmp_path, check=True
    )
    page = next((tmp_path / "site").glob("*explain-prune*.html")).read_text()
    section = page[page.index('id="methods"') : page.index('id="pareto"')]
    assert ">lrp<" in section and ">magnitude<" in section and ">channel_lrp<" in section
    assert "CR of the scope" in section and "CR of the model" in section  # unstructured and structured apart


@pytest.mark.slow
def test_fashion_mnist_suite_runs_offline_on_debians_files(tmp_path: Path) -> None:
    if fashion_mnist_dir() is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed and this user cannot apt-get it")
    cells = _cells(tmp_path, "fashion-mnist")
    assert len(cells) == 9  # CR 1, 2, 8 x three explainers
    for run in cells:
        assert run.data.params["dataset"] == "torchvision" and run.data.params["dataset.class"] == "FashionMNIST"
        assert run.data.params["dataset_path"] == "/usr/share/datasets/fashion-mnist"
        assert run.data.metrics["accuracy"] > 0.3  # 10 classes: chance is 0.1
        assert math.isfinite(run.data.metrics["sparseness"])
