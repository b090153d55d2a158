"""ROAD's linear imputation (Rong et al. 2022), solved on the device for a whole batch of images at once.

Every missing pixel must equal the weighted mean of its 8 neighbours inside the image (1/6 edge, 1/12 diagonal):
the sparse system Quantus 0.6 builds per image and solves with SciPy's `spsolve`. Times 12, the equations read

    A v = (D v - S v) on the missing pixels,  S = [1, 2, 1] x [1, 2, 1] (zero outside the image),  D = 12 w + 4

with w the neighbour-weight sum of each pixel (1 inside, less on the border). A is symmetric positive definite on the
missing pixels as long as each hole touches a known pixel, so conjugate gradients (CG) solve it. Plain CG needs about
as many iterations as the widest hole is wide: 20-60 for the scattered holes of a noisy saliency map, hundreds for the
blobs that Grad-CAM leaves on a 224 px image. Images with a hole wider than `WIDE_HOLE`, and those plain CG has not
solved after `plain_iterations`, are therefore solved with a multigrid V-cycle as preconditioner, which needs ~8
iterations whatever the hole size but costs ~5 plain iterations each.

Every stencil is a few shifted adds on preallocated buffers: PyTorch's CPU convolutions have no fast path for a fixed
3x3 or 4x4 kernel on one channel, and freshly allocated megabyte-sized temporaries page-fault on every iteration.
"""

from __future__ import annotations

import torch
from torch import Tensor

JACOBI_WEIGHT = 0.9  # damped-Jacobi smoother; 0.7 to 0.9 all give ~8 preconditioned iterations
COARSEST_SIDE = 8
COARSEST_SWEEPS = 4
WIDE_HOLE = 16  # a hole this wide takes plain CG more iterations than a multigrid solve costs


def _stencil(padded: Tensor, rows: Tensor, out: Tensor) -> Tensor:
    """out = S(interior of `padded`, zero-bordered) by separable shifted adds, `rows` as scratch."""
    torch.add(padded[..., :-2, :], padded[..., 2:, :], out=rows)
    rows.add_(padded[..., 1:-1, :], alpha=2)
    torch.add(rows[..., :-2], rows[..., 2:], out=out)
    return out.add_(rows[..., 1:-1], alpha=2)


class _Grid:
    """One level of the problem: the missing-pixel mask, the diagonal, and the buffers the stencil writes into."""

    def __init__(self, inside: Tensor) -> None:
        self.inside = inside  # (K, C, H, W), 1.0 on missing pixels
        count, channels, height, width = inside.shape
        self.padded = inside.new_zeros(count, channels, height + 2, width + 2)
        self.rows = inside.new_empty(count, channels, height, width + 2)
        self.interior = self.padded[..., 1:-1, 1:-1]
        ones = torch.nn.functional.pad(inside.new_ones(1, 1, height, width), (1, 1, 1, 1))
        unit_sum = _stencil(ones, inside.new_empty(1, 1, height, width + 2), inside.new_empty(1, 1, height, width))
        self.weight = unit_sum - 4  # 12 x the neighbour-weight sum
        self.diagonal = self.weight + 4
        self.smoother = JACOBI_WEIGHT / self.weight * inside  # omega / A's true diagonal, zero on known pixels

    def select(self, keep: Tensor) -> _Grid:
        return _Grid(self.inside[keep])

    def stencil(self, out: Tensor) -> Tensor:
        """out = S(self.interior)."""
        return _stencil(self.padded, self.rows, out)

    def apply(self, values: Tensor, out: Tensor) -> Tensor:
        """out = A values (values is zero on known pixels)."""
        if values.data_ptr() != self.interior.data_ptr():
            self.interior.copy_(values)
        self.stencil(out)
        return out.neg_().addcmul_(self.diagonal, values).mul_(self.inside)

    def residual(self, rhs: Tensor, values: Tensor, out: Tensor) -> Tensor:
        """out = rhs - A values."""
        self.apply(values, out)
        return torch.sub(rhs, out, out=out)


