"""ROAD's linear imputation (Rong et al. 2022), solved on the device for a whole batch of images at once.

Every missing pixel must equal the weighted mean of its 8 neighbours inside the image (1/6 edge, 1/12 diagonal):
the sparse system Quantus 0.6 builds per image and solves with SciPy's `spsolve`. Times 12, the equations read

    A v = (D v - S v) on the missing pixels,  S = [1, 2, 1] x [1, 2, 1] (zero outside the image),  D = 12 w + 4

with w the neighbour-weight sum of each pixel (1 inside, less on the border). A is symmetric positive definite on the
missing pixels as long as each hole touches a known pixel, so conjugate gradients (CG) solve it. Plain CG needs about
as many iterations as the widest hole is wide: 20-60 for the scattered holes of a noisy saliency map, hundreds for the
blobs that Grad-CAM leaves on a 224 px image.

Two solvers, one definition (the tests hold both to Quantus's `spsolve`):

- On a CPU, plain CG compiled with Numba (`xbench.measure._imputation_kernel`): one image per thread, each iteration
  three fused loops over an image that stays in cache. PyTorch would run ~13 passes over memory per iteration, each with
  a few microseconds of dispatch.
- On CUDA (and with `compiled=False`), a batched PyTorch solver. Images with a hole wider than `WIDE_HOLE`, and
  those plain CG has not solved after `plain_iterations`, get a multigrid V-cycle as preconditioner, which needs ~8
  iterations whatever the hole size but costs ~5 plain iterations each. Every stencil is a few shifted adds
  (PyTorch's CPU convolutions have no fast path for a fixed 3x3 or 4x4 kernel on one channel); CG's vectors live in
  zero-bordered buffers (`_Bordered`), so that each update is one contiguous pass and the stencil reads the search
  direction in place. The buffers come from an `_Arena` kept between calls: freshly allocated megabyte-sized buffers
  page-fault on first touch, which on a virtual machine costs as much as the arithmetic.

Figures (2-core CPU, 80 images as ROAD makes them, `benchmarks/test_imputation.py`): scattered holes at 64 px 2.7 ms
compiled vs 10 ms batched; blobs at 224 px 0.25 s compiled plain CG vs 0.6 s batched multigrid.

Over 450 lines, one purpose: one solver (the system, its preconditioner, CG and its checks against SciPy's
reference) whose parts are only correct together.
"""

from __future__ import annotations

import copy
import functools
import math
import threading

import torch
from torch import Tensor

JACOBI_WEIGHT = 0.9  # damped-Jacobi smoother; 0.7 to 0.9 all give ~8 preconditioned iterations
COARSEST_SIDE = 8
COARSEST_SWEEPS = 4
WIDE_HOLE = 16  # a hole this wide takes plain CG more iterations than a multigrid solve costs
ARENA_BYTES = 64 << 20  # kept between calls, per thread, device and dtype


class _Arena:
    """Buffers carved from one flat tensor that is kept between calls (per thread, device and dtype, up to
    `ARENA_BYTES`), so that a solve does not map fresh memory for its megabyte-sized buffers: on a virtual machine
    the page faults on fresh buffers cost as much as the arithmetic. Buffers from the arena are reused by the next
    call and must not leave it; what does not fit is allocated as usual, and the arena grows to fit next time."""

    _kept = threading.local()

    def __init__(self, like: Tensor) -> None:
        self.key = (like.device, like.dtype)
        self.kept: dict[tuple[torch.device, torch.dtype], Tensor] = self._kept.__dict__.setdefault("buffers", {})
        self.storage = self.kept.pop(self.key, None)
        if self.storage is None:
            self.storage = like.new_empty(0)
        self.used = 0

    def empty(self, *shape: int) -> Tensor:
        size = math.prod(shape)
        self.used += size
        if self.used <= self.storage.numel():
            return self.storage[self.used - size : self.used].view(shape)
        return self.storage.new_empty(shape)

    def __enter__(self) -> _Arena:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.used * self.storage.element_size() > ARENA_BYTES:
            return  # too big to keep: freed with this call
        if self.used > self.storage.numel():
            self.storage = self.storage.new_empty(self.used)
        self.kept[self.key] = self.storage


