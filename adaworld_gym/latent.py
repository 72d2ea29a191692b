"""Tools on latent actions: encode episodes, compose, cluster into control options, plot.

Control options are k-means centres of the latent actions over a dataset (AdaWorld section 3): a discrete
action set found without any action labels. They are stored beside the model as
``latent_options.safetensors`` with a small JSON description.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from adaworld_gym.data.episodes import Episode, atomic_write_bytes
from adaworld_gym.precision import bf16_autocast

OPTIONS_FILE = "latent_options.safetensors"
OPTIONS_META = "latent_options.json"
PLOT_SUFFIXES = (".png",)  # plot_latents writes PNG whatever the name says


def encode_frames(model, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Latent actions ``[T-1, d]`` of the consecutive pairs of uint8 frames ``[T, H, W, 3]``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"need at least two frames [T,H,W,3] to encode actions, got shape {frames.shape}")
    return model.encode(frames[:-1], frames[1:], chunk_size=batch_size)


def motion_context(
    lam, history: np.ndarray, history_len: Sequence[int] | np.ndarray | None = None, bf16: bool = True
) -> np.ndarray:
    """The motion context of adapters built with ``motion_dim``: float32 ``[B, d + 1]``.

    For each window of uint8 history frames ``[B, k, H, W, 3]`` (right-aligned: the last frame is the newest;
    ``history_len`` real frames each, default ``k``): the LAM's ``mu`` of the last two frames and the flag 1,
    or zeros and the flag 0 when the window holds fewer than two frames (an episode's first step). ``bf16``:
    encode under bf16 autocast, as the LAM labels training data (about twice as fast on CPU).
    """
    history = np.asarray(history)
    if history.dtype != np.uint8 or history.ndim != 5:
        raise ValueError(f"history must be uint8 [B, k, H, W, 3], got {history.dtype} {history.shape}")
    batch, k = history.shape[:2]
    if history_len is None:
        lengths = np.full(batch, k)
    else:
        lengths = np.asarray(history_len).reshape(-1)
        if lengths.dtype.kind not in "iu":
            raise ValueError(f"history_len must hold integers, got {lengths.dtype} {lengths.tolist()}")
    if lengths.shape != (batch,) or (lengths < 1).any() or (lengths > k).any():
        raise ValueError(f"history_len must hold {batch} lengths in 1..{k}, got {lengths.tolist()}")
    dim = int(lam.config.latent_dim)
    out = np.zeros((batch, dim + 1), np.float32)
    known = np.flatnonzero(lengths >= 2)
    if len(known) and k >= 2:
        with torch.no_grad(), bf16_autocast(lam.device.type, bf16):
            mu = lam.encode(history[known, -2], history[known, -1])
        out[known, :dim] = np.asarray(mu, np.float32)
        out[known, dim] = 1.0
    return out


def encode_episode(model, episode: Episode) -> np.ndarray:
    return encode_frames(model, episode.frames)


def compose(*latents: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Average latent actions (AdaWorld's composition: right + jump -> jump-right)."""
    if not latents:
        raise ValueError("compose needs at least one latent action")
    stack = np.stack([np.asarray(z, np.float32) for z in latents])
    if not np.isfinite(stack).all():
        raise ValueError("latent actions contain NaN or inf")
    w = np.ones(len(latents)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(latents),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {len(latents)} non-negative weights with a positive sum, got {weights}")
    w = w / w.max()  # huge weights (1e308 each) would overflow in the sum
    return (np.tensordot(w / w.sum(), stack, axes=1)).astype(np.float32)


def kmeans(points: np.ndarray, k: int, seed: int = 0, iters: int = 100) -> np.ndarray:
    """k-means++ initialisation then Lloyd iterations; returns ``[k, d]`` centres."""
    from sklearn.cluster import KMeans

    points = np.asarray(points, np.float32)
    if points.ndim != 2 or len(points) < k:
        raise ValueError(f"need at least k={k} latent vectors [N, d] to cluster, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("latent vectors to cluster contain NaN or inf")
    distinct = len(np.unique(points, axis=0))
    if distinct < k:  # sklearn then repeats centres: options that do the same thing (e.g. an untrained LAM)
        import warnings

        warnings.warn(
            f"only {distinct} distinct latent vectors for k={k} options: some options will coincide; lower k or "
            "encode more data",
            stacklevel=2,
        )
    return (
        KMeans(k, n_init=4, max_iter=iters, random_state=seed).fit(points).cluster_centers_.astype(np.float32)
    )


def save_options(model_dir: str | os.PathLike, centres: np.ndarray, source: str = "") -> Path:
    """Store k-means control options with the model (safetensors + JSON; written atomically)."""
    model_dir = Path(model_dir)
    centres = np.asarray(centres)
    if centres.ndim != 2 or not len(centres) or not np.isfinite(centres).all():
        raise ValueError(
            f"control options must be finite centres [k, d] with k >= 1, got shape {centres.shape}"
        )
    if not model_dir.is_dir():
        raise FileNotFoundError(f"cannot store control options: {model_dir} is not a directory")
    path = model_dir / OPTIONS_FILE
    # Serialised in memory then written atomically: an interrupt leaves no stray temporary file behind.
    atomic_write_bytes(path, save({"centres": torch.from_numpy(np.ascontiguousarray(centres, np.float32))}))
    meta = {"k": int(len(centres)), "dim": int(centres.shape[1]), "source": source}
    atomic_write_bytes(model_dir / OPTIONS_META, json.dumps(meta, indent=1).encode())
    return path


def load_options(model_dir: str | os.PathLike) -> np.ndarray:
    path = Path(model_dir) / OPTIONS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no control options in {model_dir}: run `adaworld cluster` first")
    try:
        return load_file(str(path))["centres"].numpy()
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"corrupt control options file {path}: {e}") from e


def pca_2d(points: np.ndarray) -> np.ndarray:
    """``[N, 2]`` coordinates on the first two principal components (zeros where there is no second one)."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))  # a 1-d latent or a single point: one component


def plot_latents(
    mu: np.ndarray,
    actions: np.ndarray | None,
    groups: np.ndarray | None,
    path: str | os.PathLike,
    action_names: Sequence[str] | None = None,
    group_names: Sequence[str] | None = None,
    title: str = "latent actions (PCA)",
) -> Path:
    """2-D PCA projection of latent actions, coloured by true action and by game/env, as one PNG (atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaworld_gym.viz import check_output_file

    path = check_output_file(path, PLOT_SUFFIXES, "plot")
    mu = np.asarray(mu, np.float32)
    if mu.ndim != 2 or not len(mu) or not np.isfinite(mu).all():
        raise ValueError(f"plot_latents takes finite latent actions [N, d] with N >= 1, got shape {mu.shape}")
    xy = pca_2d(mu)
    panels = [(actions, action_names, "by true action"), (groups, group_names, "by game / env")]
    panels = [p for p in panels if p[0] is not None]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 5), squeeze=False)
    for ax, (labels, names, subtitle) in zip(axes[0], panels or [(None, None, "")], strict=True):
        if labels is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.5)
        else:
            cmap = plt.get_cmap("tab20")
            for j, value in enumerate(np.unique(labels)):
                sel = labels == value
                if value < 0:  # transitions without a discrete action
                    name = "unlabelled"
                else:
                    name = names[int(value)] if names is not None else str(value)
                ax.scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.6, color=cmap(j % 20), label=name)
            ax.legend(markerscale=4, fontsize=7, loc="best", ncol=2)
        ax.set_title(f"{title} {subtitle}")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.tight_layout()
    buf = io.BytesIO()  # rendered in memory, so an interrupt leaves no half-written file
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _even_shares(n: int, sizes: Sequence[int]) -> list[int]:
    """``n`` split as evenly as possible over subsets of ``sizes`` items, none given more than it has (the
    remainder to the first ones)."""
    shares = [0] * len(sizes)
    open_ = [i for i, size in enumerate(sizes) if size > 0]
    left = n
    while left > 0 and open_:
        each, extra = divmod(left, len(open_))
        for rank, i in enumerate(list(open_)):
            give = min(each + (rank < extra), sizes[i] - shares[i])
            shares[i] += give
            left -= give
        open_ = [i for i in open_ if shares[i] < sizes[i]]
    return shares


