import numpy as np
import pytest
import torch

from xbench.components.data import ImageData
from xbench.components.explainers import default_target_layer, explain, explainers, postprocess
from xbench.components.models import timm_model
from xbench.core.errors import XbenchInputError
from xbench.core.suite import parse_suite
from xbench.plan.planner import plan


@pytest.mark.parametrize("name", explainers.names())
def test_every_explainer_gives_one_map_per_image(name: str, tiny_model: torch.nn.Module, small_data: ImageData) -> None:
    plugin = explainers.get(name)
    if plugin.unsupported_reason(tiny_model):  # transformer explainers: tests/test_transformer_explainers.py
        assert plugin.limited
        return
    params = plugin.resolve({})
    x, y = small_data.eval_x[:4], small_data.eval_y[:4]
    attributions = explain(plugin, params, tiny_model, x, y, torch.device("cpu"), batch_size=3)
    assert attributions.shape == (4, 1, 32, 32) and attributions.dtype == np.float32
    assert np.isfinite(attributions).all()


def test_saliency_is_the_absolute_input_gradient_of_the_target(
    tiny_model: torch.nn.Module, small_data: ImageData
) -> None:
    x, y = small_data.eval_x[:2].clone(), small_data.eval_y[:2]
    plugin = explainers.get("saliency")
    attributions = explain(plugin, plugin.resolve({}), tiny_model, x, y, torch.device("cpu"))
    x.requires_grad_(True)
    tiny_model(x).gather(1, y.view(-1, 1)).sum().backward()
    expected = x.grad.abs().amax(dim=1, keepdim=True).numpy()
    np.testing.assert_allclose(attributions, expected, rtol=1e-4, atol=1e-7)


def test_gradcam_uses_the_last_timm_feature_stage(tiny_model: torch.nn.Module) -> None:
    assert default_target_layer(tiny_model) == tiny_model.feature_info[-1]["module"]


def test_unknown_explainer_parameter_names_the_allowed_ones() -> None:
    with pytest.raises(XbenchInputError, match=r"unknown parameter.*n_stepz.*allowed: .*n_steps"):
        explainers.get("integrated_gradients").resolve({"n_stepz": 3})


def test_postprocessing_is_explicit() -> None:
    attribution = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]])
    assert postprocess(attribution, {"channel_reduction": "sum", "absolute": False}).item() == 0.0
    assert postprocess(attribution, {"channel_reduction": "sum", "absolute": True}).item() == 6.0
    assert postprocess(attribution, {"channel_reduction": "max", "absolute": True}).item() == 3.0


@pytest.mark.parametrize("name", explainers.names())
def test_every_explainer_explains_a_vit_or_says_why_not(name: str, small_data: ImageData) -> None:
    torch.manual_seed(0)
    vit = timm_model("test_vit", small_data.num_classes, 32).eval()
    plugin = explainers.get(name)
    if plugin.cnn_only:
        assert "token (ViT-like) model" in (plugin.unsupported_reason(vit) or "")
        return
    assert plugin.unsupported_reason(vit) is None
    attributions = explain(
        plugin, plugin.resolve({}), vit, small_data.eval_x[:4], small_data.eval_y[:4], torch.device("cpu")
    )
    assert attributions.shape == (4, 1, 32, 32) and np.isfinite(attributions).all()


def test_a_cnn_only_explainer_on_a_vit_fails_at_plan_time() -> None:
    suite = parse_suite(
        {
            "name": "t",
            "dataset": {"image_size": 32},
            "models": [{"name": "test_vit"}],
            "explainers": ["saliency", "fullgrad"],
        }
    )
    with pytest.raises(XbenchInputError, match=r"explainers\[1\]: fullgrad cannot explain test_vit"):
        plan(suite, "cpu")


def test_controls_ignore_the_model(tiny_model: torch.nn.Module, small_data: ImageData) -> None:
    other = timm_model("test_resnet", small_data.num_classes, 32).eval()
    for name in ("random", "sobel"):
        plugin = explainers.get(name)
        first = explain(
            plugin, plugin.resolve({}), tiny_model, small_data.eval_x, small_data.eval_y, torch.device("cpu")
        )
        second = explain(plugin, plugin.resolve({}), other, small_data.eval_x, small_data.eval_y, torch.device("cpu"))
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", ["lrp_epsilon_gamma_box", "lrp_epsilon_plus_flat"])
def test_lrp_conserves_the_target_relevance_on_a_plain_cnn(name: str) -> None:
    """The output relevance is the one-hot target; through a VGG only the biases absorb a little of it."""
    torch.manual_seed(0)
    vgg = timm_model("vgg11", 4, 32).eval()
    plugin = explainers.get(name)
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    relevance = explain(plugin, plugin.resolve({}), vgg, x, y, torch.device("cpu"))
    np.testing.assert_allclose(relevance.reshape(3, -1).sum(1), np.ones(3), atol=0.01)


def test_lrp_canonizes_timm_resnet_blocks_and_restores_them(tiny_model: torch.nn.Module) -> None:
    from zennit.composites import EpsilonPlusFlat

    from xbench.components.explainers.lrp import lrp_canonizers

    block = tiny_model.layer1[0]
    original_forward = block.forward
    composite = EpsilonPlusFlat(canonizers=lrp_canonizers(tiny_model))
    with composite.context(tiny_model):
        assert hasattr(block, "canonizer_sum") and block.forward != original_forward
    assert not hasattr(block, "canonizer_sum") and block.forward == original_forward


def test_lrp_refuses_architectures_without_canonizers_at_plan_time() -> None:
    suite = parse_suite(
        {
            "name": "t",
            "dataset": {"image_size": 32},
            "models": [{"name": "test_convnext"}],
            "explainers": ["lrp_epsilon_plus_flat"],
        }
    )
    with pytest.raises(XbenchInputError, match=r"explainers\[0\]: lrp_epsilon_plus_flat cannot explain test_convnext"):
        plan(suite, "cpu")
