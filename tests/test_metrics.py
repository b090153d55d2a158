import numpy as np
import pytest
import quantus
import torch

from tests.conftest import QuadrantModel
from xbench.components.data import ImageData
from xbench.components.explainers import explain, explain_tensor, explainers, quantus_explain_func
from xbench.measure.engine import engine_metrics
from xbench.measure.metrics import metrics, score, snake_case
from xbench.measure.quantus_numpy import QuantusNumpy, quantus_numpy

# Few samples keep every metric under a few seconds on a tiny model; the definitions are Quantus's.
FAST = {
    "faithfulness_correlation": {"nr_runs": 5},
    "monotonicity_correlation": {"nr_samples": 3},
    "max_sensitivity": {"nr_samples": 3},
    "avg_sensitivity": {"nr_samples": 3},
    "local_lipschitz_estimate": {"nr_samples": 3},
    "infidelity": {"n_perturb_samples": 3},
}


def _score(
    name: str,
    model: torch.nn.Module,
    data: ImageData,
    attributions: np.ndarray,
    engine: str = "torch",
    **params: object,
) -> np.ndarray:
    metric = metrics.get(name)
    saliency = explainers.get("saliency")
    cpu = torch.device("cpu")
    explain_func = quantus_explain_func(saliency, saliency.resolve({}), cpu)

    def explain_again(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return explain_tensor(saliency, saliency.resolve({}), model, x, y, cpu)

    return score(
        metric,
        metric.resolve(params, 32),
        model,
        data.eval_x.numpy(),
        data.eval_y.numpy(),
        attributions,
        data.eval_masks,
        cpu,
        seed=0,
        explain_func=explain_func,
        engine=engine,
        explain_tensor_func=explain_again,
    ).scores


@pytest.mark.parametrize("name", metrics.names())
def test_every_metric_scores_each_image(name: str, tiny_model: torch.nn.Module, small_data: ImageData) -> None:
    saliency = explainers.get("saliency")
    attributions = explain(
        saliency, saliency.resolve({}), tiny_model, small_data.eval_x, small_data.eval_y, torch.device("cpu")
    )
    scores = _score(name, tiny_model, small_data, attributions, **FAST.get(name, {}))
    assert scores.shape == (8,) and np.isfinite(scores).all()


@pytest.mark.parametrize("name", sorted(set(engine_metrics.names()) - {"irof", "road"}))
def test_the_quantus_engine_scores_what_the_torch_engine_scores(
    name: str, tiny_model: torch.nn.Module, small_data: ImageData
) -> None:
    attributions = np.random.default_rng(0).random((8, 1, 32, 32)).astype(np.float32)
    params = FAST.get(name, {})
    reference = _score(name, tiny_model, small_data, attributions, engine="quantus", **params)
    engine = _score(name, tiny_model, small_data, attributions, engine="torch", **params)
    assert np.isfinite(reference).all() and np.isfinite(engine).all()
    if name not in ("faithfulness_correlation", "monotonicity_correlation", "max_sensitivity", "avg_sensitivity"):
        # Deterministic metrics: only the tie order of a pixel's 3 equal channel values may differ (see engine.py).
        assert engine == pytest.approx(reference, abs=0.05)


@pytest.mark.parametrize("name", ["irof", "road"])
def test_quantus_06_fails_on_rgb_for_irof_and_road(
    name: str, tiny_model: torch.nn.Module, small_data: ImageData
) -> None:
    """Why the torch engine is the only way to score these on RGB images (a canary for a Quantus fix)."""
    attributions = np.random.default_rng(0).random((8, 1, 32, 32)).astype(np.float32)
    with pytest.raises((AssertionError, IndexError)):
        _score(name, tiny_model, small_data, attributions, engine="quantus")


def test_a_batch_level_metric_gives_every_image_its_value(tiny_model: torch.nn.Module, small_data: ImageData) -> None:
    attributions = np.random.default_rng(0).random((8, 1, 32, 32)).astype(np.float32)
    scores = _score("sensitivity_n", tiny_model, small_data, attributions)
    assert metrics.get("sensitivity_n").batch_level and len(set(scores.tolist())) == 1


def test_snake_case_keeps_acronyms_whole() -> None:
    assert [snake_case(n) for n in ("FaithfulnessCorrelation", "EfficientMPRT", "AUC", "TopKIntersection")] == [
        "faithfulness_correlation",
        "efficient_mprt",
        "auc",
        "top_k_intersection",
    ]


@pytest.mark.parametrize("name", [name for name in metrics.names() if metrics.get(name).quantus_class is not None])
def test_metadata_comes_from_quantus(name: str) -> None:
    metric = metrics.get(name)
    assert snake_case(metric.quantus_class.__name__) == name
    assert metric.higher_is_better == (metric.quantus_class.score_direction.value == "higher")


def test_localisation_is_one_when_the_attribution_lies_inside_the_mask(
    tiny_model: torch.nn.Module, small_data: ImageData
) -> None:
    inside = small_data.eval_masks.astype(np.float32)
    outside = (~small_data.eval_masks).astype(np.float32)
    assert _score("attribution_localisation", tiny_model, small_data, inside) == pytest.approx(np.ones(8))
    assert _score("attribution_localisation", tiny_model, small_data, outside) == pytest.approx(np.zeros(8))


def test_sparseness_ranks_a_point_above_a_uniform_map(tiny_model: torch.nn.Module, small_data: ImageData) -> None:
    point = np.zeros((8, 1, 32, 32), dtype=np.float32)
    point[:, :, 5, 5] = 1
    uniform = np.random.default_rng(0).uniform(0.9, 1.0, (8, 1, 32, 32)).astype(np.float32)
    assert (_score("sparseness", tiny_model, small_data, point) > 0.95).all()
    assert (_score("sparseness", tiny_model, small_data, uniform) < 0.05).all()


def test_constant_attributions_score_nan_instead_of_crashing(
    tiny_model: torch.nn.Module, small_data: ImageData
) -> None:
    attributions = np.random.default_rng(0).random((8, 1, 32, 32)).astype(np.float32)
    attributions[:3] = 0
    scores = _score("pixel_flipping", tiny_model, small_data, attributions)
    assert np.isnan(scores[:3]).all() and np.isfinite(scores[3:]).all()
    assert np.isnan(_score("sparseness", tiny_model, small_data, np.zeros_like(attributions))).all()


def test_scores_match_quantus_called_directly(tiny_model: torch.nn.Module, small_data: ImageData) -> None:
    # One value per channel and float64: no two features tie, so the tie policy xbench adds cannot change the order
    # (a 1-channel map broadcast to RGB ties each pixel's three channels, which Quantus alone orders arbitrarily).
    attributions = np.random.default_rng(1).random((8, 3, 32, 32))
    ours = _score("pixel_flipping", tiny_model, small_data, attributions, engine="quantus")
    metric = metrics.get("pixel_flipping")
    with quantus_numpy(QuantusNumpy(seed=0)):  # Quantus 0.6 on NumPy 2.4 needs its np.trapz
        reference = quantus.PixelFlipping(**metric.defaults(32), disable_warnings=True)(
            model=tiny_model,
            x_batch=small_data.eval_x.numpy(),
            y_batch=small_data.eval_y.numpy(),
            a_batch=attributions,
            device="cpu",
        )
    np.testing.assert_allclose(ours, np.asarray(reference), rtol=1e-6)


def test_the_quantus_engine_breaks_ties_by_the_same_policies() -> None:
    """Quantus's own argsort favours no documented order; under `index` the top-left goes first, under `random` an
    uninformative map (all tied but the centre) scores a top-left and a bottom-right model alike."""
    x = np.ones((4, 1, 16, 16), dtype=np.float32)
    y = np.zeros(4, dtype=np.int64)
    a = np.zeros((4, 1, 16, 16), dtype=np.float32)
    a[:, :, 8, 8] = 1.0
    metric = metrics.get("pixel_flipping")
    assert metric.orders_features and not metrics.get("sparseness").orders_features

    def auc(corner: str, ties: str) -> float:
        params = {"features_in_step": 16, "perturb_baseline": 0.0, "return_auc_per_sample": True, "ties": ties}
        scored = score(metric, params, QuadrantModel(corner), x, y, a, None, torch.device("cpu"), 0, engine="quantus")
        return float(scored.scores.mean())

    assert auc("bottom_right", "index") - auc("top_left", "index") > 3.0
    assert abs(auc("bottom_right", "random") - auc("top_left", "random")) < 0.2 * auc("bottom_right", "random")


def test_quantus_gets_its_numpy_only_within_the_call_and_numpy_is_untouched() -> None:
    """No global change: NumPy's global generator is neither seeded nor advanced by a Quantus metric, `np.trapz`
    exists only inside the call, and two calls with one seed draw the same perturbations."""
    import threading

    from quantus.functions import perturb_func

    had_trapz = hasattr(np, "trapz")  # NumPy 2.4 removed it
    _, keys, position, *_ = np.random.get_state()
    draws = []
    for _ in range(2):
        with quantus_numpy(QuantusNumpy(seed=7)) as view:
            assert perturb_func.np is not np and perturb_func.np.random is view.random
            draws.append(perturb_func.np.random.normal(size=5))
            assert perturb_func.np.trapz([0.0, 1.0]) == 0.5
        assert perturb_func.np is np
    np.testing.assert_array_equal(draws[0], draws[1])
    np.testing.assert_array_equal(draws[0], np.random.RandomState(7).normal(size=5))  # the stream seed(7) gave
    _, keys_after, position_after, *_ = np.random.get_state()
    assert np.array_equal(keys, keys_after) and position == position_after and hasattr(np, "trapz") == had_trapz
    # Two threads never see each other's view: the swap is held under a lock for the whole call.
    seen: list[bool] = []

    def call(seed: int) -> None:
        with quantus_numpy(QuantusNumpy(seed=seed)) as view:
            seen.append(perturb_func.np.random is view.random)

    threads = [threading.Thread(target=call, args=(s,)) for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [True] * 8
