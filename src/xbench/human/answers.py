"""Reading people's answers to an exported study (`xbench.human.study`) back: the manifest and the answer files.

Answers come from an MTurk batch results file (the platform's own columns: `WorkerId`, `HITId`, `Input.<variable>`,
`Answer.<field>`; the stimulus is the file name in an `Input.` column) or from the offline study page's download
(`worker, stimulus, answer, milliseconds`). The design comes from the manifest's columns. Every file is read as
untrusted: a wrong field is an input error naming it. The statistics are `analyse.crowd`'s.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xbench.analyse.crowd import DONT_KNOW, Answer, Manifest
from xbench.core.errors import XbenchInputError
from xbench.core.spreadsheet import csv_unsafe
from xbench.human.study import MANIFEST_COLUMNS, PAIRWISE_ANSWERS, STUDY_COLUMN

DEFAULT_PAIRWISE_COLUMNS = {answer: f"Answer.{answer}{{k}}.on" for answer in PAIRWISE_ANSWERS}
DEFAULT_CLASS_PREFIX = "Answer.class_"
DEFAULT_DONT_KNOW_COLUMN = f"Answer.{DONT_KNOW}{{k}}.on"


def read_csv(path: Path, field: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file that came from outside: anything but UTF-8 text, a field over csv's limit or a
    malformed line is an input error naming the file (and line), not a traceback."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or ())
            rows = [{k: csv_unsafe(v) if isinstance(v, str) else v for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise XbenchInputError(
            f"{path} is not UTF-8 text (byte {exc.start}): save it as a UTF-8 CSV and try again", field=field
        ) from None
    except csv.Error as exc:
        raise XbenchInputError(f"{path} is not a readable CSV: {exc}", field=field) from None
    return header, rows


def read_manifest(path: Path) -> Manifest:
    if not path.is_file():
        raise XbenchInputError(f"no manifest at {path}", field="--manifest")
    header, listed = read_csv(path, "--manifest")
    columns = set(header)
    rows: dict[str, dict[str, str]] = {}
    if "stimulus" in columns:
        for number, row in enumerate(listed, start=2):
            if row["stimulus"] in rows:
                raise XbenchInputError(
                    f"{path} line {number} lists stimulus {row['stimulus']!r} again: each stimulus once",
                    field="--manifest",
                )
            rows[row["stimulus"]] = row
    description = load_description(path)
    options = frozenset(str(name) for name in description.get("classes", []))
    ids = {str(row[STUDY_COLUMN]) for row in rows.values() if row.get(STUDY_COLUMN)}
    if len(ids) > 1:
        raise XbenchInputError(f"{path} mixes stimuli of studies {', '.join(sorted(ids))}", field="--manifest")
    study_id = next(iter(ids), None) or description.get("study_id")
    for design, needed in MANIFEST_COLUMNS.items():
        if set(needed) - {"expected"} <= columns:
            return Manifest(design, rows, options, study_id)
    raise XbenchInputError(
        f"{path} is not a study manifest: a pairwise one has columns {', '.join(MANIFEST_COLUMNS['pairwise'])}, an "
        f"identify one {', '.join(MANIFEST_COLUMNS['identify'])}; it has {', '.join(sorted(columns))}",
        field="--manifest",
    )


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


def _milliseconds(value: str | None, path: Path, line: int) -> float | None:
    number = _number(value)
    if number is not None and not (math.isfinite(number) and number >= 0):
        raise XbenchInputError(
            f"{path} line {line}: milliseconds must be a finite number >= 0, got {value!r}", field="RESULTS"
        )
    return number


def _once_each(
    answers: list[Answer], path: Path, first_answer_only: bool, unusable: int, counts: dict[str, int] | None
) -> tuple[list[Answer], int]:
    """One answer per worker and stimulus: a worker who answered a stimulus again is an error (each repeat would
    count as another person's answer), or with `first_answer_only` the first is kept and the rest counted."""
    seen: set[tuple[str, str]] = set()
    kept: list[Answer] = []
    repeated: list[Answer] = []
    for answer in answers:
        key = (answer.worker, answer.stimulus)
        (repeated if key in seen else kept).append(answer)
        seen.add(key)
    if repeated and not first_answer_only:
        first = repeated[0]
        raise XbenchInputError(
            f"{path}: {len(repeated)} repeated answers (worker {first.worker!r} answered {first.stimulus!r} more "
            "than once, and others): each would count as another person's; pass --first-answer-only to keep each "
            "worker's first answer to a stimulus",
            field="RESULTS",
        )
    if counts is not None:
        counts["repeated_answers"] = len(repeated)
    return kept, unusable


def read_answers(
    path: Path,
    manifest: Manifest,
    columns: Mapping[str, str] | None = None,
    class_prefix: str | None = None,
    first_answer_only: bool = False,
    counts: dict[str, int] | None = None,
) -> tuple[list[Answer], int]:
    """(answers, rows without a usable answer) from an MTurk batch results file or the study page's CSV. A worker's
    repeated answer to a stimulus is an error, or with `first_answer_only` left out (`counts["repeated_answers"]`
    says how many).

    `columns` maps answers to result columns (`{k}` is the position suffix of a HIT with several stimuli: "" or "_2"):
    pairwise left/right/equal (boolean columns), identify `label` (one column holding the class name) or `dont_know`
    (a boolean column, with one-hot class columns `class_prefix<class>`, optionally ending in MTurk's `.on`)."""
    if not path.is_file():
        raise XbenchInputError(f"no results file at {path}", field="RESULTS")
    header, rows = read_csv(path, "RESULTS")
    if "WorkerId" in header:
        found = _mturk_answers(rows, header, manifest, dict(columns or {}), class_prefix or DEFAULT_CLASS_PREFIX, path)
        return _once_each(found[0], path, first_answer_only, found[1], counts)
    if {"worker", "stimulus", "answer"} <= set(header):
        check_same_study({row["stimulus"] for row in rows if row.get("stimulus")}, manifest, path)
        answers = []
        for number, row in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them, the header line 1
            if row["stimulus"] in manifest.rows and row["answer"]:
                value = _checked_answer(row["answer"], manifest, path, "answer", number)
                milliseconds = _milliseconds(row.get("milliseconds"), path, number)
                answers.append(Answer(row["worker"], row["stimulus"], value, milliseconds))
        return _once_each(answers, path, first_answer_only, len(rows) - len(answers), counts)
    raise XbenchInputError(
        f"{path} is neither an MTurk batch results file (WorkerId, Input.*, Answer.* columns) nor a study page's "
        "answers (worker, stimulus, answer columns)",
        field="RESULTS",
    )


DONT_KNOW_NAMES = {"dont_know", "dontknow", "don't know", "dont know", "none", "unknown", "not_sure", "idk", "?"}


def _is_dont_know(name: str) -> bool:
    return re.sub(r"^\d+[-_.]", "", name.strip().lower()) in DONT_KNOW_NAMES


def _class_name(name: str, classes: set[str]) -> str:
    """A class as an answer column or value names it: MTurk layouts number them (`0-fish`, `3_church`)."""
    if name in classes:
        return name
    stripped = re.sub(r"^\d+[-_.]", "", name)
    return stripped if stripped in classes else name


def _checked_answer(value: str, manifest: Manifest, path: Path, column: str, row: int) -> str:
    """An answer in the design's vocabulary, or an input error naming the column, the row and the value (an
    unknown value must not count as "equal" or as a wrong class)."""
    value = value.strip()
    if manifest.design == "pairwise":
        if value in PAIRWISE_ANSWERS:
            return value
        allowed = ", ".join(PAIRWISE_ANSWERS)
    else:
        classes = manifest.classes
        if value == DONT_KNOW or _is_dont_know(value):
            return DONT_KNOW
        if (name := _class_name(value, classes)) in classes:
            return name
        allowed = ", ".join(sorted(classes)) + f" or {DONT_KNOW}"
    raise XbenchInputError(
        f"{path}, row {row}, column {column!r}: answer {value!r} is not one of {allowed}", field="RESULTS"
    )


STUDY_STIMULUS = re.compile(r"^(?:([0-9a-f]{8})-)?s\d{4}\.png$")


def check_same_study(names: set[str], manifest: Manifest, path: Path) -> None:
    """An input error when the answers name stimuli of another export than the manifest's (its study id differs,
    or the answers are to an export that had none): positional names alone would match the wrong stimuli."""
    foreign = set()
    for name in names - set(manifest.rows):
        match = STUDY_STIMULUS.match(name)
        if match and match.group(1) != manifest.study_id:
            foreign.add(match.group(1) or "an export without a study id")
    if foreign:
        raise XbenchInputError(
            f"{path} answers stimuli of study {', '.join(sorted(foreign))}, but {manifest.study_id or 'this manifest'} "
            "is another export: analyse answers with the manifest of the export people saw",
            field="--manifest",
        )


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _stimulus(value: str) -> str:
    """A stimulus name from an input value: a file name or a URL ending in one."""
    return value.rstrip("/").rsplit("/", 1)[-1]


def _mturk_answers(
    rows: list[dict[str, str]],
    header: list[str],
    manifest: Manifest,
    columns: dict[str, str],
    prefix: str,
    path: Path,
) -> tuple[list[Answer], int]:
    named = {_stimulus(row[c]) for c in header if c.startswith("Input.") for row in rows if row.get(c)}
    check_same_study(named, manifest, path)
    inputs = [c for c in header if c.startswith("Input.") and any(_stimulus(r[c]) in manifest.rows for r in rows)]
    if not inputs:
        raise XbenchInputError(f"no Input.* column of {path} names the manifest's stimuli", field="RESULTS")
    answers, unusable = [], 0
    for number, row in enumerate(rows, start=2):
        seconds = _number(row.get("WorkTimeInSeconds"))
        in_this_hit: set[str] = set()
        for column in inputs:
            suffix = re.search(r"(_\d+)?$", column).group(0)  # type: ignore[union-attr]
            stimulus = _stimulus(row[column])
            if stimulus in in_this_hit:
                continue  # the export fills the last HIT by repeating its last stimulus: one answer is the worker's
            in_this_hit.add(stimulus)
            if stimulus not in manifest.rows:
                unusable += 1
                continue
            answer = _mturk_answer(row, number, header, manifest, columns, prefix, suffix, path)
            if answer is None:
                unusable += 1
                continue
            if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
                raise XbenchInputError(
                    f"{path} line {number}: WorkTimeInSeconds must be a finite number >= 0, got {seconds}",
                    field="RESULTS",
                )
            milliseconds = None if seconds is None else 1000 * seconds / len(inputs)
            answers.append(Answer(row["WorkerId"], stimulus, answer, milliseconds))
    return answers, unusable


def _mturk_answer(
    row: dict[str, str],
    number: int,
    header: list[str],
    manifest: Manifest,
    columns: dict[str, str],
    prefix: str,
    suffix: str,
    path: Path,
) -> str | None:
    """The one answer a row gives for the stimulus at position `suffix`, or None (none or several chosen)."""

    def column(template: str, role: str) -> str:
        name = template.replace("{k}", suffix)
        if name not in header:
            raise XbenchInputError(
                f"{path} has no column {name!r} for {role} (map it with --answer {role}=COLUMN)", field="--answer"
            )
        return name

    if manifest.design == "pairwise":
        chosen = [a for a in PAIRWISE_ANSWERS if _true(row[column(columns.get(a, DEFAULT_PAIRWISE_COLUMNS[a]), a)])]
        return chosen[0] if len(chosen) == 1 else None
    if "label" in columns:
        name = column(columns["label"], "label")
        label = row[name].strip()
        return _checked_answer(label, manifest, path, name, number) if label else None
    dont_know = columns.get("dont_know", DEFAULT_DONT_KNOW_COLUMN).replace("{k}", suffix)
    chosen = []
    for name in header:  # one-hot class columns: PREFIX<class>, MTurk's radio buttons add .on
        if name == dont_know or not name.startswith(prefix):
            continue  # the don't-know column is never a class, whatever its name
        for tail in (f"{suffix}.on", suffix):
            if name.endswith(tail) and len(name) > len(prefix) + len(tail):
                part = name[len(prefix) : len(name) - len(tail)] if tail else name[len(prefix) :]
                if not suffix and re.search(r"_\d+$", part) and _known(re.sub(r"_\d+$", "", part), manifest):
                    break  # a later stimulus' column (`_2`) of a HIT with several
                if _true(row[name]):  # the header offers this option; a numbered one (`0-fish`) names its class
                    chosen.append(DONT_KNOW if _is_dont_know(part) else _class_name(part, manifest.classes))
                break
    if dont_know in header and _true(row[dont_know]):
        chosen.append(DONT_KNOW)
    if not chosen and not any(name.startswith(prefix) for name in header):
        raise XbenchInputError(
            f"{path} has no one-hot class columns {prefix}<class> (set --answer-prefix, or --answer label=COLUMN)",
            field="--answer-prefix",
        )
    return chosen[0] if len(chosen) == 1 else None


def _known(name: str, manifest: Manifest) -> bool:
    return _is_dont_know(name) or _class_name(name, manifest.classes) in manifest.classes


def load_description(manifest_path: Path) -> dict[str, Any]:
    """The export's study.json beside the manifest, or {} when there is none."""
    path = manifest_path.parent / "study.json"
    if not path.is_file():
        return {}
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise XbenchInputError(f"{path} is damaged: {exc}", field="--manifest") from None
    if not isinstance(description, dict):
        raise XbenchInputError(f"{path} is not a study description (a JSON object)", field="--manifest")
    return description
