"""Meta-evaluation of metrics (MetaQuantus): its perturbations, its four consistency tests against their definitions,
and the trust table they make.

The `metaquantus` package (0.0.5) cannot be installed beside the pinned stack: it pins cachetools==5.3.1 and tox
needs cachetools>=7.0.3. So the tests check the formulas of its `compute_iac_score` and `compute_iec_*` as written
there, on cases worked out here (SciPy's Wilcoxon test included).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import wilcoxon
from torch import nn

from tests.conftest import xbench
from xbench.analyse.trust import metric_trust
from xbench.core.results import PerturbedScores
from xbench.core.suite import SUITES_DIR
from xbench.measure.meta_consistency import (
    inter_consistency_adversary,
    inter_consistency_noise,
    intra_consistency,
)
from xbench.measure.perturbations import (
    PERTURBATIONS,
    draw_seed,
    noisy_inputs,
    noisy_weights,
    randomised_layers,
    weighted_layers,
)
from xbench.present.loading import suite_filename

RNG = np.random.default_rng(0)


def test_intra_consistency_is_the_wilcoxon_p_over_the_chosen_images() -> None:
    q, q_hat = RNG.normal(size=30), RNG.normal(size=30) + 0.3
    images = np.arange(30) % 3 != 0
    p = wilcoxon(q[images], q_hat[images], zero_method="zsplit", alternative="two-sided").pvalue
    assert intra_consistency(q, q_hat, images, adversary=False) == pytest.approx(p)
    assert intra_consistency(q, q_hat, images, adversary=True) == pytest.approx(1 - p)
    # scores that did not move: no evidence of a change, so fully resilient and not at all reactive
    assert intra_consistency(q, q.copy(), images, adversary=False) == 1.0
    assert intra_consistency(q, q.copy(), images, adversary=True) == 0.0
    assert math.isnan(intra_consistency(q, q_hat, np.zeros(30, dtype=bool), adversary=False))


def test_inter_consistency_under_noise_is_the_share_of_rank_places_kept() -> None:
    # three explainers (rows) on four images (columns)
    q = np.array([[0.1, 0.5, 0.9, 0.2], [0.2, 0.4, 0.8, 0.3], [0.3, 0.6, 0.7, 0.1]])
    kept_order = q + 0.01
    assert inter_consistency_noise(q, kept_order, np.ones(4, dtype=bool)) == 1.0
    swapped = q.copy()
    swapped[[0, 1], 0] = swapped[[1, 0], 0]  # image 0: explainers 0 and 1 trade places, explainer 2 stays top
    # image 0 keeps 1 of its 3 places, the others all 3: (1 + 3 + 3 + 3) / 12
    assert inter_consistency_noise(q, swapped, np.ones(4, dtype=bool)) == pytest.approx(10 / 12)
    assert inter_consistency_noise(q, swapped, np.array([False, True, True, True])) == 1.0
    assert math.isnan(inter_consistency_noise(q[:1], swapped[:1], np.ones(4, dtype=bool)))  # one explainer


def test_inter_consistency_under_attack_counts_the_images_the_attack_made_worse() -> None:
    q = np.array([0.5, 0.5, 0.5, 0.5])
    q_hat = np.array([0.4, 0.6, 0.5, 0.1])
    everything = np.ones(4, dtype=bool)
    assert inter_consistency_adversary(q, q_hat, everything, higher_is_better=True) == 0.5  # images 0 and 3
    assert inter_consistency_adversary(q, q_hat, everything, higher_is_better=False) == 0.25  # image 1
    assert inter_consistency_adversary(q, q_hat, np.array([True, False, False, False]), True) == 1.0


def _meta(scores: dict[str, np.ndarray], kept: np.ndarray, disruptive: bool, name: str) -> PerturbedScores:
    rows = {metric: tuple(tuple(float(v) for v in row) for row in values) for metric, values in scores.items()}
    return PerturbedScores(
        perturbation=name,
        disruptive=disruptive,
        kept_prediction=tuple(tuple(bool(v) for v in row) for row in kept),
        accuracy=(0.9,) * len(kept),
        reference_accuracy=0.9,
        scores=rows,
    )


def test_a_metric_that_ignores_the_model_is_resilient_but_not_reactive() -> None:
    """Two explainers, one variant and seed, two metrics: `faithful` drops when the model is randomised and barely
    moves under noise; `blind` (a function of the image alone) never moves."""
    images, draws = 40, 3
    records, per_image, meta = [], {}, {}
    image_term = RNG.normal(size=images)
    for index, explainer in enumerate(["gradcam", "saliency"]):
        run = f"run-{explainer}"
        faithful = 0.6 + 0.1 * index + 0.05 * image_term
        blind = image_term.copy()
        records.append(
            {
                "run_id": run,
                "model": "m",
                "pruning_method": "none",
                "pruning_scope": "none",
                "pruning_granularity": "none",
                "pruning_schedule": "none",
                "compression_rate": 1.0,
                "seed": 0,
                "explainer": explainer,
                "metric_directions": {"faithful": "higher", "blind": "higher"},
            }
        )
        per_image[run] = {"faithful": faithful, "blind": blind}
        kept = np.ones((draws, images), dtype=bool)
        noise = np.random.default_rng(7).normal(scale=1e-4, size=(draws, images))
        minor = {"faithful": faithful + noise, "blind": np.tile(blind, (draws, 1))}
        disrupted = {"faithful": faithful - 0.3 + noise, "blind": np.tile(blind, (draws, 1))}
        meta[run] = (
            _meta(minor, kept, False, "weight_noise"),
            _meta(minor, kept, False, "input_noise"),
            _meta(disrupted, ~kept, True, "randomised_layers"),
        )
    trust = {(t.metric, t.explainer): t for t in metric_trust(records, per_image, meta)}
    blind, faithful = trust[("blind", None)], trust[("faithful", None)]
    assert blind.iac_ar == 0.0 and blind.iec_ar == 0.0 and blind.adversary_reactivity == 0.0
    assert blind.noise_resilience == 1.0
    assert faithful.iac_ar > 0.99 and faithful.iec_ar == 1.0 and faithful.adversary_reactivity > 0.99
    assert faithful.iec_nr == 1.0  # the explainers' order (saliency above gradcam) survives the noise
    assert faithful.meta_consistency > blind.meta_consistency
    assert {t.explainer for t in trust.values()} == {None, "gradcam", "saliency"}
    assert trust[("faithful", "gradcam")].tests == 3 * draws


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def test_weight_noise_is_small_keeps_pruned_weights_at_zero_and_leaves_the_model_alone() -> None:
    model = _Tiny()
    with torch.no_grad():
        model.features.weight[0] = 0.0  # a pruned filter
    state = torch.random.get_rng_state()
    noisy = noisy_weights(model, 0.001, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # no global draw
    assert (noisy.features.weight[0] == 0).all()
    ratio = noisy.head.weight / model.head.weight
    assert 0 < (ratio - 1).abs().max() < 0.01
    assert torch.equal(noisy_weights(model, 0.001, seed=3).head.weight, noisy.head.weight)
    assert not torch.equal(noisy_weights(model, 0.001, seed=4).head.weight, noisy.head.weight)


def test_randomising_the_last_layer_changes_it_alone_and_is_seeded() -> None:
    model = _Tiny()
    state = torch.random.get_rng_state()
    randomised = randomised_layers(model, 1, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert weighted_layers(model) == [model.features, model.head]
    assert torch.equal(randomised.features.weight, model.features.weight)
    assert not torch.equal(randomised.head.weight, model.head.weight)
    assert torch.equal(randomised_layers(model, 1, seed=5).head.weight, randomised.head.weight)
    both = randomised_layers(model, 2, seed=5)
    assert not torch.equal(both.features.weight, model.features.weight)


def test_input_noise_and_draw_seeds() -> None:
    x = torch.zeros(2, 1, 4, 4)
    noisy = noisy_inputs(x, 0.01, seed=1)
    assert 0 < noisy.abs().max() < 0.1 and torch.equal(noisy, noisy_inputs(x, 0.01, seed=1))
    seeds = {draw_seed(0, p.name, draw) for p in PERTURBATIONS for draw in range(3)}
    assert len(seeds) == 9  # every perturbation and draw its own stream
    assert [p.disruptive for p in PERTURBATIONS] == [False, False, True]


BROKEN = '''
from xbench.measure.metric import torch_metric


@torch_metric("blind_brightness", higher_is_better=True, category="faithfulness")
def blind_brightness(context, x, y, a):
    """Mean |pixel| of the image: a broken metric that ignores the attribution (and the model)."""
    return x.abs().flatten(1).mean(dim=1)
'''


@pytest.mark.slow  # runs the metric-trust suite end to end (about 2 minutes on 2 cores)
def test_the_metric_trust_suite_finds_a_metric_that_ignores_the_attribution_unreactive(tmp_path: Path) -> None:
    """`suites/metric-trust.yaml` as shipped, with one planted metric that ignores the attribution added."""
    (tmp_path / "broken_metric.py").write_text(BROKEN)
    suite = yaml.safe_load((SUITES_DIR / "metric-trust.yaml").read_text())
    shipped = {spec if isinstance(spec, str) else spec["name"] for spec in suite["metrics"]}
    suite.update(name="trust-check", plugins=["broken_metric"], metrics=[*suite["metrics"], "blind_brightness"])
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(suite))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    xbench("run", "suite", "trust.yaml", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path, env=env, check=True)

    stats = json.loads(
        xbench("stats", "--suite", "trust-check", "--format", "json", cwd=tmp_path, env=env, check=True).stdout
    )
    reliability = {r["metric"]: r for r in stats["reliability"]}
    assert reliability["blind_brightness"]["adversary_reactivity"] == 0.0  # randomising the model cannot move it
    # each cell's share, measured by the executor into its figures and logged by the store as given
    from xbench.store.tracking import Store

    store = Store(f"sqlite:///{tmp_path / 'xbench.db'}")
    results = [result for _, result in store.load_cell_results("trust-check")]
    assert results and all(r.figures["meta.blind_brightness.iac_ar"] == 0.0 for r in results)
    assert all(any(k.startswith("meta.accuracy_change.") for k in r.figures) for r in results)
    assert reliability["insertion"]["adversary_reactivity"] > 0.5
    # every metric x explainer of the shipped suite has its noise resilience and adversary reactivity
    per_explainer = {(t["metric"], t["explainer"]): t for t in stats["trust"] if t["explainer"] is not None}
    explainers = {spec if isinstance(spec, str) else spec["name"] for spec in suite["explainers"]}
    assert set(per_explainer) == {(m, e) for m in shipped | {"blind_brightness"} for e in explainers}
    assert all(
        t["noise_resilience"] is not None and t["adversary_reactivity"] is not None for t in per_explainer.values()
    )
    assert all(t["minor_accuracy_change"] < 1.0 for t in per_explainer.values())  # the minor noise is minor
    assert stats["trust_reading"] and "Adversary reactivity" in stats["trust_reading"]

    table = xbench("stats", "--suite", "trust-check", cwd=tmp_path, env={**env, "COLUMNS": "160"}, check=True).stdout
    assert "metric trust" in table and "blind_brightness" in table

    site = tmp_path / "site"
    xbench("leaderboard", "build", "--suite", "trust-check", "--out", str(site), cwd=tmp_path, env=env, check=True)
    page = (site / suite_filename("trust-check")).read_text()
    assert 'id="trust-table"' in page and 'id="trust-per-explainer"' in page and "blind_brightness" in page
