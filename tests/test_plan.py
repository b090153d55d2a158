import json
from pathlib import Path

import pytest

from xbench.core.cells import Cell, plan_key
from xbench.core.errors import XbenchInputError
from xbench.core.suite import load_suite, parse_suite
from xbench.plan.planner import plan


def suite(**overrides: object):
    data = {
        "name": "t",
        "dataset": {"image_size": 32},
        "models": [{"name": "test_resnet"}, {"name": "test_efficientnet"}],
        "pruning": [
            {"method": "magnitude", "compression_rates": [1, 2, 4]},
            {"method": "magnitude", "granularity": "global", "compression_rates": [2]},
        ],
        "explainers": ["saliency", "gradcam"],
        "metrics": ["sparseness", {"name": "pixel_flipping", "features_in_step": 32}],
    }
    data.update(overrides)
    return parse_suite(data)


def test_plan_is_the_product_with_one_shared_unpruned_cell() -> None:
    cells = plan(suite(), "cpu")
    # per model: (dense + 2 rates + 1 rate) x 2 explainers
    assert len(cells) == 2 * (1 + 2 + 1) * 2
    dense = [c for c in cells if c.pruning is None]
    assert len(dense) == 4 and all(c.compression_rate == 1 for c in dense)
    assert len({c.cell_key for c in cells}) == len(cells)


def test_cells_round_trip_through_json_and_hash_by_key() -> None:
    for cell in plan(suite(), "cpu"):
        again = Cell.from_json(cell.to_json())
        assert again == cell and again.cell_key == cell.cell_key and hash(again) == hash(cell)


def test_defaults_are_resolved_into_the_cell() -> None:
    cell = plan(suite(), "cpu")[0]
    metrics = {m.name: m.params for m in cell.metrics}
    assert metrics["pixel_flipping"]["features_in_step"] == 32  # the suite's value wins
    assert metrics["pixel_flipping"]["return_auc_per_sample"] is True  # xbench's default fills the rest


def test_cell_key_is_stable_and_follows_the_computation() -> None:
    keys = [c.cell_key for c in plan(suite(), "cpu")]
    assert keys == [c.cell_key for c in plan(suite(), "cpu")]
    renamed = plan(suite(name="other"), "cpu")
    assert [c.cell_key for c in renamed] == keys  # the suite's name is not part of what a cell computes
    reseeded = plan(suite(seed=1), "cpu")
    assert not set(c.cell_key for c in reseeded) & set(keys)
    assert plan_key(plan(suite(), "cpu")) == plan_key(list(reversed(plan(suite(), "cpu"))))


@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        ({"explainers": ["gradcm"]}, "explainers[0].name", "did you mean 'gradcam'"),
        ({"metrics": ["pixel_fliping"]}, "metrics[0].name", "did you mean 'pixel_flipping'"),
        ({"models": [{"name": "resnet81"}]}, "models[0].name", "did you mean 'resnet18'"),
        ({"pruning": [{"method": "magnitud", "compression_rates": [2]}]}, "pruning[0].method", "'magnitude'"),
        ({"dataset": {"name": "shape"}}, "dataset.name", "did you mean 'shapes'"),
        ({"metrics": [{"name": "sparseness", "bogus": 1}]}, "metrics[0]", "allowed:"),
        ({"explainers": ["saliency", "saliency"]}, "explainers[1]", "listed twice"),
        (
            {"dataset": {"name": "imagefolder", "path": "/x"}, "metrics": ["attribution_localisation"]},
            "metrics[0]",
            "needs ground-truth masks",
        ),
    ],
)
def test_bad_names_fail_at_plan_time_naming_the_field(overrides: dict, field: str, hint: str) -> None:
    with pytest.raises(XbenchInputError) as error:
        plan(suite(**overrides), "cpu")
    assert str(error.value).startswith(f"{field}: ")
    assert hint in str(error.value)


@pytest.mark.parametrize("name", ["quick", "smoke"])
def test_shipped_suites_plan(name: str) -> None:
    loaded, _ = load_suite(name)
    cells = plan(loaded, "cpu")
    rates = len([r for r in loaded.pruning[0].compression_rates if r != 1]) + 1
    assert len(cells) == len(loaded.replicate_seeds) * len(loaded.models) * rates * len(loaded.explainers)
    assert {cell.seed for cell in cells} == set(loaded.replicate_seeds)
    assert len({cell.cell_key for cell in cells}) == len(cells)  # each (cell, seed) its own key


def test_a_structured_method_that_cannot_prune_an_architecture_fails_at_plan_time() -> None:
    def convnext_with(**pruning: object) -> object:
        return suite(models=[{"name": "test_convnext"}], pruning=[{"compression_rates": [2], **pruning}])

    # test_convnext uses LayerNorm, so there are no BatchNorm scales to rank channels by.
    with pytest.raises(XbenchInputError, match=r"pruning\[0\]\.method: channel_bn_scale cannot prune test_convnext"):
        plan(convnext_with(method="channel_bn_scale", scope="conv_linear"), "cpu")
    # Its blocks tie depthwise convs to Linear MLPs: with scope conv no channel can go, with conv_linear they can.
    with pytest.raises(XbenchInputError, match="no channel could be removed with scope 'conv'"):
        plan(convnext_with(method="channel_magnitude", scope="conv"), "cpu")
    assert len(plan(convnext_with(method="channel_magnitude", scope="conv_linear"), "cpu")) == 2 * 2


def test_expand_is_pure_and_imports_no_torch(tmp_path: Path) -> None:
    """validate() resolves with the libraries; expand() is combinatorics on plain data: a fresh interpreter given the
    suite and the resolution produces the very cells plan() does, without importing torch, numpy or a registry."""
    import subprocess
    import sys

    from xbench.core.suite import SUITES_DIR, load_suite
    from xbench.plan.planner import validate

    suite = load_suite(str(SUITES_DIR / "quick.yaml"))[0]
    expected = [c.cell_key for c in plan(suite, "cpu")]
    (tmp_path / "resolution.json").write_text(validate(suite).model_dump_json())
    script = f"""
import json, sys
from xbench.core.suite import load_suite
from xbench.plan.expand import Resolution, expand
suite = load_suite({str(SUITES_DIR / "quick.yaml")!r})[0]
resolution = Resolution.model_validate_json(open("resolution.json").read())
cells = expand(suite, resolution, "cpu")
heavy = ("torch", "numpy", "timm", "quantus", "xbench.components", "xbench.measure")
heavy = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({{"keys": [c.cell_key for c in cells], "heavy": heavy}}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["heavy"] == []
    assert report["keys"] == expected and len(expected) == 45
