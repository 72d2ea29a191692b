"""Action transfer (AdaWorld section 3): replay the actions of one video in another scene, with no training.

The LAM encodes every consecutive pair of a source video into a latent action; those latent actions drive an
autoregressive world-model rollout that starts from the target scene's frame(s).

    frames = transfer(lam, wm, load_frames("source.mp4"), load_frames("target.png"), steps=20)
    transfer_gif("source.awe", "target.png", "transfer.gif", lam="runs/lam", model="runs/wm")
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np
import torch

from adaworld_gym._checks import check_seed
from adaworld_gym.data.collect import VIDEO_SUFFIXES, read_video, square_resize
from adaworld_gym.data.episodes import SHARD_SUFFIX, read_episode
from adaworld_gym.models.latent_action import LatentActionModel
from adaworld_gym.models.world_model import DiffusionWorldModel
from adaworld_gym.training.world_model import (
    check_lam_compatible,
    label_actions,
    load_lam,
    load_world_model,
    warn_if_other_lam,
)
from adaworld_gym.viz import GIF_SUFFIXES, check_output_file, save_gif, side_by_side

__all__ = ["IMAGE_SUFFIXES", "load_frames", "transfer", "transfer_gif"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def transfer(
    lam: LatentActionModel,
    wm: DiffusionWorldModel,
    source_frames: np.ndarray,
    target_history: np.ndarray,
    steps: int = 20,
    denoise_steps: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Drive a rollout from ``target_history`` with the latent actions of ``source_frames``.

    Args:
        lam: the latent action model (its ``mu`` of (source[t], source[t+1]) is the action of step t).
        wm: an action-conditioned world model with the LAM's frame size and latent dimension.
        source_frames: uint8 [T,H,W,3], T >= steps + 1 (``steps`` consecutive pairs).
        target_history: uint8 [h,H,W,3], h >= 1, oldest first; only the last ``wm.config.num_history`` are used.
        steps: frames to generate.
        denoise_steps: Euler steps per frame.
        seed: the sampling noise; the same seed gives the same frames.
        progress: show a progress bar over the rollout's frames.

    Returns:
        uint8 [steps,H,W,3]: frame i is the target scene after the source's action i.
    """
    check_lam_compatible(lam, wm)
    size = wm.config.sample_size
    source = _check_frames(source_frames, "source_frames", size)
    target = _check_frames(target_history, "target_history", size)
    for name, value in (("steps", steps), ("denoise_steps", denoise_steps)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    steps = int(steps)
    seed = check_seed(seed)
    if len(source) < 2:
        raise ValueError(
            f"source_frames has {len(source)} frame: an action needs two, so give a video or an episode"
        )
    if len(source) < steps + 1:
        raise ValueError(
            f"source_frames has {len(source)} frames, i.e. {len(source) - 1} actions, fewer than steps={steps}; "
            f"pass steps <= {len(source) - 1} or a longer source"
        )
    z = label_actions(lam, source[:steps], source[1 : steps + 1])  # [steps, d], as in training
    history = target[-wm.config.num_history :]
    gen = torch.Generator().manual_seed(seed)
    return wm.rollout(history[None], z[None], steps=denoise_steps, generator=gen, progress=progress)[0]


def load_frames(path: str | os.PathLike, size: int = 64, target_hz: float | None = 10.0) -> np.ndarray:
    """Frames of an episode shard (``.awe``), a video (mp4/avi/gif/...) or an image, as uint8 [T,size,size,3].

    Videos are subsampled to about ``target_hz`` frames per second (the rate of the training data; None
    keeps every frame); every frame of another size is centre-cropped to a square and resized.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: a directory, an unsupported suffix or an unreadable file.
    """
    if target_hz is not None and not (
        isinstance(target_hz, numbers.Real)
        and not isinstance(target_hz, bool)
        and 0 < target_hz < float("inf")
    ):  # 0 divided by zero below, a negative rate kept every frame, NaN failed in round()
        raise ValueError(f"target_hz must be a positive number or None, got {target_hz!r}")
    path = Path(path)
    if path.is_dir():  # not "no such file": it is there, just not a file
        raise ValueError(f"{path} is a directory; give an episode (.awe), video or image file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == SHARD_SUFFIX:
        frames = list(read_episode(path).frames)
    elif suffix in VIDEO_SUFFIXES:
        frames, fps = read_video(path)
        if target_hz is not None:
            frames = frames[:: max(1, round(fps / target_hz))]
    elif suffix in IMAGE_SUFFIXES:
        frames = [_read_image(path)]
    else:
        known = ", ".join((SHARD_SUFFIX, *VIDEO_SUFFIXES, *IMAGE_SUFFIXES))
        raise ValueError(f"cannot read {path}: unsupported file type {suffix!r} (expected one of {known})")
    if not frames:
        raise ValueError(f"no frames in {path}")
    resized = [f if f.shape[:2] == (size, size) else square_resize(f, size) for f in frames]
    return np.ascontiguousarray(np.stack(resized), dtype=np.uint8)


def transfer_gif(
    source: str | os.PathLike | np.ndarray,
    target: str | os.PathLike | np.ndarray,
    out: str | os.PathLike,
    lam: LatentActionModel | str | os.PathLike,
    model: DiffusionWorldModel | str | os.PathLike,
    *,
    steps: int = 20,
    denoise_steps: int = 3,
    seed: int = 0,
    target_frames: int = 1,
    fps: float = 5.0,
    scale: int = 3,
    progress: bool = False,
) -> Path:
    """Transfer the actions of ``source`` to ``target`` and write a side-by-side GIF (source | transferred).

    Args:
        source, target: file paths (see :func:`load_frames`) or uint8 [T,H,W,3] arrays.
        out: the GIF to write (a ``.gif`` path; checked before any work).
        lam, model: loaded models, or their directories (the ``model`` directory or the run directory).
        steps, denoise_steps, seed: as in :func:`transfer`.
        target_frames: how many leading target frames form the history the rollout starts from.
        fps, scale: GIF frame rate and pixel upscaling.
        progress: show a progress bar over the rollout's frames.

    Returns:
        ``out``. The GIF's first frame shows both starting frames, then the source's next ``steps`` frames
        beside their transferred counterparts.
    """
    check_output_file(out, GIF_SUFFIXES, "out")  # before the models load and the rollout runs
    paths = (
        None if isinstance(lam, LatentActionModel) or isinstance(model, DiffusionWorldModel) else (model, lam)
    )
    lam = lam if isinstance(lam, LatentActionModel) else load_lam(lam)
    model = model if isinstance(model, DiffusionWorldModel) else load_world_model(model)
    if paths is not None:
        warn_if_other_lam(*paths)
    size = model.config.sample_size
    src = load_frames(source, size) if isinstance(source, (str, os.PathLike)) else np.asarray(source)
    tgt = load_frames(target, size) if isinstance(target, (str, os.PathLike)) else np.asarray(target)
    tgt = _check_frames(tgt, "target", size)
    if not isinstance(target_frames, numbers.Integral) or isinstance(target_frames, bool):
        raise ValueError(f"target_frames must be an int, got {target_frames!r}")
    if not 1 <= target_frames <= len(tgt):
        raise ValueError(
            f"target_frames must lie in 1..{len(tgt)} (the target's frames), got {target_frames}"
        )
    history = tgt[:target_frames]
    frames = transfer(
        lam, model, src, history, steps=steps, denoise_steps=denoise_steps, seed=seed, progress=progress
    )
    video = side_by_side(src[: steps + 1], np.concatenate([history[-1:], frames]))
    return save_gif(video, out, fps=fps, scale=scale)


def _read_image(path: Path) -> np.ndarray:
    import imageio.v3 as iio
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as pil:
            if pil.mode == "CMYK":  # imageio hands back the raw C, M, Y, K channels as if they were RGB(A)
                return np.asarray(pil.convert("RGB"))
    except (OSError, UnidentifiedImageError):
        pass  # imageio below reads it or names the problem
    try:
        image = np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises several unrelated types for a bad file
        # Its first line only: the rest suggests plugins to install, which a damaged file does not need.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read image {path} (corrupt or not an image): {reason}") from e
    if image.ndim == 3 and image.shape[-1] == 2:  # greyscale + alpha ("LA" PNGs): the grey channel
        image = image[..., 0]
    if image.ndim == 2:  # greyscale
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] < 3:
        raise ValueError(f"{path}: expected an RGB(A) or greyscale image, got shape {image.shape}")
    if image.dtype == np.bool_:  # 1-bit images: white is True, not 1 of 255
        image = image.astype(np.uint8) * 255
    elif image.dtype == np.uint16:  # 16-bit PNGs: keep the high byte rather than wrap around
        image = image >> 8
    elif image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8- or 16-bit image, got {image.dtype}")
    return image[..., :3].astype(np.uint8)


def _check_frames(frames: np.ndarray, name: str, size: int) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or len(frames) < 1:
        raise ValueError(
            f"{name} must be uint8 [T, {size}, {size}, 3] with T >= 1, got {frames.dtype} {tuple(frames.shape)}"
        )
    return frames
