"""The torch engine against Quantus 0.6: same model, inputs, explanations and (replayed) random draws."""

import subprocess
import sys

import numpy as np
import pytest
import quantus
import torch

from tests.conftest import QuadrantModel
from xbench.core.errors import XbenchInputError
from xbench.measure.engine import EngineContext, PassCounter, engine_metrics, run_metric
from xbench.measure.operators import descending_order, ranked
from xbench.measure.quantus_numpy import QuantusNumpy, quantus_numpy
from xbench.measure.verify import pass_times, random_inputs, verification_params, verify_all, verify_metric

CPU = torch.device("cpu")
IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def verified() -> dict[str, object]:
    # Scores only (timed=False): the floor and the engine's timing have their own test below.
    results, _ = verify_all("resnet10t", IMAGE_SIZE, images=4, seed=0, device=CPU, cases=["random"], timed=False)
    return {result.metric: result for result in results}


ORDERING = [name for name in engine_metrics.names() if "ties" in engine_metrics.get(name).parameters()]


@pytest.fixture(scope="module")
def verified_with_ties() -> dict[tuple[str, str], object]:
    """Tied attributions need maps of some resolution: 64 px gives resnet10t's Grad-CAM a 2x2 map to upsample."""
    results, _ = verify_all(  # two images: Quantus's reference is most of the fast lane's time otherwise
        "resnet10t", 64, images=2, seed=0, device=CPU, names=ORDERING, cases=["gradcam", "flat_background"], timed=False
    )
    return {(result.metric, result.case): result for result in results}


@pytest.mark.parametrize("case", ["gradcam", "flat_background"])
@pytest.mark.parametrize("name", ORDERING)
def test_engine_matches_its_reference_on_tied_attributions(
    name: str, case: str, verified_with_ties: dict[tuple[str, str], object]
) -> None:
    result = verified_with_ties[(name, case)]
    assert result.tie_share > 0.5, result  # most values are tied: the order of ties decides the score
    assert result.max_abs_diff <= 1e-4, result


def test_the_ordering_metrics_are_the_ones_with_a_tie_policy() -> None:
    assert set(ORDERING) == {
        "pixel_flipping",
        "region_perturbation",
        "selectivity",
        "monotonicity_correlation",
        "irof",
        "road",
        "insertion",
        "deletion",
    }


def test_random_ties_favour_no_position_and_index_ties_the_top_left() -> None:
    """All-tied rows: with `index` the top-left feature comes first; with `random` every position is as likely to."""
    context = EngineContext(torch.nn.Identity(), CPU, seed=3)
    tied = torch.zeros(2000, 64)
    first_index = ranked(tied, "index", context).argmin(dim=1)
    first_random = ranked(tied, "random", context).argmin(dim=1)
    assert (first_index == 0).all()
    counts = torch.bincount(first_random, minlength=64).double()
    assert counts.min() > 0 and abs(first_random.double().mean().item() - 31.5) < 2.0  # uniform: mean 31.5, se 0.41
    # distinct values keep their order under either policy; only the ties are shuffled
    values = torch.tensor([[3.0, 1.0, 2.0, 1.0, 0.0]])
    assert ranked(values, "random", context)[0, [0, 2, 4]].tolist() == [0, 1, 4]
    assert sorted(ranked(values, "random", context)[0, [1, 3]].tolist()) == [2, 3]


def test_pixel_flipping_with_random_ties_treats_both_corners_alike() -> None:
    """A map with no information (all tied but one pixel in the centre) scored for a model that looks at the top-left
    and one that looks at the bottom-right: `index` flips the top-left first and so calls the first model's map far
    more faithful; `random` scores both alike."""
    x = torch.ones(4, 1, 16, 16)
    y = torch.zeros(4, dtype=torch.long)
    a = torch.zeros(4, 1, 16, 16)
    a[:, :, 8, 8] = 1.0
    params = {"features_in_step": 16, "return_auc_per_sample": True, "perturb_baseline": 0.0}

    def auc(corner: str, ties: str) -> float:
        context = EngineContext(QuadrantModel(corner), CPU, seed=0)
        return run_metric("pixel_flipping", {**params, "ties": ties}, context, x.numpy(), y.numpy(), a.numpy()).mean()

    assert auc("bottom_right", "index") - auc("top_left", "index") > 3.0
    assert abs(auc("bottom_right", "random") - auc("top_left", "random")) < 0.2 * auc("bottom_right", "random")


