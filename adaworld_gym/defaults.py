"""Where the shipped default weights live (inside the package, so no download is ever needed)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
DEFAULT_LAM = ASSETS / "lam"
DEFAULT_WORLD_MODEL = ASSETS / "world_model"


def shipped(path: Path, what: str) -> Path:
    """Return ``path`` if the shipped weights are there, else raise a clear error."""
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no shipped {what} in this installation ({path} is missing); train one with `adaworld` "
            "or pass the directory of your own"
        )
    return path
