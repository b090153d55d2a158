"""`xbench human analyse` on hand-made answer files with planted counts: counts, chi-squared and binomial p-values
(against scipy on the same counts), Krippendorff's alpha (against a case computed by hand), attention checks, MTurk's
own column format and the study page's CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from scipy import stats

from tests.conftest import xbench_here
from xbench.analyse.crowd import Answer as HumanAnswer
from xbench.analyse.crowd import Manifest, analyse, krippendorff_alpha
from xbench.core.errors import XbenchInputError
from xbench.human.answers import read_answers, read_manifest

PAIRWISE = ["stimulus", "image_id", "class", "left", "right", "view", "expected"]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _pairwise_manifest(tmp_path: Path) -> Path:
    """Four real stimuli of the pair CR 1 / CR 4 (CR 1 on the left in s1, s3; on the right in s2, s4), a CR 1 / CR 16
    stimulus, and two attention checks (the explanation is on the left, then the right)."""
    return _write(
        tmp_path / "manifest.csv",
        PAIRWISE,
        [
            ["s1.png", 0, "circle", "CR 1", "CR 4", "heatmap", ""],
            ["s2.png", 1, "square", "CR 4", "CR 1", "heatmap", ""],
            ["s3.png", 2, "star", "CR 1", "CR 4", "heatmap", ""],
            ["s4.png", 3, "ring", "CR 4", "CR 1", "heatmap", ""],
            ["s5.png", 0, "circle", "CR 16", "CR 1", "heatmap", ""],
            ["c1.png", 0, "circle", "CR 1", "check", "heatmap", "left"],
            ["c2.png", 1, "square", "check", "CR 4", "heatmap", "right"],
        ],
    )


def _mturk_rows(answers: list[tuple[str, str, str]]) -> tuple[list[str], list[list[object]]]:
    """MTurk batch results (one stimulus per HIT): answers are (worker, stimulus, left|right|equal)."""
    header = [
        "HITId",
        "AssignmentId",
        "WorkerId",
        "WorkTimeInSeconds",
        "Input.stimulus",
        "Answer.equal.on",
        "Answer.left.on",
        "Answer.right.on",
    ]
    rows = []
    for number, (worker, stimulus, answer) in enumerate(answers):
        url = f"https://example.org/study/stimuli/{stimulus}"  # MTurk inputs are URLs; the file name is matched
        flags = [str(answer == side).lower() for side in ("equal", "left", "right")]
        rows.append([f"HIT{stimulus}", f"A{number}", worker, 12, url, *flags])
    return header, rows


def _planted(a: int, b: int, equal: int) -> list[tuple[str, str, str]]:
    """`a` answers preferring CR 1, `b` preferring CR 4 and `equal` "equal", spread over s1..s4, each worker answering
    each of the four stimuli once (worker k answers the k-th four), with CR 1's side following each stimulus' manifest
    row."""
    stimuli = ["s1.png", "s2.png", "s3.png", "s4.png"]
    cr1_side = {"s1.png": "left", "s2.png": "right", "s3.png": "left", "s4.png": "right"}
    other = {"left": "right", "right": "left"}
    answers = []
    for index, kind in enumerate(["a"] * a + ["b"] * b + ["equal"] * equal):
        stimulus = stimuli[index % 4]
        side = cr1_side[stimulus] if kind == "a" else other[cr1_side[stimulus]] if kind == "b" else "equal"
        answers.append((f"W{index // 4}", stimulus, side))
    return answers


def test_planted_pairwise_counts_and_p_values_match_scipy(tmp_path: Path) -> None:
    manifest = read_manifest(_pairwise_manifest(tmp_path))
    header, rows = _mturk_rows([*_planted(30, 12, 8), ("W0", "s5.png", "left"), ("W1", "s5.png", "right")])
    answers, unusable = read_answers(_write(tmp_path / "results.csv", header, rows), manifest)
    report = analyse(answers, manifest, unusable=unusable)
    assert report["design"] == "pairwise" and report["answers"] == 52 and report["workers"] == 13
    first, second = report["pairs"]
    assert (first["a"], first["b"]) == ("CR 1", "CR 4") and (second["a"], second["b"]) == ("CR 1", "CR 16")
    assert (first["a_count"], first["b_count"], first["equal_count"]) == (30, 12, 8)
    assert first["equal_rate"] == pytest.approx(8 / 50)
    assert first["chi2_p"] == pytest.approx(stats.chisquare([30, 12]).pvalue, rel=1e-12)
    assert first["binom_p"] == pytest.approx(stats.binomtest(30, 42, 0.5).pvalue, rel=1e-12)
    assert first["chi2_p"] < 0.01  # 30 against 12 is a clear preference
    assert (second["a_count"], second["b_count"]) == (1, 1) and second["binom_p"] == pytest.approx(1.0)


def test_alpha_matches_a_hand_computed_case() -> None:
    """3 workers, 4 stimuli: s1 A A A, s2 A A B, s3 B B B, s4 A B (third missing). Coincidences: o_AA = 3 + 1 = 4,
    o_AB = o_BA = 1 + 1 = 2, o_BB = 3; n_A = 6, n_B = 5, n = 11. D_o = 4/11, D_e = 2 * 6 * 5 / (11 * 10) = 6/11,
    alpha = 1 - D_o / D_e = 1/3."""
    table = {"s1": "AAA", "s2": "AAB", "s3": "BBB", "s4": "AB"}
    answers = [
        HumanAnswer(f"W{worker}", stimulus, value, None)
        for stimulus, values in table.items()
        for worker, value in enumerate(values)
    ]
    assert krippendorff_alpha(answers, ["s1", "s2", "s3", "s4"]) == pytest.approx(1 / 3, abs=1e-12)
    # everyone agreeing on one answer leaves alpha undefined, not 1 or 0
    same = [HumanAnswer(f"W{w}", s, "A", None) for w in range(3) for s in ("s1", "s2")]
    assert krippendorff_alpha(same, ["s1", "s2"]) is None


def test_attention_checks_score_workers_and_can_exclude_them(tmp_path: Path) -> None:
    manifest = read_manifest(_pairwise_manifest(tmp_path))
    answers = [
        *_planted(12, 4, 0),
        ("W0", "c1.png", "left"),
        ("W0", "c2.png", "right"),  # passes both
        ("W1", "c1.png", "right"),
        ("W1", "c2.png", "left"),  # fails both
    ]
    header, rows = _mturk_rows(answers)
    parsed, _ = read_answers(_write(tmp_path / "results.csv", header, rows), manifest)
    kept = analyse(parsed, manifest)
    assert kept["per_worker"]["W0"]["check_accuracy"] == 1.0 and kept["per_worker"]["W1"]["check_accuracy"] == 0.0
    assert kept["per_worker"]["W2"]["check_accuracy"] is None  # saw no check
    assert kept["attention_check_answers"] == 4 and kept["answers"] == 16
    strict = analyse(parsed, manifest, min_check_accuracy=0.5)
    assert strict["excluded_workers"] == ["W1"]
    w1 = sum(1 for worker, stimulus, _ in answers if worker == "W1" and stimulus.startswith("s"))
    assert strict["answers"] == 16 - w1 and strict["workers"] == 3


def test_several_stimuli_per_hit_and_custom_columns(tmp_path: Path) -> None:
    """--per-task 2: inputs stimulus_1, stimulus_2 and answers suffixed _1, _2; --answer maps other column names."""
    manifest = read_manifest(_pairwise_manifest(tmp_path))
    header = [
        "HITId",
        "WorkerId",
        "Input.stimulus_1",
        "Input.stimulus_2",
        "Answer.a_1",
        "Answer.b_1",
        "Answer.same_1",
        "Answer.a_2",
        "Answer.b_2",
        "Answer.same_2",
    ]
    rows = [
        ["H1", "W0", "s1.png", "s2.png", "true", "false", "false", "false", "true", "false"],
        ["H1", "W1", "s1.png", "s2.png", "true", "false", "false", "false", "false", "true"],
    ]
    columns = {"left": "Answer.a{k}", "right": "Answer.b{k}", "equal": "Answer.same{k}"}
    answers, _ = read_answers(_write(tmp_path / "results.csv", header, rows), manifest, columns)
    assert sorted((a.worker, a.stimulus, a.answer) for a in answers) == [
        ("W0", "s1.png", "left"),
        ("W0", "s2.png", "right"),
        ("W1", "s1.png", "left"),
        ("W1", "s2.png", "equal"),
    ]
    pair = analyse(answers, manifest)["pairs"][0]
    assert (pair["a_count"], pair["b_count"], pair["equal_count"]) == (3, 0, 1)  # s2's right side is CR 1
    with pytest.raises(XbenchInputError) as error:
        read_answers(tmp_path / "results.csv", manifest)  # the default Answer.left_1.on is not there
    assert error.value.field == "--answer" and "Answer.left_1.on" in str(error.value)


def test_identify_accuracy_per_variant_chi2_and_one_hot_columns(tmp_path: Path) -> None:
    columns = ["stimulus", "image_id", "class", "variant", "view", "expected"]
    manifest_path = _write(
        tmp_path / "manifest.csv",
        columns,
        [
            ["i1.png", 0, "circle", "CR 1", "occlusion", ""],
            ["i2.png", 0, "circle", "CR 32", "occlusion", ""],
            ["k1.png", 0, "circle", "check", "original", "circle"],
        ],
    )
    classes = ["circle", "square"]
    (tmp_path / "study.json").write_text(json.dumps({"classes": classes}))  # the export names the choices offered
    manifest = read_manifest(manifest_path)
    header = (
        ["HITId", "WorkerId", "Input.stimulus"] + [f"Answer.class_{c}.on" for c in classes] + ["Answer.dont_know.on"]
    )

    def row(worker: str, stimulus: str, answer: str) -> list[object]:
        return ["H", worker, stimulus, *[str(answer == c).lower() for c in classes], str(answer == "dont_know").lower()]

    planted = {
        "i1.png": ["circle"] * 18 + ["square"] * 2,
        "i2.png": ["circle"] * 8 + ["square"] * 7 + ["dont_know"] * 5,
    }
    rows = [row(f"W{n}", s, answer) for s, answers in planted.items() for n, answer in enumerate(answers)]
    answers, _ = read_answers(_write(tmp_path / "results.csv", header, rows), manifest)
    report = analyse(answers, manifest)
    by_variant = {v["variant"]: v for v in report["variants"]}
    assert by_variant["CR 1"]["accuracy"] == pytest.approx(0.9) and by_variant["CR 32"]["accuracy"] == pytest.approx(
        0.4
    )
    assert by_variant["CR 32"]["dont_know"] == 5
    expected = stats.chi2_contingency([[18, 2], [8, 12]]).pvalue
    assert report["chi2_p"] == pytest.approx(expected, rel=1e-12)
    # one label column instead (--answer label=COL)
    label_rows = [["H", f"W{n}", s, answer] for s, answers in planted.items() for n, answer in enumerate(answers)]
    label_file = _write(tmp_path / "labels.csv", ["HITId", "WorkerId", "Input.stimulus", "Answer.label"], label_rows)
    again, _ = read_answers(label_file, manifest, {"label": "Answer.label"})
    assert analyse(again, manifest)["variants"] == report["variants"]


def test_cli_reads_the_study_pages_csv_and_prints_the_documented_json(tmp_path: Path) -> None:
    manifest = _pairwise_manifest(tmp_path)
    rows = [[worker, stimulus, answer, 1500, "2026-12-02T10:00:00Z"] for worker, stimulus, answer in _planted(6, 2, 2)]
    results = _write(tmp_path / "answers.csv", ["worker", "stimulus", "answer", "milliseconds", "answered_at"], rows)
    output = xbench_here(
        "human", "analyse", str(results), "--manifest", str(manifest), "--format", "json", cwd=tmp_path, check=True
    )
    report = json.loads(output.stdout)
    assert {"design", "workers", "answers", "alpha", "pairs"} <= set(report)
    pair = report["pairs"][0]
    assert {"a", "b", "a_count", "b_count", "equal_count", "equal_rate", "chi2_p", "binom_p"} <= set(pair)
    assert (pair["a_count"], pair["b_count"], pair["equal_count"]) == (6, 2, 2)
    assert report["per_worker"]["W0"]["median_seconds"] == pytest.approx(1.5)
    bad = xbench_here("human", "analyse", str(manifest), "--manifest", str(manifest), cwd=tmp_path)
    assert bad.returncode == 2 and "neither an MTurk batch results file" in bad.stdout + bad.stderr


def _identify_manifest(tmp_path: Path, images: int = 6) -> Manifest:
    columns = ["stimulus", "image_id", "class", "variant", "view", "expected"]
    rows = []
    for image in range(images):
        label = "fish" if image % 2 else "parachute"
        rows += [
            [f"i{image}-1.png", image, label, "CR 1", "occlusion", ""],
            [f"i{image}-4.png", image, label, "CR 4", "occlusion", ""],
        ]
    return read_manifest(_write(tmp_path / "manifest.csv", columns, rows))


def test_a_dont_know_column_sharing_the_class_prefix_is_counted_as_dont_know(tmp_path: Path) -> None:
    """MTurk's one-hot layout `Answer.classes.0-fish`, `Answer.classes.1-parachute` and `Answer.classes.none`: the
    don't-know column shares the class prefix. Its answers count (as not correct; the known-only accuracy beside)."""
    manifest = _identify_manifest(tmp_path)
    options = ["0-fish", "1-parachute", "none"]
    header = ["HITId", "WorkerId", "Input.image_url", *[f"Answer.classes.{o}" for o in options]]
    rows, planted = [], {"CR 1": ["right", "right", "right", "none"], "CR 4": ["right", "wrong", "none", "none"]}
    for variant, answers in planted.items():
        for worker, answer in enumerate(answers):
            image = worker % 6
            truth = manifest.rows[f"i{image}-1.png"]["class"]
            chosen = (
                "none" if answer == "none" else truth if answer == "right" else {"fish": "parachute"}.get(truth, "fish")
            )
            flags = ["true" if option.endswith(chosen) else "false" for option in options]
            rows.append(["H", f"W{worker}", f"https://x/i{image}-{variant[3:]}.png", *flags])
    path = _write(tmp_path / "results.csv", header, rows)
    answers, unusable = read_answers(path, manifest, {"dont_know": "Answer.classes.none"}, "Answer.classes.")
    assert unusable == 0 and len(answers) == 8 and sum(a.answer == "dont_know" for a in answers) == 3
    again, _ = read_answers(path, manifest, class_prefix="Answer.classes.")  # no mapping: 'none' is still don't know
    assert [a.answer for a in again] == [a.answer for a in answers]
    report = analyse(answers, manifest, unusable=unusable)
    by_variant = {v["variant"]: v for v in report["variants"]}
    assert by_variant["CR 1"]["accuracy"] == pytest.approx(3 / 4) and by_variant["CR 1"]["known_accuracy"] == 1.0
    assert by_variant["CR 4"]["accuracy"] == pytest.approx(1 / 4) and by_variant["CR 4"]["known_accuracy"] == 0.5
    assert by_variant["CR 4"]["dont_know"] == 2 and report["answers"] == 8
    (contrast,) = report["contrasts"]
    assert (contrast["a"], contrast["b"]) == ("CR 1", "CR 4") and contrast["difference"] == pytest.approx(-0.5)
    assert 0 <= contrast["p"] <= 1 and contrast["p_holm"] == contrast["p"]