def _restrict(fine: Tensor) -> Tensor:
    """16 x the transpose of cell-centred bilinear interpolation (weights 1/4, 3/4, zero outside the image)."""
    count, channels, height, width = fine.shape
    pairs = fine.view(count, channels, height // 2, 2, width)
    even, odd = pairs[..., 0, :], pairs[..., 1, :]
    rows = torch.add(even, odd).mul_(3)
    rows[..., 1:, :].add_(odd[..., :-1, :])
    rows[..., :-1, :].add_(even[..., 1:, :])
    pairs = rows.view(count, channels, height // 2, width // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    coarse = torch.add(even, odd).mul_(3)
    coarse[..., 1:].add_(odd[..., :-1])
    coarse[..., :-1].add_(even[..., 1:])
    return coarse


def _prolong(coarse: Tensor) -> Tensor:
    """16 x cell-centred bilinear interpolation to twice the size, zero outside the image: the transpose of
    `_restrict`, which keeps the V-cycle symmetric, as CG needs of a preconditioner."""
    count, channels, height, width = coarse.shape
    wide = coarse.new_empty(count, channels, height, width, 2)
    even, odd = wide[..., 0], wide[..., 1]
    torch.mul(coarse, 3, out=even)
    even[..., 1:].add_(coarse[..., :-1])
    torch.mul(coarse, 3, out=odd)
    odd[..., :-1].add_(coarse[..., 1:])
    wide = wide.view(count, channels, height, 2 * width)
    tall = coarse.new_empty(count, channels, height, 2, 2 * width)
    even, odd = tall[..., 0, :], tall[..., 1, :]
    torch.mul(wide, 3, out=even)
    even[..., 1:, :].add_(wide[..., :-1, :])
    torch.mul(wide, 3, out=odd)
    odd[..., :-1, :].add_(wide[..., 1:, :])
    return tall.view(count, channels, 2 * height, 2 * width)


class _Multigrid:
    """A symmetric V-cycle (one damped-Jacobi sweep before and after, Jacobi sweeps on the coarsest grid, bilinear
    transfers); a coarse pixel is missing when its four fine pixels are."""

    def __init__(self, inside: Tensor) -> None:
        self.grids = [_Grid(inside)]  # its own buffers: CG's search direction lives in the solver's
        while all(side % 2 == 0 and side // 2 >= COARSEST_SIDE for side in inside.shape[-2:]):
            inside = -torch.nn.functional.max_pool2d(-inside, 2)
            self.grids.append(_Grid(inside))
        # the transfers' factor 16 each way, undone where the mask is applied anyway
        self.restricted_mask = [grid.inside / 16 for grid in self.grids]

    def select(self, keep: Tensor) -> _Multigrid:
        chosen = _Multigrid.__new__(_Multigrid)
        chosen.grids = [grid.select(keep) for grid in self.grids]
        chosen.restricted_mask = [mask[keep] for mask in self.restricted_mask]
        return chosen

    def __call__(self, residual: Tensor, level: int = 0) -> Tensor:
        grid = self.grids[level]
        correction = residual * grid.smoother
        scratch = torch.empty_like(residual)
        if level == len(self.grids) - 1:
            for _ in range(COARSEST_SWEEPS - 1):
                correction.addcmul_(grid.residual(residual, correction, scratch), grid.smoother)
            return correction
        coarse = _restrict(grid.residual(residual, correction, scratch)).mul_(self.restricted_mask[level + 1])
        correction.addcmul_(_prolong(self(coarse, level + 1)), self.restricted_mask[level])
        return correction.addcmul_(grid.residual(residual, correction, scratch), grid.smoother)


def _dot(a: Tensor, b: Tensor, scratch: Tensor) -> Tensor:
    return torch.mul(a, b, out=scratch).sum(dim=(1, 2, 3), keepdim=True)


def _conjugate_gradients(
    grid: _Grid, rhs: Tensor, solution: Tensor, target: Tensor, iterations: int,
    precondition: _Multigrid | None, check_every: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Runs (preconditioned) CG from `solution` (updated in place) until each system's squared residual norm is
    below `target`, for at most `iterations`; solved systems leave the batch once a quarter of it is solved, so the
    rest run on fewer images.

    Returns the solutions and which systems reached the target.
    """
    count = len(rhs)
    result, solved = solution, torch.zeros(count, dtype=torch.bool, device=rhs.device)
    active: Tensor | None = None  # indices into the batch once systems have left it
    scratch, step = torch.empty_like(rhs), torch.empty_like(rhs)
    residual = grid.residual(rhs, solution, torch.empty_like(rhs))
    preconditioned = precondition(residual) if precondition else residual
    direction = grid.interior  # CG's search direction lives where the stencil reads it
    direction.copy_(preconditioned)
    product = _dot(residual, preconditioned, scratch)  # without a preconditioner: the squared residual norm
    for iteration in range(iterations + 1):
        if iteration % check_every == 0 or iteration == iterations:
            norm = _dot(residual, residual, scratch) if precondition else product
            done = (norm <= target).view(-1)
            finished = int(done.sum())
            if finished == len(done) or iteration == iterations or finished * 4 >= len(done):
                chosen = slice(None) if active is None else active
                if active is not None:
                    result[active] = solution
                solved[chosen] = done
                if finished == len(done) or iteration == iterations:
                    break
                keep = ~done
                active = torch.arange(count, device=rhs.device)[keep] if active is None else active[keep]
                solution, residual, rhs, target, product = (t[keep] for t in (solution, residual, rhs, target, product))
                kept_direction = direction[keep]
                grid = grid.select(keep)
                if precondition is not None:
                    precondition = precondition.select(keep)
                direction = grid.interior
                direction.copy_(kept_direction)
                scratch, step = scratch[keep], step[keep]
        grid.apply(direction, step)
        alpha = product / _dot(direction, step, scratch).clamp_min(1e-30)
        solution.addcmul_(alpha, direction)
        residual.addcmul_(alpha, step, value=-1)
        preconditioned = precondition(residual) if precondition else residual
        new_product = _dot(residual, preconditioned, scratch)
        direction.mul_(new_product / product.clamp_min(1e-30)).add_(preconditioned)
        product = new_product
    return result, solved


def _wide_holes(inside: Tensor, side: int = WIDE_HOLE) -> Tensor:
    """(K,) whether an image has a `side` x `side` window (at half-window steps) with no known pixel."""
    if min(inside.shape[-2:]) < side:
        return torch.zeros(len(inside), dtype=torch.bool, device=inside.device)
    known = 1 - inside[:, :1]
    return torch.nn.functional.max_pool2d(known, side, stride=side // 2).flatten(1).amin(1) == 0


def impute(
    x: Tensor, missing: Tensor, iterations: int = 1000, tolerance: float = 1e-4, plain_iterations: int = 96,
    check_every: int = 2, multigrid: bool = True,
) -> Tensor:  # fmt: skip
    """x with its `missing` pixels (bool, x's shape) replaced by the solution of ROAD's linear imputation.

    Solved to a residual below `tolerance` x the norm of each image's right-hand side. Images with a wide hole go
    straight to multigrid-preconditioned CG; the others get plain CG first, and multigrid only if `plain_iterations`
    were not enough (a multigrid solve costs 40-60 plain iterations; scattered holes at 95 % take plain CG ~60).
    `multigrid=False` solves everything with plain CG (for comparison). Raises if an image is not solved in
    `iterations`.
    """
    inside = missing.to(x.dtype)
    known = x * (1 - inside)
    grid = _Grid(inside)
    grid.interior.copy_(known)
    rhs = grid.stencil(torch.empty_like(x)).sub_(known, alpha=4).mul_(inside)
    solution = (rhs / grid.weight).mul_(inside)  # start from the mean of the known neighbours
    target = (tolerance**2) * _dot(rhs, rhs, torch.empty_like(x)).clamp_min(1e-30)
    if not multigrid:
        plain_iterations = iterations
    hard = _wide_holes(inside) if multigrid else torch.zeros(len(x), dtype=torch.bool, device=x.device)
    if not bool(hard.any()):
        solution, solved = _conjugate_gradients(
            grid, rhs, solution, target, min(plain_iterations, iterations), None, check_every
        )
        hard = ~solved
    elif not bool(hard.all()):
        easy = ~hard
        solution[easy], solved = _conjugate_gradients(
            grid.select(easy), rhs[easy], solution[easy], target[easy], min(plain_iterations, iterations), None,
            check_every,
        )  # fmt: skip
        hard[easy] = ~solved
    if bool(hard.any()):
        everything = bool(hard.all())
        hard_grid = grid if everything else grid.select(hard)
        solved_hard, solved = _conjugate_gradients(
            hard_grid, rhs[hard], solution[hard], target[hard], iterations, _Multigrid(hard_grid.inside), check_every
        )
        solution[hard] = solved_hard
        if not bool(solved.all()):
            raise RuntimeError(
                f"ROAD imputation did not reach a relative residual of {tolerance:g} in {iterations} iterations "
                f"for {int((~solved).sum())} image(s)"
            )
    return solution.add_(known)  # the solution is zero on known pixels