def _stencil(padded: Tensor, rows: Tensor, out: Tensor) -> Tensor:
    """out = S(interior of `padded`, zero-bordered) by separable shifted adds, `rows` as scratch."""
    torch.add(padded[..., :-2, :], padded[..., 2:, :], out=rows)
    rows.add_(padded[..., 1:-1, :], alpha=2)
    torch.add(rows[..., :-2], rows[..., 2:], out=out)
    return out.add_(rows[..., 1:-1], alpha=2)


def _with_zero_border(buffer: Tensor) -> Tensor:
    """`buffer` with its outermost rows and columns zeroed: cheaper than zeroing all of it before a full write."""
    height, width = buffer.shape[-2:]
    buffer[..., :: height - 1, :].zero_()  # the first and last rows, as one strided view
    buffer[..., :: width - 1].zero_()
    return buffer


def _bordered(values: Tensor, arena: _Arena) -> Tensor:
    """`values` (K, C, H, W) in a zero-bordered (K, C, H+2, W+2) buffer."""
    count, channels, height, width = values.shape
    buffer = _with_zero_border(arena.empty(count, channels, height + 2, width + 2))
    buffer[..., 1:-1, 1:-1] = values
    return buffer


class _Grid:
    """One level of the problem: the missing-pixel mask, the diagonal, and the buffers the stencil writes into."""

    def __init__(self, inside: Tensor, weight: Tensor | None = None, arena: _Arena | None = None) -> None:
        self.inside = inside  # (K, C, H, W), 1.0 on missing pixels
        count, channels, height, width = inside.shape
        empty = arena.empty if arena is not None else inside.new_empty
        self.padded = _with_zero_border(empty(count, channels, height + 2, width + 2))
        self.rows = empty(count, channels, height, width + 2)
        self.interior = self.padded[..., 1:-1, 1:-1]
        if weight is None:
            ones = torch.nn.functional.pad(inside.new_ones(1, 1, height, width), (1, 1, 1, 1))
            scratch = inside.new_empty(1, 1, height, width + 2)
            weight = _stencil(ones, scratch, inside.new_empty(1, 1, height, width)).sub_(4)
        self.weight = weight  # 12 x the neighbour-weight sum
        self.diagonal = self.weight + 4

    @functools.cached_property
    def smoother(self) -> Tensor:
        """omega / A's true diagonal on missing pixels, zero on known ones (multigrid levels only)."""
        return JACOBI_WEIGHT / self.weight * self.inside

    def select(self, keep: Tensor | slice) -> _Grid:
        """The systems at `keep`: indices or a boolean mask (copies), or a slice (views of these buffers)."""
        if not isinstance(keep, slice):
            return _Grid(self.inside[keep], self.weight)
        chosen = copy.copy(self)
        chosen.inside, chosen.padded, chosen.rows = self.inside[keep], self.padded[keep], self.rows[keep]
        chosen.interior = chosen.padded[..., 1:-1, 1:-1]
        if "smoother" in self.__dict__:
            chosen.__dict__["smoother"] = self.smoother[keep]
        return chosen

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

    def select(self, keep: Tensor | slice) -> _Multigrid:
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


