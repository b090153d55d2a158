"""Insertion and deletion (RISE) and the confidence-change metrics (Grad-CAM++, Opti-CAM) on cases small enough to
work out by hand; `test_engine.py` compares them with RISE's loop and pytorch-grad-cam on real models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from xbench.core.errors import XbenchInputError
from xbench.measure.engine import EngineContext, run_metric
from xbench.measure.metrics import metrics
from xbench.measure.rise import blurred, gaussian_kernel

CPU = torch.device("cpu")
FIELD_METRICS = ["insertion", "deletion", "average_drop", "increase_in_confidence", "average_gain"]


class SumModel(nn.Module):
    """Two classes, logits (sum of the pixels, 0): the probability of class 0 is sigmoid(sum)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.flatten(1).sum(1)
        return torch.stack([total, torch.zeros_like(total)], dim=1)


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def run(name: str, x: list[float], a: list[float], **params: object) -> float:
    images = np.array(x, dtype=np.float32).reshape(1, 1, 2, 2)
    maps = np.array(a, dtype=np.float32).reshape(1, 1, 2, 2)
    context = EngineContext(SumModel(), CPU)
    return float(run_metric(name, params, context, images, np.array([0]), maps)[0])


def rise_auc(curve: list[float]) -> float:
    return (sum(curve) - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1)


def test_deletion_removes_the_most_relevant_pixel_first_and_integrates_as_rise() -> None:
    # pixels 1, 2, 3, 4; the map ranks them 4 > 3 > 2 > 1, so the sum goes 10, 6, 3, 1, 0 one pixel a step
    expected = rise_auc([sigmoid(s) for s in (10, 6, 3, 1, 0)])
    assert run("deletion", [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], step=1, ties="index") == pytest.approx(expected)
    # two pixels a step: 10, 3, 0
    two = rise_auc([sigmoid(s) for s in (10, 3, 0)])
    assert run("deletion", [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], step=2, ties="index") == pytest.approx(two)
    # a map in the wrong order deletes the small pixels first and keeps the probability high for longer
    assert run("deletion", [1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1], step=1, ties="index") > expected


def test_insertion_puts_the_most_relevant_pixel_back_first() -> None:
    # from a baseline of -1 everywhere (sum -4): 4 back first gives -4 + 5, then 3, 2, 1
    curve = [sigmoid(s) for s in (-4, 1, 5, 8, 10)]
    found = run("insertion", [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4], step=1, baseline=-1.0, ties="index")
    assert found == pytest.approx(rise_auc(curve))


def test_relevance_is_summed_over_channels_and_abs_takes_magnitudes() -> None:
    x = np.ones((1, 2, 1, 2), dtype=np.float32)  # two channels, two pixels
    a = np.array([[[[0.9, 0.0]], [[-0.8, 0.5]]]], dtype=np.float32)  # pixel 0 sums to 0.1 < 0.5; |.| to 1.7 > 0.5

    def deletion(**params: object) -> float:
        context = EngineContext(SumModel(), CPU)
        return float(run_metric("deletion", {"step": 1, **params}, context, x, np.array([0]), a)[0])

    # each pixel holds 2 (both channels), so a model of the sum cannot tell the orders apart: 4, 2, 0 either way
    assert deletion() == pytest.approx(rise_auc([sigmoid(4), sigmoid(2), sigmoid(0)]))

    class FirstPixel(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            total = inputs[:, :, 0, 0].sum(1)
            return torch.stack([total, torch.zeros_like(total)], dim=1)

    def first_pixel(**params: object) -> float:
        context = EngineContext(FirstPixel(), CPU)
        return float(run_metric("deletion", {"step": 1, **params}, context, x, np.array([0]), a)[0])

    # signed: pixel 1 (0.5) goes first, pixel 0 second: 2, 2, 0; magnitudes: pixel 0 (1.7) first: 2, 0, 0
    assert first_pixel() == pytest.approx(rise_auc([sigmoid(2), sigmoid(2), sigmoid(0)]))
    assert first_pixel(abs=True) == pytest.approx(rise_auc([sigmoid(2), sigmoid(0), sigmoid(0)]))


def test_the_insertion_substrate_is_rises_gaussian_blur() -> None:
    kernel = gaussian_kernel(11, 5.0)
    assert kernel.shape == (11, 11) and kernel.sum() == pytest.approx(1.0, abs=1e-3)
    assert np.unravel_index(kernel.argmax(), kernel.shape) == (5, 5)
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, 16, 16] = 1.0
    result = blurred(image, 11, 5.0)
    assert result.shape == image.shape
    # a delta blurs into the kernel itself, in every channel apart
    np.testing.assert_allclose(result[0, 1, 11:22, 11:22].numpy(), kernel, atol=1e-6)


