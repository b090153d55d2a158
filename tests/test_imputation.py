import threading

import numpy as np
import pytest
import torch
from quantus.functions.perturb_func import noisy_linear_imputation

import xbench.measure.imputation
from xbench.measure.imputation import (
    _Arena,
    _conjugate_gradients,
    _Grid,
    _Multigrid,
    _prolong,
    _restrict,
    _wide_holes,
    impute,
)


def _scattered(images: int, size: int, share: float, seed: int = 0) -> torch.Tensor:
    """Missing pixels at random, as a noisy saliency map leaves them."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(images, size * size, generator=generator)
    missing = torch.argsort(torch.argsort(scores, 1), 1) < int(size * size * share)
    return missing.view(images, 1, size, size)


def _blob(images: int, size: int, share: float, seed: int = 0) -> torch.Tensor:
    """The top `share` of a smooth map: one or two large holes, as Grad-CAM leaves them."""
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(
        torch.rand(images, 1, 3, 3, generator=generator), size=(size, size), mode="bicubic"
    )
    flat = smooth.flatten(1)
    missing = torch.argsort(torch.argsort(-flat, 1), 1) < int(size * size * share)
    return missing.view(images, 1, size, size)


def _quantus(x: np.ndarray, missing: torch.Tensor) -> np.ndarray:
    flat = missing[:, 0].flatten(1).numpy()
    return np.stack([noisy_linear_imputation(x[i], np.flatnonzero(flat[i]), noise=0.0) for i in range(len(x))])


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("multigrid", [True, False])
@pytest.mark.parametrize("holes", [_scattered, _blob])
@pytest.mark.parametrize("share", [0.2, 0.9])
def test_impute_solves_quantus_sparse_system(holes, share, multigrid, compiled) -> None:
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32))
    missing = holes(3, 32, share)
    ours = impute(
        torch.as_tensor(x), missing.expand(-1, 3, -1, -1), tolerance=1e-10, multigrid=multigrid, compiled=compiled
    ).numpy()
    np.testing.assert_allclose(ours, _quantus(x, missing), atol=1e-6)


def test_compiled_and_batched_solvers_agree_in_float32_on_roads_workload() -> None:
    """The compiled CPU solver and the batched one (what CUDA runs) on 10 shares of scattered holes, in float32:
    both within the tolerance's reach of a tight solve, and each image in its row whatever order they ran in."""
    shares = [0.05 + 0.1 * step for step in range(10)]
    missing = torch.cat([_scattered(4, 48, share, seed=step) for step, share in enumerate(shares)])
    x = torch.randn(missing.shape, generator=torch.Generator().manual_seed(0))
    tight = impute(x.double(), missing, tolerance=1e-9, compiled=False).float()
    for compiled in (True, False):
        result = impute(x, missing, compiled=compiled)
        assert torch.equal(result[~missing], x[~missing])
        assert (result - tight).abs().max() < 1e-2  # relative residual 1e-4: pixel errors of a few 1e-3
        assert (result - x).abs()[missing].mean() > 0.5  # imputed, not the original values


def test_compiled_solver_reports_images_it_did_not_solve() -> None:
    missing = _scattered(2, 32, 0.95)
    with pytest.raises(RuntimeError, match="2 image"):
        impute(torch.randn(missing.shape), missing, iterations=3, multigrid=False)


def test_blobs_go_to_multigrid_and_scattered_holes_do_not() -> None:
    assert _wide_holes(_blob(4, 64, 0.5)).all()
    assert not _wide_holes(_scattered(4, 64, 0.9)).any()


@pytest.mark.parametrize("size", [64, 60])  # tiles of 8 px, and the max-pool route for other sizes
def test_wide_hole_test_finds_one_empty_window(size: int) -> None:
    missing = torch.zeros(3, 2, size, size, dtype=torch.bool)
    missing[1, :, 8:24, 16:32] = True  # exactly one 16 x 16 window, on the 8 px grid
    missing[2, :, 9:24, 16:32] = True  # one row short of it
    assert _wide_holes(missing).tolist() == [False, True, False]


def test_arena_buffers_are_reused_between_calls_and_results_are_not_arena_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Arena, "_kept", threading.local())  # no arena left by earlier tests
    like = torch.zeros(1)
    with _Arena(like) as arena:
        arena.empty(3, 5)  # the first call has no arena yet: allocated as usual, then kept for the next call
        arena.empty(2)
    with _Arena(like) as arena:
        first = arena.empty(3, 5)
        assert first.data_ptr() == arena.storage.data_ptr()
        assert arena.empty(2).data_ptr() == first.data_ptr() + 15 * first.element_size()
        storage = arena.storage
        arena.empty(100)  # past the end: allocated as usual, and the arena grows for the next call
    with _Arena(like) as arena:
        assert arena.storage.numel() == 117
        assert arena.storage.data_ptr() != storage.data_ptr()

    x, missing = torch.randn(4, 1, 16, 16), _scattered(4, 16, 0.5)
    result = impute(x, missing)
    kept = result.clone()
    impute(torch.randn(4, 1, 16, 16), _scattered(4, 16, 0.7, seed=1))
    assert torch.equal(result, kept)


def test_arena_beyond_the_limit_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xbench.measure.imputation, "ARENA_BYTES", 64)
    monkeypatch.setattr(_Arena, "_kept", threading.local())
    like = torch.zeros(1, dtype=torch.float64)
    with _Arena(like) as arena:
        arena.empty(100)
    with _Arena(like) as arena:
        assert arena.storage.numel() == 0


def test_multigrid_preconditioner_solves_wide_holes_in_few_iterations() -> None:
    inside = _blob(4, 64, 0.6).expand(-1, 2, -1, -1).double()
    x = torch.randn(inside.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grid = _Grid(inside)
    grid.interior.copy_(x * (1 - inside))
    rhs = grid.stencil(torch.empty_like(x)).sub_(grid.interior, alpha=4).mul_(inside)
    target = 1e-8 * (rhs * rhs).sum(dim=(1, 2, 3), keepdim=True)

    def solved_in(iterations: int, precondition: _Multigrid | None) -> bool:
        _, solved = _conjugate_gradients(
            _Grid(inside), rhs, torch.zeros_like(x), target, iterations, precondition, check_every=1
        )
        return bool(solved.all())

    assert solved_in(15, _Multigrid(inside))
    assert not solved_in(45, None)  # plain CG needs about as many iterations as the hole is wide


def test_v_cycle_is_symmetric_as_cg_needs() -> None:
    generator = torch.Generator().manual_seed(1)
    fine, coarse = torch.randn(2, 3, 16, 12, generator=generator), torch.randn(2, 3, 8, 6, generator=generator)
    assert torch.allclose((_prolong(coarse) * fine).sum(), (coarse * _restrict(fine)).sum(), rtol=1e-5)

    inside = _blob(2, 32, 0.7).double()
    multigrid = _Multigrid(inside)
    first, second = (torch.randn(inside.shape, dtype=torch.float64, generator=generator) * inside for _ in range(2))
    left, right = (multigrid(first.clone()) * second).sum(), (first * multigrid(second.clone())).sum()
    assert torch.allclose(left, right, rtol=1e-10)
    assert (multigrid(first.clone()) * first).sum() > 0


def test_known_pixels_are_kept_and_a_fully_missing_image_is_zero() -> None:
    x = torch.randn(2, 1, 24, 24)
    missing = _scattered(2, 24, 0.5)
    missing[1] = True
    result = impute(x, missing)
    assert torch.equal(result[~missing], x[~missing])
    assert torch.equal(result[1], torch.zeros_like(result[1]))