def test_an_answer_outside_the_mapping_is_an_input_error_naming_it(tmp_path: Path) -> None:
    manifest = _pairwise_manifest(tmp_path)
    rows = [["W0", "s1.png", "left", 900], ["W1", "s2.png", "Left", 900]]
    results = _write(tmp_path / "answers.csv", ["worker", "stimulus", "answer", "milliseconds"], rows)
    bad = xbench_here("human", "analyse", str(results), "--manifest", str(manifest), cwd=tmp_path)
    assert bad.returncode == 2
    message = bad.stdout + bad.stderr
    assert "row 3" in message and "'answer'" in message and "'Left'" in message and "left, right, equal" in message
    identify = _identify_manifest(tmp_path / "identify" if (tmp_path / "identify").mkdir() is None else tmp_path)
    label_rows = [["H", "W0", "i0-1.png", "parachute"], ["H", "W1", "i1-1.png", "dolphin"]]
    labels = _write(tmp_path / "labels.csv", ["HITId", "WorkerId", "Input.stimulus", "Answer.label"], label_rows)
    with pytest.raises(XbenchInputError, match=r"row 3, column 'Answer.label': answer 'dolphin' is not one of"):
        read_answers(labels, identify, {"label": "Answer.label"})


def test_pairwise_reports_a_headline_p_from_workers_and_images_beside_the_seed_papers_tests(tmp_path: Path) -> None:
    manifest = read_manifest(_pairwise_manifest(tmp_path))
    header, rows = _mturk_rows(_planted(30, 12, 8))
    answers, _ = read_answers(_write(tmp_path / "results.csv", header, rows), manifest)
    report = analyse(answers, manifest)
    (pair,) = report["pairs"]
    assert pair["preference"] == pytest.approx((30 - 12) / 50)
    assert pair["ci_low"] < pair["preference"] < pair["ci_high"] and pair["df"] == 3  # 4 images, 10 workers
    assert pair["p_holm"] == pair["p"] and "seed paper" in report["p_note"]


