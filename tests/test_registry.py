import pytest

from xbench.core.registry import Registry, UnknownNameError


def test_register_get_and_list_with_pattern() -> None:
    registry: Registry[int] = Registry("thing")
    registry.register("alpha")(1)
    registry.register("beta")(2)
    assert registry.get("beta") == 2
    assert registry.names() == ["alpha", "beta"]
    assert registry.names("a*") == ["alpha"]
    assert "alpha" in registry and len(registry) == 2


def test_duplicate_name_raises() -> None:
    registry: Registry[int] = Registry("thing")
    registry.register("alpha")(1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("alpha")(2)


def test_unknown_name_suggests_close_names_and_lists_all() -> None:
    registry: Registry[int] = Registry("explainer")
    for name in ("gradcam", "saliency"):
        registry.register(name)(0)
    with pytest.raises(UnknownNameError) as error:
        registry.get("gradcm")
    message = str(error.value)
    assert "unknown explainer 'gradcm'" in message
    assert "did you mean 'gradcam'" in message
    assert "available: gradcam, saliency" in message


def test_a_plugin_name_mlflow_would_refuse_is_refused_where_the_plugin_is_defined() -> None:
    """A metric named `my<metric` used to fail inside MLflow half-way through logging a cell, leaving a RUNNING run."""
    registry: Registry[int] = Registry("metric")
    for bad in ("my<metric", "", "-lead", "a" * 101, "with space", "a/b"):
        with pytest.raises(ValueError, match="use letters, digits"):
            registry.register(bad)
    registry.register("ok_name-1.0")(1)
    assert registry.get("ok_name-1.0") == 1


def test_a_registry_imports_the_modules_that_fill_it_when_first_read_not_when_made(tmp_path, monkeypatch) -> None:
    import sys

    (tmp_path / "lazy_owner.py").write_text(
        "from xbench.core.registry import Registry\nTHINGS = Registry('thing', modules=('lazy_family',))\n"
    )
    (tmp_path / "lazy_family.py").write_text("from lazy_owner import THINGS\nTHINGS.register('a')(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_owner

    assert "lazy_family" not in sys.modules  # the owner does not import what fills it
    assert lazy_owner.THINGS.names() == ["a"] and lazy_owner.THINGS.get("a") == 1
    assert "lazy_family" in sys.modules
    sys.modules.pop("lazy_owner"), sys.modules.pop("lazy_family")


def test_update_changes_an_entry_and_names_a_missing_one() -> None:
    registry: Registry[int] = Registry("thing")
    registry.register("a")(1)
    assert registry.update("a", lambda value: value + 1) == 2 and registry.get("a") == 2
    with pytest.raises(UnknownNameError, match="unknown thing 'b'"):
        registry.update("b", lambda value: value)


def test_one_metric_registry_holds_the_torch_engines_implementations() -> None:
    """The engine has no registry of its own: its implementations sit on their metrics' entries in `metrics`, and
    `engine_metrics` reads them from there; a second implementation of a metric is refused."""
    from xbench.measure.engine import engine_metric, engine_metrics
    from xbench.measure.metric import metrics

    faithfulness = metrics.get("faithfulness_correlation")
    assert faithfulness.quantus_class is not None and faithfulness.engine is engine_metrics.get(faithfulness.name)
    assert metrics.get("sparseness").engine is None and "sparseness" not in engine_metrics
    assert set(engine_metrics.names()) == {n for n in metrics.names() if metrics.get(n).engine is not None}
    assert metrics.get("insertion").quantus_class is None and "insertion" in engine_metrics  # torch-only: both at once
    with pytest.raises(ValueError, match="already registered"):
        engine_metric("faithfulness_correlation")(lambda context, x, y, a: x)
    with pytest.raises(UnknownNameError, match="unknown metric 'no_such_metric'"):
        engine_metric("no_such_metric")(lambda context, x, y, a: x)
