"""The statistics' own error rates, by simulation on data shaped like the study's.

    python benchmarks/calibration.py                 # the full table (2,000 runs a setting; about 10 minutes)
    python benchmarks/calibration.py --runs 200 --suite-runs 200     # a quick look

Whole suites (`xbench.analyse.decide`, what `xbench stats`, the page and the gate use): `suite_level.py`.

Prints a table and writes `benchmarks/calibration.json`.

Seeds × images (`xbench.analyse.inference.compare_paired`, one comparison without the suite's moderation): per-image
differences d[s, i] = δ + a_s + b_i + e_si with seed, image and residual SDs as given, 64 images. Reported: the share of
runs with p < 0.05 when δ = 0 (false positives), the share whose 95 % interval holds δ (coverage; at δ = 0 and at δ =
0.5), the share with p < 0.05 at δ = 0.5 and δ = 1 (power), and the share called equivalent (TOST p < 0.05) when δ is
exactly the margin 0.5 (false equivalence; at most 5 % by design).

Crowd answers (`xbench.analyse.crowd.pairwise_stats` and `identify_stats`, the functions `xbench human analyse`
runs): a pairwise study where workers prefer side a with logit u_w + v_i + β (worker and image SDs as given; "equal"
one answer in five), every worker answering every image, or each a random half of them; and an identify study where
each worker sees each image once in one of two variants at random, correct with logit 1 + u_w + v_i + β·variant, one
answer in ten "don't know". Reported: the share of studies with headline p < 0.05 when β = 0, the share the seed
paper's answer-level binomial (pairwise) or chi-squared (identify) test calls significant, and power at β = 0.5.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from xbench.analyse.crowd import Answer, Manifest, identify_stats, pairwise_stats  # noqa: E402
from xbench.analyse.inference import compare_paired  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from suite_level import suite_calibration, suite_rows, suite_table  # noqa: E402

PAIRED_SETTINGS = [  # (seed SD, image SD, residual SD): the three, then others a reviewer may try
    (1.0, 1.0, 1.0),
    (0.25, 1.0, 1.0),
    (0.0, 1.0, 1.0),
    (0.5, 1.0, 0.25),
    (1.0, 0.25, 1.0),
    (0.0, 0.0, 1.0),
]
PAIRED_SEEDS = [3, 5, 10]
IMAGES = 64
EFFECT, LARGE_EFFECT, MARGIN = 0.5, 1.0, 0.5
CROWD_SETTINGS = [  # (workers, images, worker logit SD, image logit SD, share of the images each worker answers)
    (20, 30, 0.5, 1.0, 1.0),
    (24, 30, 1.0, 1.0, 1.0),
    (20, 30, 0.5, 0.5, 1.0),
    (40, 30, 0.5, 1.0, 0.5),
]
CROWD_EFFECT = 0.5


def paired_rates(
    seed_sd: float, image_sd: float, residual_sd: float, seeds: int, runs: int, rng: np.random.Generator
) -> dict[str, float]:
    """Error rates of `compare_paired` in one setting."""

    def draw(delta: float) -> list[dict[str, float | int]]:
        results = []
        for _ in range(runs):
            reference = rng.normal(0, 1, (seeds, IMAGES))
            differences = (
                delta
                + seed_sd * rng.normal(0, 1, (seeds, 1))
                + image_sd * rng.normal(0, 1, (1, IMAGES))
                + residual_sd * rng.normal(0, 1, (seeds, IMAGES))
            )
            results.append(compare_paired(dict(enumerate(reference)), dict(enumerate(reference + differences)), MARGIN))
        return results

    def share(results: list[dict[str, float | int]], test: str) -> float:
        return float(np.mean([bool(eval(test, {}, dict(r))) for r in results]))

    null, effect, large, at_margin = draw(0.0), draw(EFFECT), draw(LARGE_EFFECT), draw(MARGIN)
    return {
        "false_positives": share(null, "p < 0.05"),
        "coverage_null": share(null, "ci_low <= 0 <= ci_high"),
        "coverage_effect": share(effect, f"ci_low <= {EFFECT} <= ci_high"),
        "power_0.5": share(effect, "p < 0.05"),
        "power_1": share(large, "p < 0.05"),
        "false_equivalence": share(at_margin, "p_equivalent < 0.05"),
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _answered(
    workers: int, images: int, worker_sd: float, image_sd: float, answered: float, rng: np.random.Generator
) -> Iterator[tuple[int, int, float]]:
    """(worker, image, worker effect + image effect on the logit) for each answer given: random worker and image
    effects, each worker answering each image with probability `answered`."""
    worker_effects, image_effects = rng.normal(0, worker_sd, workers), rng.normal(0, image_sd, images)
    for w in range(workers):
        for i in range(images):
            if rng.random() < answered:
                yield w, i, float(worker_effects[w] + image_effects[i])


def pairwise_study(
    workers: int,
    images: int,
    worker_sd: float,
    image_sd: float,
    answered: float,
    effect: float,
    rng: np.random.Generator,
) -> dict:
    """One simulated pairwise study of the pair CR 1 / CR 4, analysed by `pairwise_stats`."""
    rows = {
        f"s{i}.png": {"stimulus": f"s{i}.png", "image_id": str(i), "left": "CR 1", "right": "CR 4", "expected": ""}
        for i in range(images)
    }
    manifest = Manifest("pairwise", rows)
    answers = []
    for w, i, logit in _answered(workers, images, worker_sd, image_sd, answered, rng):
        if rng.random() < 0.2:
            choice = "equal"
        else:
            choice = "left" if rng.random() < _sigmoid(np.asarray(effect + logit)) else "right"
        answers.append(Answer(f"W{w}", f"s{i}.png", choice, None))
    return pairwise_stats(answers, manifest)[0]


def identify_study(
    workers: int,
    images: int,
    worker_sd: float,
    image_sd: float,
    answered: float,
    effect: float,
    rng: np.random.Generator,
) -> dict:
    """One simulated identify study of two variants, each worker seeing each image once, analysed by
    `identify_stats`."""
    rows = {}
    for i in range(images):
        for variant in ("CR 1", "CR 4"):
            name = f"i{i}-{variant[3:]}.png"
            rows[name] = {"stimulus": name, "image_id": str(i), "class": "fish", "variant": variant, "expected": ""}
    manifest = Manifest("identify", rows)
    answers = []
    for w, i, logit in _answered(workers, images, worker_sd, image_sd, answered, rng):
        pruned = rng.random() < 0.5
        name = f"i{i}-{4 if pruned else 1}.png"
        if rng.random() < 0.1:
            answer = "dont_know"
        else:
            answer = "fish" if rng.random() < _sigmoid(np.asarray(1 + logit + (effect if pruned else 0.0))) else "dog"
        answers.append(Answer(f"W{w}", name, answer, None))
    _, chi2_p, contrasts = identify_stats(answers, manifest)
    return {**contrasts[0], "chi2_p": chi2_p}


def crowd_rates(design: str, setting: tuple, runs: int, rng: np.random.Generator) -> dict[str, float]:
    study = pairwise_study if design == "pairwise" else identify_study
    answer_level = "binom_p" if design == "pairwise" else "chi2_p"
    null = [study(*setting, 0.0, rng) for _ in range(runs)]
    effect = [study(*setting, CROWD_EFFECT, rng) for _ in range(runs)]

    def share(results: list[dict], key: str) -> float:
        return float(np.mean([r[key] is not None and r[key] < 0.05 for r in results]))

    return {
        "false_positives": share(null, "p"),
        "answer_level_false_positives": share(null, answer_level),
        "power_0.5": share(effect, "p"),
    }


def calibrate(
    runs: int,
    crowd_runs: int,
    seed: int = 0,
    paired_settings: list | None = None,
    seeds: list[int] | None = None,
    crowd_settings: list | None = None,
) -> dict:
    rng = np.random.default_rng(seed)
    paired = []
    for seed_sd, image_sd, residual_sd in PAIRED_SETTINGS if paired_settings is None else paired_settings:
        for n_seeds in PAIRED_SEEDS if seeds is None else seeds:
            rates = paired_rates(seed_sd, image_sd, residual_sd, n_seeds, runs, rng)
            paired.append(
                {
                    "seed_sd": seed_sd,
                    "image_sd": image_sd,
                    "residual_sd": residual_sd,
                    "seeds": n_seeds,
                    "images": IMAGES,
                    "runs": runs,
                    **rates,
                }
            )
    crowd = []
    for design in ("pairwise", "identify"):
        for workers, images, worker_sd, image_sd, answered in (
            CROWD_SETTINGS if crowd_settings is None else crowd_settings
        ):
            rates = crowd_rates(design, (workers, images, worker_sd, image_sd, answered), crowd_runs, rng)
            crowd.append(
                {
                    "design": design,
                    "workers": workers,
                    "images": images,
                    "worker_sd": worker_sd,
                    "image_sd": image_sd,
                    "answered": answered,
                    "runs": crowd_runs,
                    **rates,
                }
            )
    return {"paired": paired, "crowd": crowd, "seed": seed}


def table(result: dict) -> str:
    lines = [
        "Seeds × images (compare_paired; 64 images; δ in units of the residual SD; margin 0.5)",
        "| SD seed/image/resid | seeds | false pos. | coverage δ=0 | coverage δ=0.5 | power δ=0.5 | power δ=1 "
        "| false equiv. (δ=margin) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["paired"]:
        lines.append(
            f"| {r['seed_sd']:g}/{r['image_sd']:g}/{r['residual_sd']:g} | {r['seeds']} | {r['false_positives']:.3f} "
            f"| {r['coverage_null']:.3f} | {r['coverage_effect']:.3f} | {r['power_0.5']:.2f} | {r['power_1']:.2f} "
            f"| {r['false_equivalence']:.3f} |"
        )
    lines += [
        "",
        "Crowd answers (xbench human analyse; logit SDs; β = 0.5 for power)",
        "| design | workers × images | SD worker/image | answered | false pos. (p) | answer-level test | power β=0.5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["crowd"]:
        lines.append(
            f"| {r['design']} | {r['workers']} × {r['images']} | {r['worker_sd']:g}/{r['image_sd']:g} "
            f"| {r['answered']:.0%} | {r['false_positives']:.3f} | {r['answer_level_false_positives']:.3f} "
            f"| {r['power_0.5']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="simulated comparisons per setting and effect")
    parser.add_argument("--crowd-runs", type=int, default=None, help="simulated studies per setting (default --runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite-runs", type=int, default=2000, help="simulated whole suites per setting")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "calibration.json")
    parser.add_argument(
        "--suite-rows-only",
        action="store_true",
        help="recompute only the whole-suite rows and write them into --out, keeping its other rows",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.suite_rows_only:
        result = json.loads(args.out.read_text())
        result["suite"]["suites"] = suite_rows(args.suite_runs, args.seed)
        result["suite_rows_command"] = " ".join(["python benchmarks/calibration.py", *sys.argv[1:]])
        result["suite_rows_seconds"] = round(time.perf_counter() - started, 1)
        args.out.write_text(json.dumps(result, indent=1, default=lambda v: None if math.isnan(v) else v) + "\n")
        print(suite_table(result["suite"]))
        return
    result = calibrate(args.runs, args.crowd_runs or args.runs, args.seed)
    result["suite"] = suite_calibration(args.suite_runs, args.seed)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["command"] = " ".join(["python benchmarks/calibration.py", *sys.argv[1:]])
    args.out.write_text(json.dumps(result, indent=1, default=lambda v: None if math.isnan(v) else v) + "\n")
    print(table(result))
    print()
    print(suite_table(result["suite"]))
    print(f"\n{result['seconds']} s; written to {args.out}")


if __name__ == "__main__":
    main()