def test_a_worker_answering_a_stimulus_again_is_an_error_or_counted_once(tmp_path: Path) -> None:
    """One worker answering each stimulus 6 times counted 6 times (a preference count 3 -> 23): now an error naming
    the worker and stimulus, or with first_answer_only the first answer kept and the repeats counted."""
    manifest = read_manifest(_pairwise_manifest(tmp_path))
    answers = [("W0", "s1.png", "left")] * 6 + [("W1", "s1.png", "right"), ("W2", "s2.png", "right")]
    path = _write(tmp_path / "results.csv", *_mturk_rows(answers))
    with pytest.raises(XbenchInputError, match=r"5 repeated answers .*'W0' answered 's1.png'"):
        read_answers(path, manifest)
    counts: dict[str, int] = {}
    kept, _ = read_answers(path, manifest, first_answer_only=True, counts=counts)
    assert len(kept) == 3 and counts["repeated_answers"] == 5
    assert analyse(kept, manifest)["pairs"][0]["a_count"] == 2  # W0's one answer and W2's, not seven


def test_a_manifest_listing_a_stimulus_twice_is_an_error(tmp_path: Path) -> None:
    path = _pairwise_manifest(tmp_path)
    path.write_text(path.read_text() + "s1.png,0,circle,CR 4,CR 1,heatmap,\n")
    with pytest.raises(XbenchInputError, match=r"lists stimulus 's1.png' again"):
        read_manifest(path)