class _Bordered:
    """CG's vectors and operator in one layout: zero-bordered (K, C, H+2, W+2) buffers, contiguous, so that every
    update and dot product is one pass over memory and the stencil reads the search direction in place.

    `prefix(m)` narrows every buffer to its first m systems: views, so dropping solved systems copies nothing."""

    def __init__(
        self, grid: _Grid, rhs: Tensor, solution: Tensor, target: Tensor, arena: _Arena, preconditioned: bool
    ) -> None:
        """The systems A solution = rhs, starting from `solution`."""
        self.arena, self.diagonal, self.target = arena, _bordered(grid.diagonal, arena), target
        self.negative_inside = _bordered(grid.inside, arena).neg_()
        self.solution = _bordered(solution, arena)
        self._work_buffers(preconditioned)
        self.direction.copy_(self.solution)
        self.residual = _bordered(rhs, arena).sub_(self.apply())

    def _work_buffers(self, preconditioned: bool) -> None:
        shape = self.solution.shape
        self.direction = self.arena.empty(*shape)
        self.step = _with_zero_border(self.arena.empty(*shape))  # the stencil writes only its interior
        self.scratch = self.arena.empty(*shape)
        self.rows = self.arena.empty(*shape[:-2], shape[-2] - 2, shape[-1])
        self.preconditioned = _with_zero_border(self.arena.empty(*shape)) if preconditioned else None
        self._views()

    def _views(self) -> None:
        """The stencil's shifted views, made once: slicing costs as much as a small update."""
        direction, rows = self.direction, self.rows
        self.shifted = (
            direction[..., :-2, :],
            direction[..., 2:, :],
            direction[..., 1:-1, :],
            rows[..., :-2],
            rows[..., 2:],
            rows[..., 1:-1],
        )
        self.step_interior = self.step[..., 1:-1, 1:-1]

    def apply(self) -> Tensor:
        """step = A direction."""
        up, down, middle, left, right, centre = self.shifted
        torch.add(up, down, out=self.rows).add_(middle, alpha=2)
        torch.add(left, right, out=self.step_interior).add_(centre, alpha=2)
        return self.step.mul_(self.negative_inside).addcmul_(self.diagonal, self.direction)

    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        return _dot(a, b, self.scratch)

    def squared_norm(self, a: Tensor) -> Tensor:
        """(K, 1, 1, 1) sum of squares: one pass, without `dot`'s product buffer (2-3x faster on a CPU)."""
        return torch.linalg.vector_norm(a, dim=(1, 2, 3), keepdim=True).square_()

    @staticmethod
    def interior(values: Tensor) -> Tensor:
        return values[..., 1:-1, 1:-1]

    def select(self, keep: Tensor) -> _Bordered:
        """The systems at indices `keep`, copied into new buffers, the search direction carried over."""
        chosen = _Bordered.__new__(_Bordered)
        chosen.arena, chosen.diagonal, chosen.target = self.arena, self.diagonal, self.target.index_select(0, keep)
        for name in ("negative_inside", "solution", "residual"):
            values = getattr(self, name)
            out = self.arena.empty(len(keep), *values.shape[1:])
            setattr(chosen, name, torch.index_select(values, 0, keep, out=out))
        chosen._work_buffers(self.preconditioned is not None)
        torch.index_select(self.direction, 0, keep, out=chosen.direction)
        return chosen

    def prefix(self, count: int) -> _Bordered:
        """The first `count` systems, as views of these buffers."""
        chosen = _Bordered.__new__(_Bordered)
        chosen.arena, chosen.diagonal = self.arena, self.diagonal
        for name in (
            "target",
            "negative_inside",
            "solution",
            "residual",
            "direction",
            "step",
            "scratch",
            "rows",
            "preconditioned",
        ):
            values = getattr(self, name)
            setattr(chosen, name, None if values is None else values[:count])
        chosen._views()
        return chosen


