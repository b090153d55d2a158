import json
from pathlib import Path

import pytest
import yaml

from xbench.core.errors import XbenchInputError
from xbench.core.suite import SUITES_DIR, ComponentSpec, load_suite, parse_suite, suite_json_schema

ROOT = Path(__file__).resolve().parents[1]


def minimal(**overrides: object) -> dict:
    data = {"name": "t", "models": [{"name": "test_resnet"}], "explainers": ["saliency"]}
    data.update(overrides)
    return data


@pytest.mark.parametrize("name", ["quick", "smoke"])
def test_shipped_suites_parse(name: str) -> None:
    suite, path = load_suite(name)
    assert suite.name == name and path.name == f"{name}.yaml"


def test_explainer_and_metric_accept_name_or_mapping() -> None:
    suite = parse_suite(minimal(explainers=["saliency", {"name": "integrated_gradients", "n_steps": 8}]))
    assert suite.explainers == [
        ComponentSpec(name="saliency"),
        ComponentSpec(name="integrated_gradients", params={"n_steps": 8}),
    ]


def test_unknown_key_names_the_field_and_the_allowed_keys() -> None:
    with pytest.raises(XbenchInputError) as error:
        parse_suite(minimal(dataset={"name": "shapes", "imagesize": 32}))
    message = str(error.value)
    assert "dataset.imagesize: unknown key" in message
    assert "image_size" in message


def test_compression_rate_below_one_names_the_yaml_path() -> None:
    with pytest.raises(XbenchInputError, match=r"pruning\[0\]\.compression_rates\[1\]: must be >= 1"):
        parse_suite(minimal(pruning=[{"method": "magnitude", "compression_rates": [2, 0.5]}]))


def test_bad_choice_lists_the_allowed_values() -> None:
    with pytest.raises(XbenchInputError) as error:
        parse_suite(minimal(pruning=[{"method": "magnitude", "scope": "convs", "compression_rates": [2]}]))
    assert "pruning[0].scope" in str(error.value)
    assert "'conv', 'conv_linear' or 'all'" in str(error.value)


def test_malformed_yaml_and_missing_suite_are_input_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(XbenchInputError, match="malformed YAML"):
        load_suite(str(broken))
    with pytest.raises(XbenchInputError, match=r"unknown suite 'quik'.*quick"):
        load_suite("quik")


def test_quick_suite_matches_the_documented_shape() -> None:
    data = yaml.safe_load((SUITES_DIR / "quick.yaml").read_text())
    suite = parse_suite(data)
    assert [m.name for m in suite.models] == ["resnet10t"] and suite.replicate_seeds == [0, 1, 2]
    assert suite.pruning[0].compression_rates == [1, 2, 4, 8, 32]
    assert suite.explainers[0].params == {"target_layer": "layer2"}  # an 8x8 Grad-CAM at 64 px (README)
    assert [e.name for e in suite.explainers] == ["gradcam", "saliency", "integrated_gradients"]
    names = [m.name for m in suite.metrics]
    assert len(names) == 6 and {"insertion", "deletion"} <= set(names)  # the field's RISE metrics (issue #28)


def test_seed_and_seeds_are_exclusive_and_seeds_distinct() -> None:
    base = {"name": "s", "models": [{"name": "test_resnet"}], "explainers": ["saliency"]}
    assert parse_suite(base).replicate_seeds == [0]
    assert parse_suite({**base, "seed": 4}).replicate_seeds == [4]
    with pytest.raises(XbenchInputError, match="seeds: give seed"):
        parse_suite({**base, "seed": 1, "seeds": [1, 2]})
    with pytest.raises(XbenchInputError, match=r"seeds\[1\]: seed 3 is listed twice"):
        parse_suite({**base, "seeds": [3, 3]})


def test_json_schema_is_exported() -> None:
    schema = json.loads(suite_json_schema())
    assert schema["additionalProperties"] is False
    assert {"models", "pruning", "explainers", "metrics"} <= set(schema["properties"])
