"""The fuzzing lane: generated suites, bundles and crowd files (Hypothesis). Whatever comes in, xbench accepts it or
refuses it with an input error (exit 2 and a sentence at the command line), never a traceback, and a bundle never
makes it read outside its folder. A bounded, derandomised number of examples, so the lane is the same on every run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SMOKE
from xbench.core.errors import XbenchInputError

FUZZ = settings(
    max_examples=60,
    deadline=None,  # no wall-clock limit: machines differ by 2.6x
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Values of every kind YAML and JSON can carry, the awkward ones included.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
SMOKE_DATA = yaml.safe_load(SMOKE.read_text())


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a nested suite, so a mutation can land anywhere in it."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


SUITE_PATHS = _paths(SMOKE_DATA)


def _mutated(path: tuple[Any, ...], value: Any) -> dict:
    data = json.loads(json.dumps(SMOKE_DATA))
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


@FUZZ
@given(path=st.sampled_from(SUITE_PATHS), value=VALUES)
def test_any_value_anywhere_in_a_suite_is_accepted_or_an_input_error(path: tuple[Any, ...], value: Any) -> None:
    from xbench.core.suite import parse_suite

    try:
        parse_suite(_mutated(path, value))
    except XbenchInputError as error:
        assert str(error)  # a sentence, naming what is wrong


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_as_a_suite_file_is_accepted_or_an_input_error(text: str, tmp_path: Path) -> None:
    from xbench.core.suite import load_suite

    suite_file = tmp_path / "fuzzed.yaml"
    suite_file.write_text(text)
    try:
        load_suite(str(suite_file))
    except XbenchInputError as error:
        assert str(error)


@pytest.fixture(scope="module")
def exported(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import xbench_here

    bundle = tmp_path_factory.mktemp("fuzz") / "smoke-results"
    xbench_here("export", "--suite", "smoke", "--bundle", str(bundle), cwd=smoke_run, check=True)
    return bundle


MANIFEST_FIELDS = ["format", "version", "suite", "experiment_id", "reference", "equivalence", "cells"]


@settings(FUZZ, max_examples=30)  # each example copies a whole bundle
@given(
    field=st.sampled_from(MANIFEST_FIELDS),
    value=VALUES,
    run_id=st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["..", "../..", "/etc", "a/../../b", "."])),
)
def test_a_fuzzed_bundle_is_read_or_refused_and_never_reads_outside_itself(
    exported: Path, tmp_path_factory: pytest.TempPathFactory, field: str, value: Any, run_id: str | None
) -> None:
    from xbench.store.bundle import Bundle

    root = tmp_path_factory.mktemp("fuzzed")
    bundle = root / "bundle"
    shutil.copytree(exported, bundle)
    (root / "result.json").write_text("{}")  # what a run id leaving the bundle would find
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest[field] = value
    cells = manifest.get("cells")
    if run_id is not None and isinstance(cells, list) and cells and isinstance(cells[0], dict):
        cells[0]["run_id"] = run_id
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    opened: list[str] = []
    original = Path.read_bytes

    def watched(path: Path) -> bytes:
        opened.append(str(path.resolve()))
        return original(path)

    Path.read_bytes = watched  # type: ignore[method-assign]
    try:
        reader = Bundle(bundle)
        reader.load_cell_results(reader.suite)
        reader.equivalence(reader.suite)
        reader.human_studies(reader.suite)
    except XbenchInputError as error:
        assert str(error)
    finally:
        Path.read_bytes = original  # type: ignore[method-assign]
    inside = str(bundle.resolve())
    assert all(path.startswith(inside) for path in opened), [p for p in opened if not p.startswith(inside)]


PAIRWISE_MANIFEST = (
    "stimulus,image_id,class,left,right,view,expected\n"
    "s1.png,0,circle,CR 1,CR 4,heatmap,\n"
    "s2.png,1,square,CR 4,CR 1,heatmap,\n"
)


@FUZZ
@given(content=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)))
def test_any_bytes_as_a_crowd_file_are_read_or_an_input_error(content: bytes, tmp_path: Path) -> None:
    from xbench.human.answers import read_answers, read_manifest

    (tmp_path / "manifest.csv").write_text(PAIRWISE_MANIFEST)
    manifest = read_manifest(tmp_path / "manifest.csv")
    results = tmp_path / "answers.csv"
    results.write_bytes(b"worker,stimulus,answer,milliseconds\n" + content)
    try:
        read_answers(results, manifest)
    except XbenchInputError as error:
        assert str(error)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["W0", "W1", "W2", "=cmd", ""]),
            st.sampled_from(["s1.png", "s2.png", "s3.png", ""]),
            st.sampled_from(["left", "right", "equal", "LEFT", "", "x"]),
            st.one_of(st.just(""), st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=5)),
        ),
        max_size=12,
    )
)
def test_any_table_of_answers_is_read_or_an_input_error(rows: list[tuple[str, str, str, str]], tmp_path: Path) -> None:
    import csv

    from xbench.analyse.crowd import analyse
    from xbench.human.answers import read_answers, read_manifest

    (tmp_path / "manifest.csv").write_text(PAIRWISE_MANIFEST)
    manifest = read_manifest(tmp_path / "manifest.csv")
    results = tmp_path / "answers.csv"
    with results.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["worker", "stimulus", "answer", "milliseconds"])
        writer.writerows(rows)
    try:
        answers, unusable = read_answers(results, manifest)
        if answers:
            json.dumps(analyse(answers, manifest, unusable=unusable), allow_nan=True)
    except XbenchInputError as error:
        assert str(error)