def _conjugate_gradients(
    grid: _Grid,
    rhs: Tensor,
    solution: Tensor,
    target: Tensor,
    iterations: int,
    precondition: _Multigrid | None,
    check_every: int,
    arena: _Arena | None = None,
) -> tuple[Tensor, Tensor]:
    """Runs (preconditioned) CG from `solution` until each system's squared residual norm is below `target`, for at
    most `iterations`.

    Solved systems leave the batch two ways. When every system after them is solved too, the batch shrinks to the
    prefix that ends with the last unsolved system: a view, free. Ordered hardest first (as `impute` orders them),
    that is most of them, for ~7 % more work than stopping each system on its own. When a quarter of the prefix is
    solved all the same, the unsolved systems are copied into a smaller batch. A solved system that stays in the
    batch goes on iterating and is judged again at the next check.

    Returns the solutions (written into `solution`) and which systems reached the target.
    """
    segment = system = _Bordered(grid, rhs, solution, target, arena or _Arena(rhs), precondition is not None)
    segment_index: Tensor | None = None  # where the segment's systems are in the batch, once copied out of it

    def write_back() -> None:
        solution[slice(None) if segment_index is None else segment_index] = segment.interior(segment.solution)

    def preconditioned(system: _Bordered, precondition: _Multigrid | None) -> Tensor:
        if precondition is None:
            return system.residual
        assert system.preconditioned is not None
        system.interior(system.preconditioned).copy_(precondition(system.interior(system.residual)))
        return system.preconditioned

    system.direction.copy_(preconditioned(system, precondition))
    product = system.dot(system.residual, system.direction) if precondition else system.squared_norm(system.residual)
    for iteration in range(iterations + 1):
        if iteration % check_every == 0 or iteration == iterations:
            norm = system.squared_norm(system.residual) if precondition else product
            unsolved = (norm > system.target).view(-1).nonzero().view(-1)
            if len(unsolved) == 0 or iteration == iterations:
                break
            active = int(unsolved[-1]) + 1
            if (active - len(unsolved)) * 4 >= active:
                write_back()
                segment = system = system.select(unsolved)
                segment_index = unsolved if segment_index is None else segment_index.index_select(0, unsolved)
                product = product.index_select(0, unsolved)
                if precondition is not None:
                    precondition = precondition.select(unsolved)
            elif active < len(product):
                system, product = system.prefix(active), product[:active]
                if precondition is not None:
                    precondition = precondition.select(slice(0, active))
        step = system.apply()
        alpha = product / system.dot(system.direction, step).clamp_min(1e-30)
        system.solution.addcmul_(alpha, system.direction)
        system.residual.addcmul_(alpha, step, value=-1)
        search = preconditioned(system, precondition)
        new_product = system.dot(system.residual, search) if precondition else system.squared_norm(search)
        beta = new_product / product.clamp_min(1e-30)
        torch.addcmul(search, beta, system.direction, out=system.direction)
        product = new_product
    write_back()
    solved = torch.ones(len(rhs), dtype=torch.bool, device=rhs.device)
    solved[unsolved if segment_index is None else segment_index[unsolved]] = False
    return solution, solved


