"""The front page's ranking: ordered by the verdicts, ranks shared where the evidence does not order, the answer
sentence generated from the safe-compression ladders (`present.rankings`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from tests.test_leaderboard import study
from xbench.present.leaderboard import build
from xbench.present.loading import suite_filename
from xbench.present.rankings import Ranked, _rank, answer


def _row(explainer: str, safe: float, change: float, half_width: float, blockers: tuple[str, ...] = ()) -> Ranked:
    return Ranked(
        suite="s",
        model="m",
        pruning="magnitude (conv, layerwise, oneshot)",
        explainer=explainer,
        safe_rate=safe,
        safe_text=f"CR {safe:g}" if safe > 1 else "none",
        blocked_by="",
        blockers=blockers,
        smallest_rate=2.0,
        change=change,
        change_low=change - half_width,
        change_high=change + half_width,
    )


def test_the_safe_cr_ranks_first_and_overlapping_intervals_share_a_rank() -> None:
    rows = [
        _row("saliency", 4, 0.3, 0.25),
        _row("gradcam", 2, 2.0, 0.5),  # a better change cannot outrank a larger safe CR
        _row("integrated_gradients", 4, 0.5, 0.3),
        _row("occlusion", 4, -1.0, 0.4),  # its interval clears the leader's: its own rank
    ]
    ranked = {r.explainer: (r.rank, r.shared) for r in _rank(rows)}
    assert ranked == {
        "integrated_gradients": (1, True),
        "saliency": (1, True),
        "occlusion": (3, False),
        "gradcam": (4, False),
    }


def test_the_answer_names_each_explainer_s_safe_cr_or_what_blocks_the_first() -> None:
    rows = _rank([_row("integrated_gradients", 4, 0.5, 0.3), _row("gradcam", 2, 0.1, 0.3), _row("saliency", 1, 0, 1)])
    sentence = answer("quick", rows)
    assert sentence.startswith("On quick, m pruned by magnitude: accuracy and every metric stay within their margins")
    assert "Integrated Gradients to CR 4, Grad-CAM to CR 2; for Saliency not even at CR 2." in sentence
    blocked = answer(
        "quick", _rank([_row("saliency", 1, 0, 1, ("accuracy",)), _row("gradcam", 1, 0, 1, ("sparseness",))])
    )
    assert "no explainer keeps accuracy and every metric within their margins even at CR 2" in blocked
    assert "(accuracy, sparseness not shown within them)" in blocked


def test_the_front_page_opens_with_the_answer_and_the_ranking_each_number_linked_to_its_evidence(
    tmp_path: Path,
) -> None:
    build([study()], tmp_path, max_accuracy_drop=0.05)
    index = (tmp_path / "index.html").read_text()
    page = (tmp_path / suite_filename("demo")).read_text()
    first = re.search(r'<p class="answer"><strong>([^<]+)</strong> <a href="([^"]+)">evidence</a>', index)
    assert first and first.group(1).startswith("On demo, resnet18 pruned by")
    assert "even at CR 2" in first.group(1) and "accuracy" in first.group(1)  # the suite page's ladder fails at CR 2
    assert (
        index.index('id="answer"')
        < index.index('id="ranking"')
        < index.index('id="models"')
        < index.index('id="suites"')
    )
    ranking = index[index.index('id="ranking"') : index.index('id="models"')]
    rows = re.findall(r"<tr><td data-value=", ranking)
    assert len(rows) == len({r["explainer"] for r in study().records})
    for href in set(re.findall(r'href="([^"]+)"', ranking)) | {first.group(2)}:
        target, _, anchor = href.partition("#")
        assert target == suite_filename("demo") and (not anchor or f'id="{anchor}"' in page), href
    assert '<label for="ranking-filter">' in index and 'id="ranking-filter"' in index  # a labelled control
    assert ranking.count('<th scope="col">') == 10
    figures = index[index.index('id="ranking"') : index.index('id="suites"')]
    numbers = re.findall(r'<td data-value="[^"]*">(?!\d+=?</td>)(.*?)</td>', figures)  # every cell but the ranks
    assert numbers and all(n.startswith('<a href="suite-demo.html#') for n in numbers), numbers


def test_pruning_methods_are_ranked_at_each_cr_they_share_and_models_by_safe_cr() -> None:
    import numpy as np

    from tests import factories
    from xbench.analyse.stats import suite_stats
    from xbench.present.rankings import method_view, model_view

    rng = np.random.default_rng(4)
    truth = rng.normal(0, 1, 48)
    results = []
    for seed in (0, 1, 2):
        for method, shift in (("magnitude", -1.0), ("random", 0.0)):
            for rate in (1.0, 4.0):
                scores = truth + rng.normal(0, 0.3, 48) + (shift if rate > 1 else 0.0)
                results.append(factories.cell_result("net", rate, "e", seed, scores={"m": scores}, method=method))
    records, per_image = factories.records_and_scores(results)
    stats = suite_stats(records, per_image)
    methods = method_view(stats)
    assert [(m["rate"], m["method"], m["rank"]) for m in methods] == [("4", "random", "1"), ("4", "magnitude", "2")]
    assert methods[1]["change"].startswith("−")  # the planted drop, in margins
    (model,) = model_view(stats, records)
    assert model["model"] == "net" and model["safe"] in ("none", "CR 4")


def test_the_area_kept_is_the_curve_s_mean_height_over_log2_cr_from_zero_at_cr_1() -> None:
    from xbench.present.rankings import curve_area

    # log2 CR 0, 1, 2, 5 with heights 0, -1, -1, -2: trapezoids -0.5, -1, -4.5 over a width of 5
    assert math.isclose(curve_area({2.0: -1.0, 4.0: -1.0, 32.0: -2.0}), -1.2)
    assert math.isclose(curve_area({4.0: 0.5}), 0.25)  # from 0 at CR 1 to 0.5 at CR 4: half of it on average
    assert math.isnan(curve_area({1.0: 3.0}))  # no CR beyond 1: no curve
