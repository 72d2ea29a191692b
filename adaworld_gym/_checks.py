"""Small argument checks and error helpers shared across the package."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """An integer setting: numpy integers (an ``np.arange`` sweep, a config read with numpy) count, bools not."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed: a non-negative integer (numpy's and SeedSequence's rule), as an int; named errors otherwise."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, also on Python 3.10, which lacks it (its tracebacks do not show notes)."""
    error.__notes__ = [*getattr(error, "__notes__", []), note]


def check_pixel_scale(image: np.ndarray, name: str) -> None:
    """Pixels on the 0-255 scale: uint8, or finite integers or floats in [0, 255] (``ValueError`` otherwise)."""
    if image.dtype == np.uint8 or not image.size:
        return
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or inf")
    if image.min() < 0 or image.max() > 255:
        raise ValueError(f"{name} pixels must lie in [0, 255], got {image.min()}..{image.max()}")


def reset_options(options: Any, allowed: Iterable[str] | None = None) -> Mapping[str, Any]:
    """``reset(options=...)``: None or a mapping, whose keys (when ``allowed`` is given) are all known.

    A typo such as ``{"levle": 3}`` would otherwise be ignored and the reset would quietly do something else.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(
            f"reset options must be a dict (or None), got {type(options).__name__}: {options!r:.80}"
        )
    if allowed is not None:
        allowed = list(allowed)
        unknown = set(options) - set(allowed)
        if unknown:
            expected = ", ".join(repr(k) for k in allowed)
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected {expected}")
    return options