def _wide_holes(missing: Tensor, side: int = WIDE_HOLE) -> Tensor:
    """(K,) whether an image has a `side` x `side` window (at half-window steps) with no known pixel."""
    count, _, height, width = missing.shape
    if min(height, width) < side:
        return torch.zeros(count, dtype=torch.bool, device=missing.device)
    known = ~missing[:, 0]
    tile = side // 2
    if height % tile or width % tile:
        pooled = torch.nn.functional.max_pool2d(known.unsqueeze(1).float(), side, stride=tile)
        return pooled.flatten(1).amin(1) == 0
    # known pixels per tile, summed over the contiguous axis first: 3x faster than max_pool2d on a CPU
    tiles = known.view(count, height, width // tile, tile).sum(-1, dtype=torch.int32)
    tiles = tiles.view(count, height // tile, tile, -1).sum(2)
    windows = tiles[:, :-1, :-1] + tiles[:, 1:, :-1] + tiles[:, :-1, 1:] + tiles[:, 1:, 1:]
    return windows.flatten(1).amin(1) == 0


def impute(
    x: Tensor,
    missing: Tensor,
    iterations: int = 1000,
    tolerance: float = 1e-4,
    plain_iterations: int = 96,
    check_every: int = 2,
    multigrid: bool = True,
    compiled: bool = True,
) -> Tensor:
    """x with its `missing` pixels (bool, x's shape) replaced by the solution of ROAD's linear imputation.

    Solved to a residual below `tolerance` x the norm of each image's right-hand side.

    - On a CPU, plain CG runs compiled, one image per thread (`xbench.measure._imputation_kernel`): 4x faster than the
      batched PyTorch solver on ROAD's scattered holes, and 2x faster than its multigrid on wide ones. Images it
      has not solved in `iterations` go on to multigrid.
    - Otherwise (CUDA, or `compiled=False`), the batched PyTorch solver: images with a wide hole go straight to
      multigrid-preconditioned CG; the others get plain CG first, and multigrid only if `plain_iterations` were not
      enough (a multigrid solve costs 40-60 plain iterations; scattered holes at 95 % take plain CG ~40).

    `multigrid=False` solves everything with plain CG (for comparison). Raises if an image is not solved in
    `iterations`. The images are solved hardest first (most missing pixels first): CG's iteration count grows with
    the missing share, so the batched solver's unsolved images stay a prefix of the batch (see
    `_conjugate_gradients`), and the compiled one deals each thread a share of the hard ones.
    """
    missing_pixels = missing[:, 0].view(torch.uint8).sum((1, 2), dtype=torch.int32)  # no int64 copy of the mask
    order = torch.argsort(missing_pixels, descending=True, stable=True)
    compiled = compiled and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
    # Compiled plain CG beats the batched multigrid even on wide holes (80 blob-holed 224 px images: 0.25 s vs
    # 0.6 s), so on a CPU every image gets the whole budget of plain iterations first.
    if compiled or not multigrid:
        plain_iterations = iterations
        hard = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    else:
        plain_iterations = min(plain_iterations, iterations)
        hard = _wide_holes(missing)
    result = torch.empty_like(x, memory_format=torch.contiguous_format)  # the compiled solver writes rows of it
    with _Arena(x) as arena:
        easy = order[~hard[order]]
        if len(easy):
            if compiled:
                solved = _compiled_plain(x, missing, easy, plain_iterations, tolerance, result)
            else:
                result[easy], solved = _solve(x[easy], missing[easy], plain_iterations, tolerance, check_every, arena)
            hard[easy[~solved]] = True
        if bool(hard.any()):
            if not multigrid:
                raise _not_solved(tolerance, iterations, int(hard.sum()))
            chosen = order[hard[order]]
            result[chosen], solved = _solve(
                x[chosen], missing[chosen], iterations, tolerance, check_every, arena, multigrid=True
            )
            if not bool(solved.all()):
                raise _not_solved(tolerance, iterations, int((~solved).sum()))
    return result


def prepare_imputation(device: torch.device) -> None:
    """Loads the compiled CPU solver (compiling it, the first time on a machine: ~5 s), so that the first ROAD
    score's cost does not include it."""
    if device.type == "cpu":
        impute(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool))


def _solve(
    x: Tensor,
    missing: Tensor,
    iterations: int,
    tolerance: float,
    check_every: int,
    arena: _Arena,
    multigrid: bool = False,
) -> tuple[Tensor, Tensor]:
    """The imputed images and which of them were solved in `iterations`, by batched plain or multigrid CG."""
    inside = arena.empty(*x.shape).copy_(missing)
    known = torch.masked_fill(x, missing, 0.0)
    grid = _Grid(inside, arena=arena)
    grid.interior.copy_(known)
    rhs = grid.stencil(arena.empty(*x.shape)).sub_(known, alpha=4).mul_(inside)
    start = torch.div(rhs, grid.weight).mul_(inside)  # the mean of the known neighbours
    target = (tolerance**2) * _dot(rhs, rhs, arena.empty(*x.shape)).clamp_min(1e-30)
    precondition = _Multigrid(inside) if multigrid else None
    solution, solved = _conjugate_gradients(grid, rhs, start, target, iterations, precondition, check_every, arena)
    return solution.add_(known), solved  # the solution is zero on known pixels


def _compiled_plain(
    x: Tensor, missing: Tensor, images: Tensor, iterations: int, tolerance: float, out: Tensor
) -> Tensor:
    """Plain CG on images `images` of CPU tensors, compiled, into the same rows of `out`; which were solved."""
    import numba

    from xbench.measure._imputation_kernel import solve_images

    solved = torch.zeros(len(images), dtype=torch.bool)
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)  # as many as PyTorch uses, not one per core of the machine
    solve_images(
        x.detach().contiguous().numpy(),
        missing.contiguous().numpy(),
        images.numpy(),
        iterations,
        tolerance,
        out.numpy(),
        solved.numpy(),
        min(threads, len(images)),
    )
    return solved


def _not_solved(tolerance: float, iterations: int, images: int) -> RuntimeError:
    return RuntimeError(
        f"ROAD imputation did not reach a relative residual of {tolerance:g} in {iterations} iterations "
        f"for {images} image(s)"
    )
