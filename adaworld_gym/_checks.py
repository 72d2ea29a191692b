"""Small argument checks shared across the package."""

from __future__ import annotations

import numbers
from typing import Any


def is_int(value: Any) -> bool:
    """An integer setting: numpy integers (an ``np.arange`` sweep, a config read with numpy) count, bools not."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