def sample_latents(
    model, roots: Sequence[str | os.PathLike], n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Encode up to ``n`` transitions drawn evenly from every subset under ``roots``.

    A subset with fewer transitions than its share gives each of them once (its unused share goes to the
    others), so a short clip is not repeated into a cluster of its own; the others are drawn at random.
    Returns ``(mu [N,d], discrete action or -1 [N], subset index [N], subset names)``, ``N <= n``.
    """
    from adaworld_gym.data.clips import ClipDataset, find_subsets

    rng = np.random.default_rng(seed)
    subsets = find_subsets(roots)
    datasets = []
    for path in subsets:
        ds = ClipDataset(path)
        info = ds.subsets[0]
        if all(info.store.manifest[name]["has_actions"] for name in info.names):
            ds = ClipDataset(path, with_actions=True)
        datasets.append(ds)
    shares = _even_shares(n, [ds.num_transitions for ds in datasets])
    f_t, f_t1, actions, groups = [], [], [], []
    for g, (ds, share) in enumerate(zip(datasets, shares, strict=True)):
        if share >= ds.num_transitions:
            items = list(ds.iter_windows())  # every usable window once
        else:
            items = [ds.sample_from(0, rng) for _ in range(share)]
        for item in items:
            f_t.append(item["history"][-1])
            f_t1.append(item["next"])
            groups.append(g)
            # Labels only where actions are discrete; continuous or missing actions get -1.
            action = item.get("action")
            actions.append(int(action) if action is not None and np.ndim(action) == 0 else -1)
    sizes = {}
    for frame, g in zip(f_t, groups, strict=True):
        sizes.setdefault(frame.shape[:2], subsets[g])
    want = (model.config.image_size, model.config.image_size)
    if set(sizes) - {want}:  # else np.stack, or the LAM, fails without naming the data
        found = ", ".join(f"{h}x{w} in {path}" for (h, w), path in sorted(sizes.items()))
        raise ValueError(f"the LAM takes {want[0]}x{want[1]} frames; the data holds {found}")
    mu = model.encode(np.stack(f_t), np.stack(f_t1))
    return mu, np.array(actions), np.array(groups), [p.name for p in subsets]
