"""What counts as a number in results: one definition for the statistics, the gate, the page and the exports."""

from __future__ import annotations

import math
from typing import Any, TypeGuard


def is_finite_number(value: Any) -> TypeGuard[int | float]:
    """A real, finite number: not None, not a bool, not NaN or infinite (NumPy scalars count)."""
    if isinstance(value, bool) or value is None:
        return False
    try:
        return math.isfinite(value)
    except TypeError:
        return False


def finite_or_none(value: Any) -> Any:
    """NaN and infinities as None (so JSON stays valid and a missing score reads as missing); other values as given."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
