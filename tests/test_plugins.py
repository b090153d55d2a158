"""Plug-ins from outside the package, named in a suite or an entry point, registered before planning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMOKE, xbench, xbench_here

PLUGIN = '''
from xbench.api import explainer


@explainer("input_magnitude", "my_lab")
def input_magnitude(model, x, targets, params):
    """|x| summed over channels: a model-independent baseline explanation."""
    return x.abs().sum(dim=1, keepdim=True)
'''


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=environment, capture_output=True, text=True
    )


def test_a_suite_names_a_plugin_module_and_uses_what_it_registers(tmp_path: Path) -> None:
    (tmp_path / "my_lab_explainers.py").write_text(PLUGIN)
    suite = yaml.safe_load(SMOKE.read_text())
    suite.update(name="plugged", plugins=["my_lab_explainers"], explainers=["input_magnitude"], seeds=[0])
    (tmp_path / "plugged.yaml").write_text(yaml.safe_dump(suite))
    result = _run(
        """
        import json
        from xbench.plan.planner import plan
        from xbench.core.suite import load_suite
        cells = plan(load_suite("plugged.yaml")[0], "cpu")
        print(json.dumps(sorted({c.explainer.name for c in cells})))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["input_magnitude"]


def test_without_the_plugin_the_name_is_unknown_and_a_missing_module_is_named(tmp_path: Path) -> None:
    suite = yaml.safe_load(SMOKE.read_text())
    suite.update(name="plugged", explainers=["input_magnitude"])
    (tmp_path / "unplugged.yaml").write_text(yaml.safe_dump(suite))
    suite.update(plugins=["no_such_module"])
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(suite))
    for name, message in (
        ("unplugged", "unknown explainer 'input_magnitude'"),
        ("missing", "plugins[0]: cannot import plug-in module 'no_such_module'"),
    ):
        result = xbench_here("run", "suite", f"{name}.yaml", cwd=tmp_path)  # registers nothing: safe in this process
        assert result.returncode == 2 and message in result.stderr, result.stderr


ONE_OF_EACH = '''
"""A lab's plug-ins, one file: a dataset with its own options, a pruner and a metric only the torch engine computes."""
import dataclasses

from pydantic import BaseModel, Field

from xbench.api import dataset, datasets, torch_metric, unstructured_pruner


class Dimmed(BaseModel):
    model_config = {"extra": "forbid"}
    factor: float = Field(1.0, gt=0, le=1, description="multiplies every eval image")


@dataset("dimmed_shapes", has_masks=True, options=Dimmed)
def dimmed_shapes(config, seed, cache_root):
    """shapes with darker eval images."""
    options = datasets.get("dimmed_shapes").parse_options(config)
    data = datasets.get("shapes").load(config.model_copy(update={"options": None}), seed, cache_root)
    return dataclasses.replace(data, eval_x=data.eval_x * options.factor)


@unstructured_pruner("most_negative_first")
def most_negative_first(weight, generator):
    """Removes the most negative weights first (importance = the signed weight)."""
    return weight


@torch_metric("mean_absolute_attribution", higher_is_better=False, category="complexity")
def mean_absolute_attribution(context, x, y, a):
    """Mean |attribution| per image."""
    return a.abs().flatten(1).mean(dim=1)
'''


