"""What Quantus's modules see as `numpy` while xbench runs one of its metrics, and nothing outside that call.

Quantus 0.6 needs three things NumPy itself does not give, and all three used to be global changes:
- it draws its perturbations from NumPy's *global* generator: here each call gets its own seeded `RandomState`
  (the same Mersenne Twister stream `np.random.seed(seed)` would give, so results are unchanged), and NumPy's global
  generator is neither seeded nor advanced;
- it computes AUCs with `np.trapz`, which NumPy 2.4 removed: here `trapz` is `np.trapezoid` (the same function);
- its argsorts order tied attributions in no documented way: here the metric's own module sorts ties by a policy
  (`random` or `index`), or records each order (for the engine to replay).

`quantus_numpy(...)` puts the views in place of `np` in Quantus's modules for the duration of one call, under a
lock, so two threads never see each other's view, and restores NumPy after.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

_SWAP = threading.RLock()  # one Quantus call at a time per process swaps the modules' `np`


class _SeededRandom:
    """`np.random` as Quantus uses it (normal, uniform, choice, randn, ...), drawn from a private RandomState."""

    def __init__(self, seed: int) -> None:
        self._state = np.random.RandomState(seed)

    def __getattr__(self, name: str) -> Any:
        if name == "seed":  # Quantus reseeds per call with its own seed: that reseeds this private stream
            return self._state.seed
        found = getattr(self._state, name, None)
        return found if found is not None else getattr(np.random, name)


class QuantusNumpy:
    """numpy, but with a private seeded `random`, `trapz`, and (when `ties` or `record` is set) a policy argsort.

    Views made by `for_module` share one random stream, as Quantus's modules shared NumPy's global one."""

    def __init__(
        self,
        seed: int,
        ties: str | None = None,
        tie_draw: int = 0,
        record: bool = False,
        random: _SeededRandom | None = None,
    ) -> None:
        self.random = random if random is not None else _SeededRandom(seed)
        self.trapz = np.trapezoid
        self.ties, self.record = ties, record
        self.orders: list[np.ndarray] = []  # every argsort made, when recording
        self._tie_keys = np.random.default_rng([seed, tie_draw, 0x7469]) if ties == "random" else None

    def plain(self) -> QuantusNumpy:
        """The view for Quantus's other modules: the same random stream, NumPy's own argsort."""
        return QuantusNumpy(0, random=self.random)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def argsort(self, a: Any, axis: int = -1, **kwargs: Any) -> np.ndarray:
        if self.ties == "index":
            order = np.argsort(np.asarray(a), axis=axis, kind="stable")
        elif self.ties == "random":
            assert self._tie_keys is not None
            values = np.asarray(a)
            order = np.lexsort((self._tie_keys.random(values.shape), values), axis=axis)  # ties by a random key
        else:
            order = np.argsort(a, axis=axis, **kwargs)
        if self.record:
            self.orders.append(np.array(order, copy=True))
        return order


def _quantus_modules() -> list[ModuleType]:
    return [
        module
        for name, module in list(sys.modules.items())
        if (name == "quantus" or name.startswith("quantus.")) and getattr(module, "np", None) is np
    ]


@contextlib.contextmanager
def quantus_numpy(view: QuantusNumpy, metric_module: str | None = None) -> Iterator[QuantusNumpy]:
    """Within the block, Quantus's modules use `view` (the metric's own module, `metric_module`) or its plain twin
    (the others) as `np`; NumPy is back in all of them after, and the global generator was never touched."""
    import quantus  # noqa: F401 - its modules must be loaded to be given the view

    with _SWAP:
        plain = view.plain()
        modules = _quantus_modules()
        for module in modules:
            module.np = view if module.__name__ == metric_module else plain  # type: ignore[attr-defined]
        try:
            yield view
        finally:
            for module in modules:
                module.np = np  # type: ignore[attr-defined]
