"""The suite-level rows of `calibration.py`: what a practitioner reading a whole suite's verdicts can rely on.

Each row simulates whole `quick`-shaped suites (`suite_simulation.py`: 72 metric comparisons and 4 of accuracy that
share seeds and images) through `xbench.analyse.decide`, the function `xbench stats`, the page and the gate use:

- suite: with no effect anywhere, the share of suites with some better/worse (≤ 5 %: every verdict is then false),
  the share of single comparisons with p < 0.05, and the rate of p < α/m against α/m for m = 76 and 200 (the far
  tail that the correction uses; within 1.3×); with every true difference exactly at its margin (on the worse
  side), the share of suites with some "equivalent" and with some safe CR (both ≤ 5 %); at δ = one seed SD,
  single-comparison power at 0.05 and coverage (≥ 0.94); with half the metric comparisons one seed SD worse, the
  false share of the better/worse verdicts (the false discovery rate weighted Benjamini-Hochberg keeps ≤ 5 %), the
  share of suites with any false one (not promised), and the share of the true changes decided.
- 0/1 outcomes: a true accuracy drop of twice the 0.01 margin on the same images in every seed: the share called
  equivalent (≤ 5 %), on 64 and on 2,048 images; and with no change at all, on 2,048 images, how often equivalence is
  shown (the count model still lets a large eval set decide).
- margins: the default margin (0.2 × a lower bound of the CR-1 SD across images) when the true difference equals
  0.2 × the population SD: the share called equivalent (≤ 5 %), for normal, t3 and skewed scores.
- plan: a 3-seed pilot of a suite whose true differences are drawn (half none, half N(0, 0.8²)); `--plan`'s promise
  per undecided comparison (its seeds for 80 % power); the same suite run with the promised seeds: the share of the
  promised comparisons that are then decided (≥ 75 %).
- sequential: `--until-decided` from 3 seeds, 2 more a round up to 9, Pocock-type α spending: the share of suites
  with any false safe CR when every difference sits at its margin (≤ 5 %), and with no effect anywhere (accuracy on
  2,048 images) the share of ladders decided and the seeds used.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from suite_simulation import ACCURACY_MARGIN, CRS, EXPLAINERS, MARGIN, METRICS, simulate_suite
from xbench.analyse.decide import ALPHA, decide, safe_sequences, spent_levels
from xbench.analyse.stats import default_margin, planned_seeds

SUITE_SEEDS = (3, 5, 10)
LOOKS = (3, 5, 7, 9)
PLAN_CAP = 30  # promised seed counts above this are not followed (too slow to simulate); counted apart


def _safe(rows: list[dict], level: float) -> list:
    """The suite's safe-compression ladders from `decide`'s rows: per explainer, its metrics and accuracy per CR."""
    accuracy = {row["cr"]: row for row in rows if row["name"] == "accuracy"}
    sequences: dict[str, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["name"] != "accuracy":
            sequences[row["name"].split("|")[1]][row["cr"]].append(
                (row["name"], row["p_noninferior"], row["p_inferior"])
            )
    for ladder in sequences.values():
        for rate in ladder:
            a = accuracy[rate]
            ladder[rate].append(("accuracy", a["p_noninferior"], a["p_inferior"]))
    return safe_sequences(sequences, level)


def suite_rates(seeds: int, runs: int, rng: np.random.Generator, spread: float = 2.0) -> dict[str, float]:
    null_any, p_values, covered = 0, [], []
    for _ in range(runs):
        rows = decide(simulate_suite(rng, seeds, spread=spread).questions(seeds))
        null_any += any(r["verdict"] in ("better", "worse") for r in rows)
        p_values += [r["p"] for r in rows if r["name"] != "accuracy"]
        covered += [r["ci_low"] <= 0 <= r["ci_high"] for r in rows if r["name"] != "accuracy"]
    p = np.asarray(p_values)
    at_margin = max(runs // 2, 1)
    equivalent_any = safe_any = 0
    for _ in range(at_margin):
        suite = simulate_suite(rng, seeds, delta=-MARGIN, accuracy_drop=ACCURACY_MARGIN, spread=spread)
        rows = decide(suite.questions(seeds))
        equivalent_any += any(r["verdict"] == "equivalent" for r in rows)
        safe_any += any(s.safe_rate is not None for s in _safe(rows, ALPHA))
    powered, power_covered = [], []
    for _ in range(max(runs // 4, 1)):
        rows = decide(simulate_suite(rng, seeds, delta=1.0, spread=spread).questions(seeds))
        powered += [r["p"] < 0.05 for r in rows if r["name"] != "accuracy"]
        power_covered += [r["ci_low"] <= 1.0 <= r["ci_high"] for r in rows if r["name"] != "accuracy"]
    # half of the metric comparisons a seed SD worse, the rest unchanged: the share of false verdicts among the
    # better/worse verdicts made (the false discovery rate the procedure keeps), suites with any false one, and the
    # share of the true changes decided
    false_shares, partial_any, found = [], 0, []
    partial_runs = max(runs // 4, 1)
    for _ in range(partial_runs):
        keys = [(m, e, rate) for m in range(METRICS) for e in range(EXPLAINERS) for rate in CRS]
        changed = {keys[i] for i in rng.choice(len(keys), len(keys) // 2, replace=False)}
        suite = simulate_suite(rng, seeds, delta={k: -1.0 for k in changed}, spread=spread)
        rows = decide(suite.questions(seeds))
        made = [r for r in rows if r["verdict"] in ("better", "worse")]
        false = [r for r in made if _truth(r, suite) == 0.0 or r["verdict"] == "better"]
        false_shares.append(len(false) / max(len(made), 1))
        partial_any += bool(false)
        found += [r["verdict"] == "worse" for r in rows if r["name"] != "accuracy" and _truth(r, suite) != 0.0]
    return {
        "suite_false_difference": null_any / runs,
        "false_positives": float((p < 0.05).mean()),
        "tail_76": float((p < ALPHA / 76).mean() / (ALPHA / 76)),
        "tail_200": float((p < ALPHA / 200).mean() / (ALPHA / 200)),
        "coverage_null": float(np.mean(covered)),
        "suite_false_equivalence": equivalent_any / at_margin,
        "suite_false_safe": safe_any / at_margin,
        "power_1": float(np.mean(powered)),
        "coverage_effect": float(np.mean(power_covered)),
        "fdr_half_changed": float(np.mean(false_shares)),
        "any_false_half_changed": partial_any / partial_runs,
        "decided_half_changed": float(np.mean(found)),
    }


def _truth(row: dict, suite: object) -> float:
    """A row's true difference in a simulated suite (accuracy: minus its drop)."""
    if row["name"] == "accuracy":
        return -suite.accuracy_drops[row["cr"]]  # type: ignore[attr-defined]
    metric, explainer = row["name"].split("|")
    return suite.deltas[(int(metric[1:]), int(explainer[1:]), row["cr"])]  # type: ignore[attr-defined]