@pytest.mark.parametrize("value", ["NaN", "inf", "-5"])
def test_timing_values_must_be_finite_and_not_negative(tmp_path: Path, value: str) -> None:
    manifest = read_manifest(_pairwise_manifest(tmp_path))
    path = _write(
        tmp_path / "answers.csv", ["worker", "stimulus", "answer", "milliseconds"], [["W0", "s1.png", "left", value]]
    )
    with pytest.raises(XbenchInputError, match="line 2: milliseconds must be a finite number >= 0"):
        read_answers(path, manifest)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("worker,stimulus,answer\nW\xe9,s1.png,left\n".encode("latin-1"), "not UTF-8 text"),
        (b"\x00\x01\x02\xff\xfe binary", "not UTF-8 text"),
        (("worker,stimulus,answer\nW0,s1.png," + "x" * 140_000 + "\n").encode(), "not a readable CSV"),
    ],
)
def test_a_results_file_that_is_not_utf8_csv_is_an_input_error(tmp_path: Path, content: bytes, expected: str) -> None:
    manifest = read_manifest(_pairwise_manifest(tmp_path))
    path = tmp_path / "answers.csv"
    path.write_bytes(content)
    with pytest.raises(XbenchInputError, match=expected):
        read_answers(path, manifest)


def test_a_malformed_study_json_is_an_input_error(tmp_path: Path) -> None:
    path = _pairwise_manifest(tmp_path)
    (tmp_path / "study.json").write_text("{broken")
    with pytest.raises(XbenchInputError, match=r"study.json is damaged"):
        read_manifest(path)


def test_text_cells_that_look_like_formulas_are_neutralised_and_read_back(tmp_path: Path) -> None:
    from xbench.core.spreadsheet import csv_safe, csv_unsafe
    from xbench.human.report import pseudonymised_answers

    for cell in ('=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx"):
        assert csv_safe(cell) == "'" + cell and csv_unsafe(str(csv_safe(cell))) == cell
    assert csv_safe("circle") == "circle" and csv_safe(3) == 3
    results = _write(
        tmp_path / "answers.csv",
        ["worker", "stimulus", "answer", "comment"],
        [["W0", "s1.png", "left", '=HYPERLINK("http://evil")']],
    )
    out = tmp_path / "out"
    out.mkdir()
    logged = pseudonymised_answers(results, b"k" * 32, out).read_text()
    assert "'=HYPERLINK" in logged and "\n=HYPERLINK" not in logged and ",=HYPERLINK" not in logged