def test_masking_by_the_map_gives_the_confidence_change_by_hand() -> None:
    # x = 1 everywhere (Y = sigmoid(4)); the map keeps pixel 0 only (min-max scaled to 1, 0, 0, 0): O = sigmoid(1)
    x, a = [1, 1, 1, 1], [3, 1, 1, 1]
    y, o = sigmoid(4), sigmoid(1)
    assert run("average_drop", x, a) == pytest.approx(100 * (y - o) / y, rel=1e-5)
    assert run("increase_in_confidence", x, a) == 0.0
    assert run("average_gain", x, a) == 0.0
    # the map keeps the one positive pixel and drops the negative ones: the masked image is more confident
    x, a = [2, -1, -1, -1], [1, 0, 0, 0]
    y, o = sigmoid(-1), sigmoid(2)
    assert run("average_drop", x, a) == 0.0
    assert run("increase_in_confidence", x, a) == 100.0
    assert run("average_gain", x, a) == pytest.approx(100 * (o - y) / (1 - y), rel=1e-5)
    # the map is min-max scaled: 2, 1.5, 1, 1 becomes 1, 0.5, 0, 0, so the masked sum is 2 - 0.5 = 1.5 (from 3)
    x, a = [2, -1, 1, 1], [2, 1.5, 1, 1]
    assert run("average_drop", x, a) == pytest.approx(100 * (sigmoid(3) - sigmoid(1.5)) / sigmoid(3), rel=1e-5)
    assert run("average_gain", x, a) == 0.0


def test_the_metrics_declare_their_direction_and_category() -> None:
    directions = {name: metrics.get(name).higher_is_better for name in FIELD_METRICS}
    assert directions == {
        "insertion": True,
        "deletion": False,
        "average_drop": False,
        "increase_in_confidence": True,
        "average_gain": True,
    }
    assert {metrics.get(name).category for name in FIELD_METRICS} == {"faithfulness"}
    assert metrics.get("insertion").resolve({}, 64) == {"step": 64}  # RISE's one image side per step


def test_a_bad_step_or_baseline_says_what_is_allowed() -> None:
    with pytest.raises(XbenchInputError, match="step must be a positive"):
        run("deletion", [1, 2, 3, 4], [1, 2, 3, 4], step=0)
    with pytest.raises(XbenchInputError, match="blur, black, white, mean or a number"):
        run("insertion", [1, 2, 3, 4], [1, 2, 3, 4], step=1, baseline="uniform")


class ScaledSum(SumModel):
    """SumModel's logits times 10: certain enough that float32's softmax gives exactly 1.0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * super().forward(x)


def test_a_model_certain_in_float32_still_gets_its_confidence_figures() -> None:
    """Y = sigmoid(40) and O = sigmoid(50) are both 1.0 in float32, so 1 - Y cancelled to 0 (the engine said 0, the
    reference NaN or inf); from log-probabilities, gain = (e^-40 - e^-50) / e^-40 = 1 - e^-10."""
    images = np.array([3, 1, 1, -1], dtype=np.float32).reshape(1, 1, 2, 2)
    maps = np.array([1, 1, 1, 0], dtype=np.float32).reshape(1, 1, 2, 2)  # keeps the first three: sum 4 -> 5
    assert torch.tensor([40.0, 0.0]).softmax(0)[0].item() == 1.0  # the cancellation this guards against

    def engine(name: str) -> float:
        return float(run_metric(name, {}, EngineContext(ScaledSum(), CPU), images, np.array([0]), maps)[0])

    assert engine("average_gain") == pytest.approx(100 * (1 - math.exp(-10)), rel=1e-9)
    assert engine("increase_in_confidence") == 100.0 and engine("average_drop") == 0.0
    from xbench.measure.confidence import grad_cam_reference

    for name in ("average_gain", "average_drop", "increase_in_confidence"):
        reference = grad_cam_reference(name)(ScaledSum(), images, np.array([0]), maps, {}, CPU)
        assert np.isfinite(reference).all() and reference[0] == pytest.approx(engine(name), rel=1e-9), name


def test_engine_and_reference_agree_on_a_model_trained_to_certainty() -> None:
    """A small CNN trained until its softmax is exactly 1.0 in float32 on most images: every confidence figure is
    finite, and the engine equals its pytorch-grad-cam reference on every image."""
    from xbench.measure.confidence import grad_cam_reference

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 8, 8, generator=generator)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()  # top half brighter than the bottom
    x[y == 1, 0, :4] += 2.0
    x[y == 0, 0, 4:] += 2.0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        certain = (model(x).softmax(-1).gather(1, y[:, None]) == 1.0).float().mean().item()
    assert certain > 0.5  # the float32 softmax rounds most images' Y to exactly 1
    maps = torch.rand(32, 1, 8, 8, generator=generator).numpy()
    images, labels = x.numpy(), y.numpy()
    for name in ("average_gain", "average_drop", "increase_in_confidence"):
        found = run_metric(name, {}, EngineContext(model, CPU), images, labels, maps)
        reference = grad_cam_reference(name)(model, images, labels, maps, {}, CPU)
        assert np.isfinite(found).all() and np.isfinite(reference).all(), name
        np.testing.assert_allclose(found, reference, rtol=1e-6, atol=1e-9, err_msg=name)