@pytest.mark.parametrize("name", engine_metrics.names())
def test_engine_matches_its_reference_within_1e_4(name: str, verified: dict[str, object]) -> None:
    result = verified[name]
    assert result.max_abs_diff <= 1e-4, result
    assert result.forward_passes > 0 and result.engine_seconds > 0


def test_every_engine_metric_is_verified(verified: dict[str, object]) -> None:
    assert (
        set(verified)
        == set(engine_metrics.names())
        >= {
            "faithfulness_correlation",
            "pixel_flipping",
            "region_perturbation",
            "monotonicity_correlation",
            "max_sensitivity",
            "avg_sensitivity",
            "selectivity",
            "irof",
            "road",
            "insertion",
            "deletion",
            "average_drop",
            "increase_in_confidence",
            "average_gain",
        }
    )


def test_pixel_flipping_matches_quantus_with_one_channel_attributions_when_steps_hold_whole_pixels() -> None:
    """With features_in_step a multiple of C, how ties between a pixel's channels are broken cannot matter."""
    model, x, y, a = random_inputs("resnet10t", 48, 4, seed=1)
    a = a[:, :1]
    params = {"features_in_step": 3 * 64, "return_auc_per_sample": True}  # Quantus also needs it to divide H*W
    with quantus_numpy(QuantusNumpy(seed=0)):  # Quantus 0.6 on NumPy 2.4 needs its np.trapz
        reference = quantus.PixelFlipping(**params, disable_warnings=True)(
            model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu"
        )
    ours = run_metric("pixel_flipping", params, EngineContext(model, CPU, batch_size=64), x, y, a)
    np.testing.assert_allclose(ours, np.asarray(reference), atol=1e-4)


def test_pass_counts_are_exact() -> None:
    model, x, y, a = random_inputs("resnet10t", IMAGE_SIZE, 4, seed=0)
    context = EngineContext(model, CPU, batch_size=7)  # an odd batch size: blocks are re-packed across steps
    run_metric("pixel_flipping", {"features_in_step": 3 * 128}, context, x, y, a)
    assert (context.counter.forward, context.counter.backward) == (4 * 8, 0)
    context = EngineContext(model, CPU, batch_size=16, explain=lambda xb, yb: _saliency(model, xb, yb))
    run_metric("max_sensitivity", {"nr_samples": 5}, context, x, y, a[:, :1])
    assert (context.counter.forward, context.counter.backward) == (4 * 5, 4 * 5)


