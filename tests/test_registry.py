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
