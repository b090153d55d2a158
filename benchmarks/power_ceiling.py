"""How much power at 3 seeds any calibrated moderated t can have on `quick`-shaped suites: side by side, on the same
simulated suites (`suite_simulation.py`: variance components within 2× of SD 1/1/1, 64 images, comparisons sharing
seeds and images as a real suite's do), three ways to set each comparison's seed-variance prior:

- shipped: `xbench.analyse.decide` as `xbench stats` runs it (prior scale and d0 estimated from the suite, the
  scale's own error carried into the df, `_moderated_df`);
- oracle prior: the prior the simulation draws from, known exactly (its scale and d0 from the log-uniform spread of
  the variance factors, no estimation error: df = d0 + 2), what no procedure that estimates it can beat;
- limma's df: the estimated prior with limma's df (d0 + 2, the scale's error ignored), for what it costs in errors.

    python benchmarks/power_ceiling.py              # 600 suites with δ = 1, 1,200 with no effect (about 5 minutes)
    python benchmarks/power_ceiling.py --suites 100

Per variant: power at δ = one seed SD (p < 0.05, single comparisons), false positives at 0.05 under no effect, and
the far tail p < α/76 as a multiple of α/76 (the suite's correction uses it; it must stay within 1.3×).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import xbench.analyse.decide as decide_module  # noqa: E402
from suite_simulation import IMAGES, simulate_suite  # noqa: E402

SEEDS = 3
SPREAD = 2.0  # each variance component's factor within 2× of 1 either way (as the suite-level rows)


def true_prior() -> decide_module.Prior:
    """The scaled inverse-χ² prior closest to the simulation's seed mean squares: log σ² uniform on ±ln(spread)
    (variance 4 ln(spread)² / 12) gives d0 by trigamma, its scale by the mean of log σ² (0) corrected as limma does;
    the seed mean square adds the residual's share, σ²_e / images, with the residual factor's mean."""
    from scipy.special import digamma

    spread_of_logs = (2 * math.log(SPREAD)) ** 2 / 12
    d0 = 2 * decide_module._trigamma_inverse(spread_of_logs)
    scale = math.exp(float(digamma(d0 / 2)) - math.log(d0 / 2))
    residual_mean = (SPREAD - 1 / SPREAD) / (2 * math.log(SPREAD))  # mean of a log-uniform variance factor
    return decide_module.Prior(scale + residual_mean / IMAGES, d0, math.inf)


@contextmanager
def variant(name: str) -> Iterator[None]:
    """Patch `decide`'s prior for one variant, restored afterwards."""
    fit, moderated = decide_module.fit_priors, decide_module._moderated_df
    if name == "oracle prior":
        prior = true_prior()

        def oracle(groups: dict, seed_means: object = None, trends: object = None) -> dict:
            fitted = fit(groups, seed_means, trends)
            return {group: [prior] * len(groups[group]) for group in fitted}

        decide_module.fit_priors = oracle  # type: ignore[assignment]
    if name in ("oracle prior", "limma's df"):
        decide_module._moderated_df = lambda own, p: own + p.d0 if p.d0 > 0 else own  # type: ignore[assignment]
    try:
        yield
    finally:
        decide_module.fit_priors, decide_module._moderated_df = fit, moderated


def metric_rows(questions: list[dict], name: str) -> list[dict]:
    with variant(name):
        return [r for r in decide_module.decide(questions) if r["name"] != "accuracy"]


def measure(suites: int, names: tuple[str, ...], say: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(20261207)
    powered: dict[str, list[bool]] = {n: [] for n in names}
    p_null: dict[str, list[float]] = {n: [] for n in names}
    for index in range(suites):
        questions = simulate_suite(rng, SEEDS, delta=1.0, spread=SPREAD).questions(SEEDS)
        for name in names:
            powered[name] += [r["p"] < 0.05 for r in metric_rows(questions, name)]
        if index % 100 == 99:
            say(f"  δ = 1: {index + 1} of {suites} suites")
    for index in range(2 * suites):
        questions = simulate_suite(rng, SEEDS, spread=SPREAD).questions(SEEDS)
        for name in names:
            p_null[name] += [r["p"] for r in metric_rows(questions, name)]
        if index % 200 == 199:
            say(f"  no effect: {index + 1} of {2 * suites} suites")
    out = {}
    for name in names:
        p = np.asarray(p_null[name])
        out[name] = {
            "power_1": float(np.mean(powered[name])),
            "false_positives": float((p < 0.05).mean()),
            "tail_76": float((p < 0.05 / 76).mean() / (0.05 / 76)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", type=int, default=600, help="suites with δ = 1 (twice as many with no effect)")
    args = parser.parse_args()
    names = ("shipped", "oracle prior", "limma's df")
    started = time.perf_counter()
    results = measure(args.suites, names)
    prior = true_prior()
    print(f"\n{SEEDS} seeds, spread {SPREAD:g}, {args.suites} suites with δ = 1 and {2 * args.suites} with none ")
    print(f"(oracle prior: scale {prior.s0_square:.3f}, d0 {prior.d0:.1f}); {time.perf_counter() - started:.0f} s\n")
    print("| prior | power δ=1 | false positives | p < α/76 (× α/76) |")
    print("|---|---|---|---|")
    for name in names:
        r = results[name]
        print(f"| {name} | {r['power_1']:.3f} | {r['false_positives']:.3f} | {r['tail_76']:.2f} |")


if __name__ == "__main__":
    main()
