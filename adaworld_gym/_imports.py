"""Imports of third-party modules that print on import."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Swallow what imports inside the block print.

    procgen-mirror and stable-baselines3 (its ``patch_gym``) import the retired ``gym`` package, which prints a
    four-line banner on its first import; errors still raise as usual.
    """
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
