"""A bundle from videos alone: the LAM's k-means options or the latent itself as the action set.

``adaworld adapt`` needs a real env's labelled actions; a user with videos only has none. Such a bundle's
actions are the ``k`` control options ``adaworld cluster`` stored beside the LAM (``LatentOptions``, a
``Discrete(k)`` env) or the latent action itself (``LatentPassthrough``, a ``Box`` env for planners), and its
start frames are the first frames of the videos' episodes::

    >>> build_latent_bundle("runs/lam", "runs/wm", ["data/videos"], "runs/bundle")  # doctest: +SKIP
    >>> gymnasium.make("AdaWorld/WorldModel-v0", bundle="runs/bundle")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaworld_gym._checks import check_seed, is_int

__all__ = ["ACTION_KINDS", "build_latent_bundle", "start_frames", "latent_bound"]

ACTION_KINDS = ("options", "latent")


def start_frames(roots: Sequence[str | os.PathLike], n: int = 16) -> np.ndarray:
    """uint8 ``[n', 1, H, W, 3]``: the first frame of up to ``n`` episodes, taken in turn from every subset."""
    from adaworld_gym.data.clips import find_subsets
    from adaworld_gym.data.episodes import EpisodeStore

    if not is_int(n) or n < 1:
        raise ValueError(f"the number of start frames must be an integer >= 1, got {n!r}")
    stores = [EpisodeStore(path) for path in find_subsets(roots)]
    queues = [(store, store.names()) for store in stores]
    frames = []
    while len(frames) < n and any(names for _, names in queues):
        for store, names in queues:  # round robin, so that every subset (video folder, game) gets starts
            if names and len(frames) < n:
                frames.append(store.read(names.pop(0)).frames[:1])
    if not frames:
        raise ValueError(f"no episodes in {', '.join(map(str, roots))}")
    sizes = {f.shape[1:] for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"the start episodes mix frame shapes {sorted(sizes)}; give data of one frame size")
    return np.stack(frames)


def latent_bound(lam, roots: Sequence[str | os.PathLike], samples: int = 2000, seed: int = 0) -> float:
    """The 99th percentile of the data's ``|mu|``: a ``Box`` bound that holds the moves the videos show."""
    from adaworld_gym.latent import sample_latents

    mu = sample_latents(lam, roots, samples, seed=seed)[0]
    return float(np.ceil(np.quantile(np.abs(mu), 0.99) * 100) / 100)


def build_latent_bundle(
    lam_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    data: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    actions: str = "options",
    bound: float | None = None,
    num_starts: int = 16,
    reward: str | os.PathLike | None = None,
    seed: int = 0,
) -> Path:
    """Save a bundle of the LAM, the world model, a latent adapter and start frames from ``data``; its path.

    Args:
        lam_dir, model_dir: the LAM and the world model trained on its latents (model or run directories).
        data: episode directories (``adaworld collect videos`` output) for the start frames, or one.
        out: the bundle directory (written atomically; refused if it holds anything but a bundle).
        actions: ``"options"`` (the k-means options of ``adaworld cluster``, ``Discrete(k)``) or ``"latent"``
            (``Box(-bound, bound, (latent_dim,))``).
        bound: the latent ``Box`` bound; None: the 99th percentile of ``|mu|`` over the data's transitions.
        num_starts: start frames (the first frame of up to this many episodes).
        reward: a reward head directory (``adaworld train-reward``) to attach.
        seed: draws the transitions ``bound`` is measured on.
    """
    from adaworld_gym.latent import load_options
    from adaworld_gym.models.adapters import LatentOptions, LatentPassthrough
    from adaworld_gym.models.bundle import AdaWorldBundle
    from adaworld_gym.training.common import BUNDLE, check_save_target
    from adaworld_gym.training.reward import load_reward_head
    from adaworld_gym.training.world_model import (
        check_lam_compatible,
        load_lam,
        load_world_model,
        model_dir_of,
        warn_if_other_lam,
    )

    if isinstance(data, (str, os.PathLike)):  # one directory, not a sequence of its characters
        data = [data]
    data = list(data)
    if actions not in ACTION_KINDS:
        raise ValueError(f"actions must be one of {ACTION_KINDS}, got {actions!r}")
    if bound is not None and actions != "latent":
        raise ValueError("a bound applies to actions='latent' only")
    if bound is not None and (isinstance(bound, bool) or not (np.isfinite(bound) and bound > 0)):
        raise ValueError(f"bound must be a finite number > 0, got {bound!r}")
    check_seed(seed)
    check_save_target(Path(out).resolve(), BUNDLE)  # before the models load and the data is read
    lam, world_model = load_lam(lam_dir), load_world_model(model_dir)
    if world_model.config.action_agnostic:
        raise ValueError(f"{model_dir} is action-agnostic: its frames do not depend on any action")
    check_lam_compatible(lam, world_model)
    warn_if_other_lam(model_dir, lam_dir)
    head = None if reward is None else load_reward_head(reward)
    starts = start_frames(data, num_starts)  # before any encoding: bad data fails fast
    size = world_model.config.sample_size
    if starts.shape[2:4] != (size, size):
        raise ValueError(
            f"the episodes in {', '.join(map(str, data))} hold {starts.shape[2]}x{starts.shape[3]} frames, the "
            f"world model makes {size}x{size} ones"
        )
    if actions == "options":
        adapter = LatentOptions(load_options(model_dir_of(lam_dir, "LAM", "train_lam")))
    else:
        bound = latent_bound(lam, data, seed=seed) if bound is None else bound
        adapter = LatentPassthrough(lam.config.latent_dim, bound)
    source = f"{actions} of {lam_dir}; start frames from {', '.join(map(str, data))}"
    # Whole before it is saved: a head that does not fit fails here, leaving nothing half-made at ``out``.
    bundle = AdaWorldBundle(lam, world_model, adapter, starts, meta={"source": source}, reward_head=head)
    bundle.save_pretrained(out)
    return Path(out)