def _saliency(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    model(x).gather(1, y.view(-1, 1)).sum().backward()
    return x.grad.abs().amax(1, keepdim=True)


def test_the_engine_draws_are_reproducible_from_the_seed() -> None:
    model, x, y, a = random_inputs("resnet10t", IMAGE_SIZE, 4, seed=0)
    params = {"nr_runs": 10, "subset_size": 64}

    def run(seed: int) -> np.ndarray:
        return run_metric("faithfulness_correlation", params, EngineContext(model, CPU, seed=seed), x, y, a)

    assert np.array_equal(run(3), run(3)) and not np.array_equal(run(3), run(4))


def test_logits_repack_blocks_into_batches() -> None:
    model, x, *_ = random_inputs("resnet10t", IMAGE_SIZE, 5, seed=0)
    xt = torch.as_tensor(x)
    context = EngineContext(model, CPU, batch_size=3)
    blocks = iter([(xt[:2], None), (xt[2:3], None), (xt[3:], None)])
    with torch.no_grad():
        torch.testing.assert_close(context.logits(blocks), model(xt), atol=1e-5, rtol=1e-5)


def test_logits_split_a_known_total_into_equal_batches() -> None:
    model, x, *_ = random_inputs("resnet10t", IMAGE_SIZE, 5, seed=0)
    xt = torch.as_tensor(x)
    context = EngineContext(model, CPU, batch_size=4)
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    with torch.no_grad():
        unbalanced = context.logits(iter([(xt, None)]))
        balanced = context.logits(iter([(xt[:2], None), (xt[2:], None)]), total=5)
    handle.remove()
    assert sizes == [4, 1, 3, 2]
    torch.testing.assert_close(balanced, unbalanced, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_descending_order_is_a_stable_descending_argsort(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(-3, 4, (4, 1000), generator=generator).to(dtype) / 2  # many ties, negatives
    values[0, :6] = torch.tensor([-0.0, 0.0, float("inf"), -float("inf"), 1e-40, -1e-40])  # signed zeros, denormals
    values[1] = torch.randn(1000, generator=generator).to(dtype)
    expected = torch.tensor(np.argsort(-values.numpy(), axis=1, kind="stable"))
    assert torch.equal(descending_order(values), expected)


def test_road_loads_its_compiled_solver_before_it_is_timed() -> None:
    """The runner and verify call `prepare_metric` outside the timer; for ROAD on a CPU it loads the compiled
    imputation for float32 images, which would otherwise land in the first cell's score_seconds. In a fresh
    process, so that no earlier test has loaded it."""
    script = (
        "import numba, torch\n"
        "from xbench.measure._imputation_kernel import solve_images\n"
        "from xbench.measure.engine import prepare_metric\n"
        "assert not solve_images.signatures\n"
        "prepare_metric('pixel_flipping', torch.device('cpu'))\n"  # nothing to prepare
        "assert not solve_images.signatures\n"
        "prepare_metric('road', torch.device('cpu'))\n"
        "assert [s[0].dtype for s in solve_images.signatures] == [numba.float32]\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_unsupported_parameters_name_the_way_out() -> None:
    model, x, y, a = random_inputs("resnet10t", IMAGE_SIZE, 2, seed=0)
    with pytest.raises(XbenchInputError, match="engine: quantus"):
        run_metric("pixel_flipping", {"perturb_func_kwargs": {}}, EngineContext(model, CPU), x, y, a)


def test_pass_counter_follows_deep_copies_of_the_model() -> None:
    """Guided backprop and DeepLIFT explain a deep copy of the model; its passes must still be counted."""
    import copy

    model = torch.nn.Linear(4, 2)
    with PassCounter(model) as counter:
        copy.deepcopy(model)(torch.zeros(3, 4, requires_grad=True)).sum().backward()
    assert (counter.forward, counter.backward) == (3, 3)


def test_verification_reports_the_floor_and_both_times() -> None:
    model, x, y, a = random_inputs("resnet10t", IMAGE_SIZE, 2, seed=0)
    times = pass_times(model, tuple(x.shape[1:]), CPU, batch_sizes=(8,), repeats=1)
    params = verification_params(IMAGE_SIZE)["selectivity"]
    result = verify_metric("selectivity", model, x, y, a, CPU, times, params, repeats=1)
    assert result.forward_passes == 2 * 64  # 8x8 patches of 4 px
    assert 0 < result.floor_seconds < float("inf")
    assert result.as_dict()["floor_ratio"] == pytest.approx(result.engine_seconds / result.floor_seconds)


def test_cumulative_metrics_refuse_baselines_quantus_recomputes_per_step() -> None:
    model, x, y, a = random_inputs("resnet10t", IMAGE_SIZE, 2, seed=0)
    with pytest.raises(XbenchInputError, match="engine: quantus"):
        run_metric("pixel_flipping", {"perturb_baseline": "mean"}, EngineContext(model, CPU), x, y, a)


def test_engine_halves_its_batch_on_out_of_memory_and_keeps_every_image_in_order() -> None:
    from tests.test_perf import FitsBatchesUpTo

    model = FitsBatchesUpTo(limit=5)
    context = EngineContext(model=model, device=torch.device("cpu"), batch_size=16)
    images = torch.randn(20, 3, 4, 4)
    logits = context.logits([(images, None)], total=20)
    expected = model.linear(images.mean(dim=(2, 3)))
    assert context.batch_size == 4  # 16 -> 8 -> 4, the first that fits, kept for later calls
    torch.testing.assert_close(logits, expected.detach())
    assert max(model.seen[-5:]) <= 4 and sum(s for s in model.seen if s <= 5) == 20