@pytest.mark.slow  # runs a suite end to end
def test_a_dataset_with_options_a_pruner_and_a_torch_only_metric_from_outside_run_a_suite(tmp_path: Path) -> None:
    (tmp_path / "my_lab.py").write_text(ONE_OF_EACH)
    suite = yaml.safe_load(SMOKE.read_text())
    suite.update(
        name="lab",
        plugins=["my_lab"],
        seeds=[0],
        dataset={**suite["dataset"], "name": "dimmed_shapes", "options": {"factor": 0.5}},
        pruning=[{**suite["pruning"][0], "method": "most_negative_first"}],
        explainers=["saliency"],
        metrics=["mean_absolute_attribution", "sparseness"],
    )
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(suite))
    plugged = {"PYTHONPATH": str(tmp_path)}
    xbench("run", "suite", "lab.yaml", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path, env=plugged, check=True)
    exported = xbench("export", "--suite", "lab", cwd=tmp_path, env=plugged, check=True)
    records = json.loads(exported.stdout)
    assert {r["pruning_method"] for r in records} == {"none", "most_negative_first"}
    assert all(r["mean_absolute_attribution"] > 0 for r in records)
    assert all(r["metric_directions"]["mean_absolute_attribution"] == "lower" for r in records)

    suite["dataset"]["options"] = {"factor": 2.0, "colour": "red"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(suite))
    before = _tree(tmp_path)
    bad = xbench("run", "suite", "bad.yaml", cwd=tmp_path, env=plugged)
    assert bad.returncode == 2, bad.stderr
    assert "dataset.options.factor" in bad.stderr and "dataset.options.colour" in bad.stderr
    assert "options of dimmed_shapes: factor" in bad.stderr
    assert _tree(tmp_path) == before  # the store, the cache and the folder: not a byte written


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (the MLflow store and the cache included)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_plugin_pruner_prunes_in_its_own_order_and_a_dataset_option_takes_effect(tmp_path: Path) -> None:
    (tmp_path / "my_lab.py").write_text(ONE_OF_EACH)
    result = _run(
        """
        import json
        import torch
        import my_lab
        from xbench.components.datasets import datasets
        from xbench.components.pruners import PruneRequest, pruners
        from xbench.core.suite import DatasetConfig, PruningConfig

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
        original = model[0].weight.detach().clone()
        config = PruningConfig(method="most_negative_first", compression_rates=[2])
        pruner = pruners.get("most_negative_first")
        model, _ = pruner.prune_step(model, PruneRequest(config, 2.0, data=None))
        kept = model[0].weight.detach() != 0
        dataset = DatasetConfig(name="shapes", image_size=16, train_size=8, eval_size=8)
        plain = datasets.get("shapes").load(dataset, 0, None)
        dimmed = dataset.model_copy(update={"name": "dimmed_shapes", "options": {"factor": 0.25}})
        dim = datasets.get("dimmed_shapes").load(dimmed, 0, None)
        print(json.dumps({
            "kept": int(kept.sum()), "total": kept.numel(),
            "largest_removed": float(original[~kept].max()), "smallest_kept": float(original[kept].min()),
            "ratio": float((dim.eval_x / plain.eval_x)[plain.eval_x != 0].mean()),
            "train_same": bool(torch.equal(dim.train_x, plain.train_x)),
        }))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["kept"] == out["total"] // 2
    # importance = the signed weight: every removed weight lies below every kept one (not |w|, as magnitude would)
    assert out["largest_removed"] <= out["smallest_kept"]
    assert out["ratio"] == pytest.approx(0.25) and out["train_same"]


CONSTANT_PLUGIN = '''
from xbench.api import explainer


@explainer("flat", "my_lab")
def flat(model, x, targets, params):
    """The same value everywhere: an explainer that says nothing."""
    return x.abs().sum(dim=1, keepdim=True) * 0 + 1
'''


def test_a_cell_whose_every_explanation_is_constant_is_warned_about(tmp_path: Path) -> None:
    """Every map constant (a broken explainer) gave a finished cell of NaN metrics without a word; now the cell
    carries a warning in its missing figures and the run says it."""
    (tmp_path / "flat_explainer.py").write_text(CONSTANT_PLUGIN)
    result = _run(
        """
        import json, torch
        from xbench.core.cache import Cache
        from xbench.core.suite import parse_suite
        from xbench.execute.runner import CellExecutor
        from xbench.plan.planner import plan
        suite = parse_suite({
            "name": "flat", "plugins": ["flat_explainer"],
            "dataset": {"image_size": 32, "train_size": 32, "eval_size": 4},
            "models": [{"name": "test_resnet", "train": {"epochs": 1, "batch_size": 16}}],
            "explainers": ["flat"], "metrics": ["sparseness"],
            "perf": {"batch_sizes": [2], "warmup": 0, "repeats": 2},
        })
        result = CellExecutor(Cache("cache"), torch.device("cpu")).execute(plan(suite, "cpu")[0])
        print(json.dumps({"missing": result.missing, "constant": result.figures["attribution_constant_count"]}))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["constant"] == 4 and "all 4 explanations are NaN or constant" in found["missing"]["explanations"]
    assert "warning:" in result.stderr + result.stdout


@pytest.mark.slow
def test_a_run_that_fails_before_its_first_cell_leaves_its_parent_failed_with_the_reason(tmp_path: Path) -> None:
    """A plug-in's bug is an internal error (a traceback, exit 1), and the store is not left with a RUNNING parent:
    it is FAILED, and says why."""
    (tmp_path / "broken_lab.py").write_text(
        PLUGIN.replace("input_magnitude", "broken_maps").replace(
            "return x.abs().sum(dim=1, keepdim=True)", 'raise RuntimeError("plug-in bug: no maps today")'
        )
    )
    suite = yaml.safe_load(SMOKE.read_text())
    suite.update(name="broken", plugins=["broken_lab"], explainers=["broken_maps"], seeds=[0], metrics=["sparseness"])
    suite["dataset"]["train_size"] = 128
    suite["models"][0]["train"]["epochs"] = 1
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(suite))
    result = xbench(
        "run",
        "suite",
        "broken.yaml",
        "--cache-dir",
        str(tmp_path / "cache"),
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 1 and "plug-in bug: no maps today" in result.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'xbench.db'}")
    experiment = client.get_experiment_by_name("xbench/broken")
    [parent] = client.search_runs([experiment.experiment_id], "tags.`xbench.role` = 'suite'")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["xbench.failure"] == "RuntimeError: plug-in bug: no maps today"
    assert client.search_runs([experiment.experiment_id], "tags.`xbench.role` = 'cell'") == []  # no claim left
