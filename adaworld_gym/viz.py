"""GIFs and image grids from uint8 frames."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaworld_gym.data.episodes import atomic_write_bytes

GIF_SUFFIXES = (".gif",)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``[..., H, W, C]`` so 64x64 frames are visible."""
    if factor == 1:
        return frames
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def side_by_side(*videos: np.ndarray, gap: int = 2) -> np.ndarray:
    """Join equally long videos ``[T, H, W, 3]`` horizontally with a white gap."""
    lengths = {len(v) for v in videos}
    if len(lengths) != 1:
        raise ValueError(f"videos must have the same length, got {sorted(lengths)}")
    t, h = videos[0].shape[:2]
    spacer = np.full((t, h, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, video in enumerate(videos):
        if i:
            parts.append(spacer)
        parts.append(video)
    return np.concatenate(parts, axis=2)


def check_output_file(
    path: str | os.PathLike, suffixes: Sequence[str] | None = None, what: str = "output"
) -> Path:
    """``path`` if a file can be written there, else a ``ValueError`` that says why.

    Called before the work that makes the file, so a bad path fails at once rather than after minutes of
    play or planning. ``suffixes``: the accepted suffixes (the writers encode one format whatever the name).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory: give a file path")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(
            f"{what} {path}: only {' / '.join(suffixes)} files are written, got {path.suffix or 'no suffix'!r}"
        )
    parent = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p == p.parent)
    if not parent.is_dir():
        raise ValueError(f"cannot write {what} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write {what} {path}: no write permission in {parent}")
    return path


GIF_FRAME_COMMENT = "adaworld-gym frame_ms={ms}"  # the frame time, which merged repeated frames hide
GIF_MAX_DELAY_CS = 65535  # a GIF frame's delay: 16 bits of centiseconds


def save_gif(
    frames: Sequence[np.ndarray] | np.ndarray, path: str | os.PathLike, fps: float = 5, scale: int = 3
) -> Path:
    """Write an endlessly looping GIF atomically (``path`` must end in ``.gif``).

    ``fps`` is rounded to a whole number of centiseconds per frame (GIF's unit), at most 50 fps.
    Pillow merges consecutive identical frames into one longer frame; the frame time is also written in the
    GIF's comment (``GIF_FRAME_COMMENT``), so that :func:`~adaworld_gym.data.collect.read_video` gives back every
    frame.
    """
    import io

    import imageio.v3 as iio

    frames = np.asarray(frames)
    # No frames wrote an empty, unreadable .gif (over any file already there); other channel counts and a scale
    # below 1 failed inside Pillow.
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(
            f"frames must be uint8 [T,H,W,3] with T, H, W >= 1, got {frames.dtype} {frames.shape}"
        )
    if not (isinstance(fps, numbers.Real) and np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if fps < 100 / GIF_MAX_DELAY_CS:  # a GIF stores the delay in 16 bits: longer ones overflowed in Pillow
        raise ValueError(
            f"fps must be at least {100 / GIF_MAX_DELAY_CS:.3g} (a GIF frame lasts at most 655 s)"
        )
    if not isinstance(scale, numbers.Integral) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    path = check_output_file(path, GIF_SUFFIXES, "GIF")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    # GIF delays are whole centiseconds and Pillow truncates the milliseconds it is given (1000 / 15 = 66.7 ms
    # became 60 ms: 15 fps played at 16.7); round instead, and to at least 2 cs, as browsers play 0-1 cs as 10 cs.
    duration_ms = 10 * max(2, round(100 / fps))
    comment = GIF_FRAME_COMMENT.format(ms=duration_ms)
    iio.imwrite(buf, upscale(frames, scale), extension=".gif", duration=duration_ms, loop=0, comment=comment)
    atomic_write_bytes(path, buf.getvalue())
    return path


def save_png(image: np.ndarray, path: str | os.PathLike, scale: int = 1) -> Path:
    import io

    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    iio.imwrite(buf, upscale(np.asarray(image), scale), extension=".png")
    atomic_write_bytes(path, buf.getvalue())
    return path
