"""Small argument checks shared across the package."""

from __future__ import annotations

import numbers
from typing import Any


def is_int(value: Any) -> bool:
    """An integer setting: numpy integers (an ``np.arange`` sweep, a config read with numpy) count, bools not."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed: a non-negative integer (numpy's and SeedSequence's rule), as an int; named errors otherwise."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)
