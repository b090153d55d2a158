"""Whole simulated suites, shaped like `quick`, for the suite-level rows of `calibration.py`.

A suite: 6 metrics × 3 explainers × 4 CRs (2, 4, 8, 32) of per-image differences, plus accuracy at the same CRs, so
76 comparisons, as `quick` has. Per comparison d[s, i] = δ + seed effect + image effect + residual, each component's
SD 1 times a factor drawn per comparison (its variance within `spread`× of 1 either way: "components that vary up to
2× around SD 1/1/1"). Comparisons share seeds and images as a real suite's do: half of each seed effect's variance is
common to every metric and explainer at that CR (they prune the same trained model), half of each image effect's is
common to the explainers of one metric at that CR (they explain the same image). Accuracy: per-image 0/1 outcomes of
the same seeds; the variant flips a share of the reference's predictions both ways (net zero) and, for a drop, makes a
fixed set of images wrong in every seed.

All of a suite's seeds are drawn up front from its own generator, so a run with more seeds extends the same suite (the
truth, the images and the first seeds stay): that is how `--plan` and `--until-decided` are simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CRS = (2.0, 4.0, 8.0, 32.0)
METRICS = 6
EXPLAINERS = 3
IMAGES = 64
MARGIN = 0.5  # every metric's margin, in units of the components' SD
ACCURACY_MARGIN = 0.01
SHARED = 0.5  # share of a seed (image) effect's variance common to the comparisons that share the trained model (image)


@dataclass
class SimulatedSuite:
    """The truth of one suite and its data for up to `max_seeds` seeds."""

    deltas: dict[tuple[int, int, float], float]  # (metric, explainer, CR) -> true δ
    accuracy_drops: dict[float, float]  # CR -> share of images made wrong in every seed
    differences: dict[tuple[int, int, float], np.ndarray] = field(default_factory=dict)  # (max_seeds, images)
    reference: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (metric, explainer) -> scores
    correct: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # reference 0/1 (max_seeds, acc images)
    variant_correct: dict[float, np.ndarray] = field(default_factory=dict)

    def questions(self, seeds: int) -> list[dict]:
        """The suite's questions (as `xbench.analyse.stats.suite_stats` builds them) with its first `seeds` seeds."""
        out = []
        for (metric, explainer), reference in self.reference.items():
            variants = {}
            for rate in CRS:
                variant = reference[:seeds] + self.differences[(metric, explainer, rate)][:seeds]
                variants[rate] = dict(enumerate(variant))
            out.append(
                {
                    "name": f"m{metric}|e{explainer}",
                    "metric": f"m{metric}",
                    "explainer": explainer,
                    "higher_is_better": True,
                    "margin": MARGIN,
                    "reference": dict(enumerate(reference[:seeds])),
                    "variants": variants,
                }
            )
        out.append(
            {
                "name": "accuracy",
                "metric": "accuracy",
                "binary": True,
                "higher_is_better": True,
                "margin": ACCURACY_MARGIN,
                "reference": dict(enumerate(self.correct[:seeds])),
                "variants": {rate: dict(enumerate(v[:seeds])) for rate, v in self.variant_correct.items()},
            }
        )
        return out


def simulate_suite(
    rng: np.random.Generator,
    max_seeds: int,
    delta: float | dict[tuple[int, int, float], float] = 0.0,
    accuracy_drop: float | dict[float, float] = 0.0,
    spread: float = 2.0,
    images: int = IMAGES,
    accuracy_images: int = IMAGES,
) -> SimulatedSuite:
    """One suite's truth and data. `delta`: every metric comparison's true difference (or per comparison);
    `accuracy_drop`: the share of images each CR makes wrong in every seed; `spread`: each variance component's
    factor is drawn log-uniformly from [1/spread, spread]."""
    deltas = {
        (m, e, rate): (delta if isinstance(delta, float) else delta.get((m, e, rate), 0.0))
        for m in range(METRICS)
        for e in range(EXPLAINERS)
        for rate in CRS
    }
    drops = {
        rate: (accuracy_drop if isinstance(accuracy_drop, float) else accuracy_drop.get(rate, 0.0)) for rate in CRS
    }
    suite = SimulatedSuite(deltas, drops)
    common_seed = {rate: rng.normal(0, 1, max_seeds) for rate in CRS}
    log_spread = math.log(spread) / 2  # on the SD scale

    def factor() -> float:
        return float(np.exp(rng.uniform(-log_spread, log_spread)))

    for m in range(METRICS):
        common_image = {rate: rng.normal(0, 1, images) for rate in CRS}
        for e in range(EXPLAINERS):
            suite.reference[(m, e)] = rng.normal(0, 1, (max_seeds, images)) + rng.normal(0, 1, images)
            for rate in CRS:
                seed_effect = math.sqrt(SHARED) * common_seed[rate] + math.sqrt(1 - SHARED) * rng.normal(
                    0, 1, max_seeds
                )
                image_effect = math.sqrt(SHARED) * common_image[rate] + math.sqrt(1 - SHARED) * rng.normal(0, 1, images)
                suite.differences[(m, e, rate)] = (
                    deltas[(m, e, rate)]
                    + factor() * seed_effect[:, None]
                    + factor() * image_effect[None, :]
                    + factor() * rng.normal(0, 1, (max_seeds, images))
                )
    ease = rng.normal(1.5, 1.0, accuracy_images)  # per image: how easy (logit of being right)
    seed_shift = rng.normal(0, 0.3, max_seeds)
    correct = (rng.logistic(size=(max_seeds, accuracy_images)) < ease[None, :] + seed_shift[:, None]).astype(float)
    suite.correct = correct
    share_right = float(correct.mean())
    for rate in CRS:
        flip_rate = rng.uniform(0.02, 0.15) * np.exp(rng.normal(0, 0.3, max_seeds))[:, None]
        # right -> wrong with rate × (1 - accuracy), wrong -> right with rate × accuracy: no net change
        flip = np.where(
            correct == 1,
            rng.random(correct.shape) < flip_rate * (1 - share_right),
            rng.random(correct.shape) < flip_rate * share_right,
        )
        variant = np.where(flip, 1 - correct, correct)
        if drops[rate] > 0:
            # images already wrong stay wrong, so this many are hit for a true drop of `drops[rate]`
            dropped = rng.random(accuracy_images) < drops[rate] / max(share_right, 1e-9)
            variant = np.where(dropped[None, :], 0.0, variant)
        suite.variant_correct[rate] = variant
    return suite