def accuracy_rows(runs: int, rng: np.random.Generator) -> list[dict]:
    """0/1 outcomes: a drop twice the margin on the same images in every seed, and no change at all."""
    rows = []
    for images in (64, 2048):
        for drop in (2 * ACCURACY_MARGIN, 0.0):
            called = 0
            for _ in range(runs):
                correct = (rng.random(images) < 0.9).astype(float)
                reference = np.stack([correct] * 3)
                hit = rng.random(images) < drop / 0.9
                variant = np.where(hit[None, :], 0.0, reference)
                question = {
                    "name": "accuracy",
                    "metric": "accuracy",
                    "binary": True,
                    "higher_is_better": True,
                    "margin": ACCURACY_MARGIN,
                    "reference": dict(enumerate(reference)),
                    "variants": {2.0: dict(enumerate(variant))},
                }
                called += decide([question])[0]["p_equivalent"] < ALPHA
            rows.append({"images": images, "true_drop": drop, "runs": runs, "called_equivalent": called / runs})
    return rows


def _scores(distribution: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Per-image scores with SD 1."""
    if distribution == "normal":
        return rng.normal(0, 1, size)
    if distribution == "t3":
        return rng.standard_t(3, size) / math.sqrt(3.0)
    return (rng.lognormal(0, 1, size) - math.exp(0.5)) / math.sqrt((math.e - 1) * math.e)


def margin_rows(runs: int, rng: np.random.Generator) -> list[dict]:
    """The default margin's false equivalence when the true difference equals the margin the rule aims at."""
    rows = []
    for distribution in ("normal", "t3", "skewed"):
        for seeds in (3, 10):
            called = 0
            for _ in range(runs):
                images = _scores(distribution, rng, 64)
                reference = images[None, :] + 0.1 * rng.normal(0, 1, (seeds, 64))
                population_sd = math.sqrt(1 + 0.01)
                shift = 0.2 * population_sd  # the margin the rule aims at
                variant = reference + shift + 0.05 * rng.normal(0, 1, (seeds, 1)) + 0.1 * rng.normal(0, 1, (seeds, 64))
                reference_by_seed = dict(enumerate(reference))
                question = {
                    "name": "m",
                    "higher_is_better": True,
                    "margin": default_margin(reference_by_seed),
                    "reference": reference_by_seed,
                    "variants": {2.0: dict(enumerate(variant))},
                }
                called += decide([question])[0]["p_equivalent"] < ALPHA
            rows.append(
                {"distribution": distribution, "seeds": seeds, "runs": runs, "false_equivalence": called / runs}
            )
    return rows


def plan_rows(runs: int, rng: np.random.Generator) -> dict[str, float]:
    """Follow `--plan` from a 3-seed pilot: how many of the comparisons it promises are then decided."""
    promised = delivered = beyond_cap = 0
    if runs == 0:
        return {"runs": 0, "promised": 0, "delivered": math.nan, "beyond_cap": 0}
    for _ in range(runs):
        deltas = {
            (m, e, rate): (float(rng.normal(0, 0.8)) if rng.random() < 0.5 else 0.0)
            for m in range(6)
            for e in range(EXPLAINERS)
            for rate in CRS
        }
        suite = simulate_suite(rng, PLAN_CAP, delta=deltas)
        rows = decide(suite.questions(3))
        plans = {}
        for row in rows:
            if row["verdict"] == "undecided":
                needed = planned_seeds(row)
                if needed is not None and needed <= PLAN_CAP:
                    plans[(row["name"], row["cr"])] = max(needed, 3)
                elif needed is not None:
                    beyond_cap += 1
        for seeds in sorted(set(plans.values())):
            followed = {(r["name"], r["cr"]): r for r in decide(suite.questions(seeds))}
            for key, needed in plans.items():
                if needed == seeds:
                    promised += 1
                    delivered += followed[key]["verdict"] != "undecided"
    return {
        "runs": runs,
        "promised": promised,
        "delivered": delivered / promised if promised else math.nan,
        "beyond_cap": beyond_cap,
    }


def sequential_rows(runs: int, rng: np.random.Generator) -> dict[str, float]:
    """`--until-decided` from 3 seeds, 2 a round, at most 9, each look at its spent level."""
    levels = spent_levels(LOOKS, LOOKS[-1])
    false_safe = 0
    for _ in range(runs):
        suite = simulate_suite(rng, LOOKS[-1], delta=-MARGIN, accuracy_drop=ACCURACY_MARGIN)
        claimed = False
        for seeds, level in zip(LOOKS, levels, strict=True):
            walked = _safe(decide(suite.questions(seeds)), level)
            claimed |= any(s.safe_rate is not None for s in walked)
            if all(s.decided for s in walked):
                break
        false_safe += claimed
    decided_share, seeds_used = [], []
    for _ in range(max(runs // 4, 1)):
        suite = simulate_suite(rng, LOOKS[-1], accuracy_images=2048)
        decided: dict[str, bool] = {}
        used = LOOKS[-1]
        for seeds, level in zip(LOOKS, levels, strict=True):
            for s in _safe(decide(suite.questions(seeds)), level):
                decided[s.key] = decided.get(s.key, False) or s.decided
            if all(decided.values()):
                used = seeds
                break
        decided_share.append(float(np.mean(list(decided.values()))))
        seeds_used.append(used)
    return {
        "runs": runs,
        "looks": list(LOOKS),
        "levels": [round(level, 5) for level in levels],
        "suite_false_safe": false_safe / runs,
        "null_ladders_decided": float(np.mean(decided_share)),
        "null_mean_seeds": float(np.mean(seeds_used)),
    }


def suite_rows(runs: int, seed: int = 0, seeds: tuple[int, ...] = SUITE_SEEDS) -> list[dict]:
    """The whole-suite rows alone (`calibration.py --suite-rows-only` refreshes just these)."""
    rng = np.random.default_rng([seed, 42])
    suites = [{"seeds": n, "spread": 2.0, "runs": runs, **suite_rates(n, runs, rng)} for n in seeds]
    milder = {"seeds": 3, "spread": math.sqrt(2), "runs": runs, **suite_rates(3, runs, rng, spread=math.sqrt(2))}
    return [*suites, milder]


def suite_calibration(
    runs: int, seed: int = 0, seeds: tuple[int, ...] = SUITE_SEEDS, plan_runs: int | None = None
) -> dict:
    rng = np.random.default_rng([seed, 41])
    suites = [{"seeds": n, "spread": 2.0, "runs": runs, **suite_rates(n, runs, rng)} for n in seeds]
    milder = {"seeds": 3, "spread": math.sqrt(2), "runs": runs, **suite_rates(3, runs, rng, spread=math.sqrt(2))}
    return {
        "suites": [*suites, milder],
        "accuracy": accuracy_rows(max(runs // 4, 1), rng),
        "margins": margin_rows(max(runs // 4, 1), rng),
        "plan": plan_rows(max(runs // 20, 1) if plan_runs is None else plan_runs, rng),
        "sequential": sequential_rows(max(runs // 4, 1), rng),
    }


def suite_table(result: dict) -> str:
    lines = [
        "Whole suites (decide; quick-shaped: 72 metric comparisons + 4 of accuracy sharing seeds and images; margin 0.5"
        " in SD units; each variance component within the spread× of 1 either way)",
        "| seeds | spread | suites with a false better/worse | single false pos. | p < α/76 (× α/76) | p < α/200 "
        "(× α/200) | coverage δ=0 | suites with a false equivalent | suites with a false safe CR | power δ=1 "
        "| coverage δ=1 | half changed by δ=−1: false share of verdicts (FDR) | suites with a false one "
        "| changes decided |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["suites"]:
        partial = (
            f"| {r['fdr_half_changed']:.3f} | {r['any_false_half_changed']:.3f} | {r['decided_half_changed']:.2f} |"
            if "fdr_half_changed" in r
            else "| | | |"
        )
        lines.append(
            f"| {r['seeds']} | {r['spread']:.2g} | {r['suite_false_difference']:.3f} | {r['false_positives']:.3f} "
            f"| {r['tail_76']:.2f} | {r['tail_200']:.2f} | {r['coverage_null']:.3f} "
            f"| {r['suite_false_equivalence']:.3f} | {r['suite_false_safe']:.3f} | {r['power_1']:.2f} "
            f"| {r['coverage_effect']:.3f} " + partial
        )
    lines += ["", "0/1 outcomes (accuracy, 3 seeds, margin 0.01; drop on the same images in every seed)"]
    lines += ["| images | true drop | called equivalent |", "|---|---|---|"]
    for r in result["accuracy"]:
        lines.append(f"| {r['images']} | {r['true_drop']:g} | {r['called_equivalent']:.3f} |")
    lines += ["", "Default margins (true difference = the margin the rule aims at: 0.2 × the population SD)"]
    lines += ["| scores | seeds | called equivalent |", "|---|---|---|"]
    for r in result["margins"]:
        lines.append(f"| {r['distribution']} | {r['seeds']} | {r['false_equivalence']:.3f} |")
    plan = result["plan"]
    sequential = result["sequential"]
    lines += [
        "",
        f"Plan from a 3-seed pilot ({plan['runs']} suites): {plan['promised']} comparisons promised (80 % power) "
        f"within {PLAN_CAP} seeds, {plan['delivered']:.2f} of them decided when the plan is followed "
        f"({plan['beyond_cap']} promised more seeds and were not followed).",
        f"Until decided ({sequential['runs']} suites; looks at {sequential['looks']} seeds, levels "
        f"{sequential['levels']}): suites with a false safe CR when every difference sits at its margin "
        f"{sequential['suite_false_safe']:.3f}; with no effect anywhere, {sequential['null_ladders_decided']:.2f} of "
        f"the ladders decided, {sequential['null_mean_seeds']:.1f} seeds used on average.",
    ]
    return "\n".join(lines)
