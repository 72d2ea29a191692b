"""Training windows streamed from episode shards.

A window is ``k`` history frames (zero-padded at the front near an episode's start), the next frame and,
optionally, the action between them. Each episode directory is one *subset* (one game, one env, one video
folder); subsets are drawn with probability proportional to ``size ** 0.43`` as in AdaWorld, so small
subsets are not drowned by large ones, then an episode in proportion to its length, then a time step.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaworld_gym.data.episodes import MANIFEST, Episode, EpisodeError, EpisodeStore

SUBSET_WEIGHT_EXPONENT = 0.43

# Training data: clip dicts, one or more episode directories, or {directory: share of the batches}.
DataSpec = Iterable[Mapping[str, Any]] | str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, float]


def find_subsets(roots: Sequence[str | os.PathLike]) -> list[Path]:
    """Episode directories under ``roots``: each root is one, or holds several one level down; each directory
    once, also when roots overlap (``data`` and ``data/procgen-maze``)."""
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    found: list[Path] = []
    for root in map(Path, roots):
        if root.is_file():
            raise EpisodeError(
                f"data must be a directory of episodes (or of such directories), got the file {root}"
            )
        if not root.is_dir():
            raise EpisodeError(f"data directory not found: {root}")
        if (root / MANIFEST).exists():
            found.append(root)
            continue
        children = sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
        if not children:
            raise EpisodeError(f"no episode data in {root}: expected {MANIFEST} there or in its subfolders")
        found.extend(children)
    unique: dict[Path, Path] = {}  # overlapping roots: each subset once, in the order first found
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def episodes_digest(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    """SHA-256 over the episodes under ``roots`` (each one's subset, name and checksum from its manifest), for
    provenance checks: it changes when an episode does, whatever the path is called."""
    import hashlib

    digest = hashlib.sha256()
    for path in find_subsets(roots):
        store = EpisodeStore(path)
        for name in store.names():
            digest.update(f"{path.name}/{name} {store.manifest[name]['sha256']}\n".encode())
    return digest.hexdigest()


def env_ids(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> set[str]:
    """The env ids of the episodes under ``roots``, from their manifests (no shard is read)."""
    found: set[str] = set()
    for path in find_subsets(roots):
        store = EpisodeStore(path)
        found.update(str(store.manifest[name].get("env_id", "unknown")) for name in store.names())
    return found


def history_start(episode: Episode, t: int, k: int) -> int:
    """First frame of the ``k``-frame history of target ``frames[t+1]``: never before the frame a Procgen reset
    started (an episode whose terminal frames are resets may hold several tries), nor before frame 0."""
    start = max(0, t - k + 1)
    if episode.meta.get("terminal_frame_is_reset") and episode.terminations is not None:
        ends = np.flatnonzero(
            np.asarray(episode.terminations)[:t]
        )  # terminal steps s < t: frame s+1 restarts
        if len(ends):
            start = max(start, int(ends[-1]) + 1)
    return start


def valid_targets(episode: Episode) -> np.ndarray:
    """Time steps t whose transition frames[t] -> frames[t+1] is a real one.

    Procgen resets itself at the end of an episode, so the frame after a terminal step is a new start,
    not a successor; such transitions are kept in the data (for rewards) but never used as frame targets.
    """
    t = np.arange(episode.num_transitions)
    if episode.meta.get("terminal_frame_is_reset"):
        t = t[~episode.terminations]
    return t


@dataclass
class _Subset:
    name: str
    store: EpisodeStore
    names: list[str]
    lengths: (
        np.ndarray
    )  # number of valid targets per episode, from the manifest's frame counts (an upper bound)


class ClipDataset(torch.utils.data.IterableDataset):
    """An endless, seeded stream of training windows.

    Args:
        roots: episode directories, or directories holding them.
        history: number of history frames ``k``.
        seed: makes the stream deterministic (combined with the DataLoader worker id).
        with_actions: also yield the action of each transition (all subsets must share one action space).
        verify: check shard checksums when first loading them.

    Yields dicts with ``history`` uint8 ``[k,H,W,3]``, ``history_len`` (1..k), ``next`` uint8 ``[H,W,3]``,
    ``subset`` (index into :attr:`subset_names`) and, with ``with_actions``, ``action``.
    """

    def __init__(
        self,
        roots: Sequence[str | os.PathLike] | str | os.PathLike,
        history: int = 1,
        seed: int = 0,
        with_actions: bool = False,
        verify: bool = True,
        weight_exponent: float = SUBSET_WEIGHT_EXPONENT,
    ):
        super().__init__()
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.history = history
        self.seed = seed
        self.with_actions = with_actions
        self.verify = verify
        self.subsets: list[_Subset] = []
        for path in find_subsets(roots):
            store = EpisodeStore(path)
            names = [n for n in store.names() if store.manifest[n]["frames"] >= 2]
            if not names:
                continue
            if with_actions and not all(store.manifest[n]["has_actions"] for n in names):
                raise EpisodeError(f"with_actions=True but {path} holds episodes without actions")
            lengths = np.array([store.manifest[n]["frames"] - 1 for n in names], np.float64)
            self.subsets.append(_Subset(path.name, store, names, lengths))
        if not self.subsets:
            raise EpisodeError(f"no episodes with at least two frames in {roots}")
        sizes = np.array([s.lengths.sum() for s in self.subsets])
        weights = sizes**weight_exponent
        self.subset_probs = weights / weights.sum()
        self._cache: dict[tuple[int, str], tuple[Episode, np.ndarray]] = {}
        self._action_space: dict[str, Any] | None = None
        self._frame_shape: tuple[int, ...] | None = None
        self._frame_source: tuple[Path, str] = (Path(), "")  # where the first frame size was read

    @property
    def subset_names(self) -> list[str]:
        return [s.name for s in self.subsets]

    @property
    def num_transitions(self) -> int:
        return int(sum(s.lengths.sum() for s in self.subsets))

    def _episode(self, subset: int, name: str) -> tuple[Episode, np.ndarray]:
        key = (subset, name)
        if key not in self._cache:
            episode = self.subsets[subset].store.read(name, verify=self.verify)
            shape = episode.frames.shape[1:]
            if self._frame_shape is None:
                self._frame_shape, self._frame_source = shape, (self.subsets[subset].store.root, name)
            elif shape != self._frame_shape:  # batches stack windows: one frame size for every subset
                first = self._frame_source
                raise EpisodeError(
                    f"{name} in {self.subsets[subset].store.root} has {shape[0]}x{shape[1]} frames, {first[1]} in "
                    f"{first[0]} {self._frame_shape[0]}x{self._frame_shape[1]}; collect every subset at one size"
                )
            if self.with_actions:
                if self._action_space is None:
                    self._action_space = episode.action_space
                elif episode.action_space != self._action_space:
                    raise EpisodeError(
                        f"with_actions=True needs one action space, but {name} in {self.subsets[subset].name} "
                        f"has {episode.action_space} and earlier episodes {self._action_space}"
                    )
            self._cache[key] = (episode, valid_targets(episode))
        return self._cache[key]

    def window(self, episode: Episode, t: int) -> dict[str, Any]:
        """The window whose target is ``frames[t+1]``."""
        k = self.history
        frames = episode.frames
        start = history_start(episode, t, k)
        history = np.zeros((k, *frames.shape[1:]), np.uint8)
        history[k - (t + 1 - start) :] = frames[start : t + 1]
        item = {"history": history, "history_len": t + 1 - start, "next": frames[t + 1]}
        if self.with_actions:
            item["action"] = episode.actions[t]
        return item

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One window drawn with the subset weighting."""
        return self.sample_from(int(rng.choice(len(self.subsets), p=self.subset_probs)), rng)

    def sample_from(self, subset: int, rng: np.random.Generator) -> dict[str, Any]:
        """One window from one subset: an episode in proportion to its length, then a time step."""
        info = self.subsets[subset]
        for _ in range(1000):
            index = int(rng.choice(len(info.names), p=info.lengths / info.lengths.sum()))
            episode, targets = self._episode(subset, info.names[index])
            if len(targets):  # an episode of terminal steps only has nothing to offer
                item = self.window(episode, int(rng.choice(targets)))
                item["subset"] = subset
                return item
        raise EpisodeError(f"subset {info.name} has no usable transitions")

    def sampler_rng(self) -> np.random.Generator:
        """The generator :meth:`__iter__` samples with (seeded with the seed and the DataLoader worker id)."""
        worker = torch.utils.data.get_worker_info()
        return np.random.default_rng([self.seed, worker.id if worker else 0])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = self.sampler_rng()
        while True:
            yield self.sample(rng)

    def iter_windows(self) -> Iterator[dict[str, Any]]:
        """Every valid window once, in a fixed order (for evaluation)."""
        for subset, info in enumerate(self.subsets):
            for name in info.names:
                episode, targets = self._episode(subset, name)
                for t in targets:
                    item = self.window(episode, int(t))
                    item["subset"] = subset
                    yield item


class MixtureDataset(torch.utils.data.IterableDataset):
    """Endless windows drawn from several directories with fixed shares (one ``ClipDataset`` each)."""

    def __init__(self, shares: Mapping[str | os.PathLike, float], history: int, seed: int) -> None:
        super().__init__()
        probs = np.array([float(s) for s in shares.values()])
        if len(probs) == 0 or (probs < 0).any() or probs.sum() <= 0 or not np.isfinite(probs).all():
            raise ValueError(f"data shares must be finite, >= 0 and with a positive sum, got {dict(shares)}")
        self.roots = [os.fspath(root) for root in shares]
        self.datasets = [ClipDataset(root, history=history) for root in self.roots]
        self.probs = probs / probs.sum()
        self.seed = seed
        self._frame_shape: tuple[tuple[int, ...], str] | None = None  # the first window's, and its directory

    def sampler_rng(self) -> np.random.Generator:
        """The generator :meth:`__iter__` samples with."""
        return np.random.default_rng(self.seed)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One window: a directory drawn by its share, then a window of it."""
        index = int(rng.choice(len(self.datasets), p=self.probs))
        item = self.datasets[index].sample(rng)
        # Each ClipDataset checks its own subsets; batches stack windows of every directory: one frame size.
        shape = tuple(item["next"].shape)
        if self._frame_shape is None:
            self._frame_shape = shape, self.roots[index]
        elif shape != self._frame_shape[0]:
            (h, w, _), ((h0, w0, _), root0) = shape, self._frame_shape
            raise EpisodeError(
                f"{self.roots[index]} has {h}x{w} frames, {root0} {h0}x{w0}; a data mixture needs one frame "
                "size: collect every directory at one size"
            )
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rng = self.sampler_rng()
        while True:
            yield self.sample(rng)


def data_frame_size(data: DataSpec) -> int | None:
    """The frame size of the first episode training would read from ``data`` (directories, or a ``{directory:
    share}`` mixture's directories with a share above 0; episodes of 2 frames or more), or None (in-memory clips,
    nothing usable: training then reports its own error): what a model trained on it has to take."""
    if is_path(data):
        roots = [data]
    elif isinstance(data, Mapping):
        roots = [root for root, share in data.items() if share > 0]
    elif isinstance(data, Sequence) and data and all(is_path(x) for x in data):
        roots = list(data)
    else:
        return None
    try:
        for subset in find_subsets(roots):
            store = EpisodeStore(subset)
            for name, info in store.manifest.items():
                if info.get("frames", 0) >= 2:
                    return int(store.read(name, verify=False).frames.shape[1])
    except (EpisodeError, OSError, ValueError):
        return None
    return None


def is_path(x: Any) -> bool:
    """A filesystem path (str or PathLike), as opposed to in-memory clips."""
    return isinstance(x, (str, os.PathLike))


def open_windows(data: DataSpec, history: int, seed: int) -> Iterable[Mapping[str, Any]]:
    """Windows from a :data:`DataSpec`: directories become a ``ClipDataset``, ``{dir: share}`` a mixture."""
    if isinstance(data, Mapping) and not {"history", "next"} <= set(data):
        return MixtureDataset(data, history, seed)
    if is_path(data):
        data = [data]
    if isinstance(data, (list, tuple)) and data and all(is_path(d) for d in data):
        return ClipDataset([os.fspath(d) for d in data], history=history, seed=seed)
    return data


class WindowBatches(Iterator[Any]):
    """Batches of the windows of a :data:`DataSpec`, at a position a checkpoint can hold.

    Sequences (lists of clips, ``LabelledWindows``) are read in a new permutation every epoch, drawn from
    ``default_rng(seed)``; a ``ClipDataset`` or ``MixtureDataset`` is sampled endlessly with its own generator;
    any other iterable is read as it comes (once, if it is a one-shot iterator). ``collate`` turns a list of
    clips into a batch. Without ``epochs`` the stream is endless (a one-shot iterator ends it, its last partial
    batch dropped); with ``epochs`` it ends after that many passes, with the last partial batch.

    :meth:`state_dict` is the position after the batches drawn so far (None for other iterables, whose position
    cannot be saved); :meth:`load_state_dict` on a stream made with the same data continues from there with
    exactly the windows the saved stream would have drawn next.
    """

    def __init__(
        self,
        data: DataSpec,
        history: int,
        batch_size: int,
        seed: int,
        collate: Callable[[list[Mapping[str, Any]]], Any],
        epochs: int | None = None,
    ) -> None:
        self.source = open_windows(data, history, seed)
        self.batch_size, self.collate, self.epochs = batch_size, collate, epochs
        self.sampled = isinstance(self.source, (ClipDataset, MixtureDataset))
        self.sequence = not self.sampled and isinstance(self.source, Sequence)
        self.rng = np.random.default_rng(seed) if self.sequence else None
        self.epoch, self.done = 0, False
        self._order: np.ndarray | None = None  # this epoch's permutation (sequences)
        self._epoch_state: dict[str, Any] | None = None  # the generator before drawing it
        self._pos = 0  # clips read in this epoch
        self._items: Iterator[Mapping[str, Any]] | None = None  # other iterables

    def __iter__(self) -> WindowBatches:
        return self

    def __next__(self) -> Any:
        # A damaged episode met part-way through a batch leaves the stream where the batch began, so a
        # checkpoint saved then resumes (once the episode is collected again) with the batch it failed on.
        before = self.state_dict() if self.sampled or self.sequence else None
        buf: list[Mapping[str, Any]] = []
        try:
            while len(buf) < self.batch_size:
                clip = self._next_clip()
                if clip is None:
                    if buf and self.epochs is not None:
                        return self.collate(buf)  # evaluation keeps the last partial batch
                    raise StopIteration
                buf.append(clip)
        except EpisodeError:
            if before is not None:
                self.load_state_dict(before)
            raise
        return self.collate(buf)

    def _next_clip(self) -> Mapping[str, Any] | None:
        while not self.done and (self.epochs is None or self.epoch < self.epochs):
            if self.sampled:
                if self.rng is None:  # made on first use, as ClipDataset.__iter__ does (in its worker)
                    self.rng = self.source.sampler_rng()
                return self.source.sample(self.rng)
            if self.sequence:
                if self._order is None:
                    self._epoch_state = self.rng.bit_generator.state
                    self._order, self._pos = self.rng.permutation(len(self.source)), 0
                if self._pos < len(self._order):
                    self._pos += 1
                    return self.source[self._order[self._pos - 1]]
                seen, self._order = self._pos, None
            else:
                if self._items is None:
                    self._items, self._pos = iter(self.source), 0
                clip = next(self._items, None)
                if clip is not None:
                    self._pos += 1
                    return clip
                seen, self._items = self._pos, None
            self.epoch += 1
            # Empty, or a one-shot iterator that is now exhausted.
            self.done = seen == 0 or (not self.sequence and iter(self.source) is self.source)
        return None

    def state_dict(self) -> dict[str, Any] | None:
        """Where the stream stands (plain JSON values), or None when it cannot be saved."""
        if self.sampled:
            if self.rng is None:
                self.rng = self.source.sampler_rng()
            return {"kind": "sampled", "rng": self.rng.bit_generator.state}
        if not self.sequence:
            return None
        in_epoch = self._order is not None
        return {
            "kind": "sequence",
            "epoch": self.epoch,
            "done": self.done,
            # An epoch under way is replayed from its start: the same permutation, then skipped to the position.
            "rng": self._epoch_state if in_epoch else self.rng.bit_generator.state,
            "position": self._pos if in_epoch else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a stream of the same data (ValueError for another kind)."""
        kind = "sampled" if self.sampled else "sequence" if self.sequence else None
        if state.get("kind") != kind:
            names = {"sampled": "episode directories", "sequence": "a list of clips", None: "an iterator"}
            raise ValueError(
                f"the saved data position is one in {names.get(state.get('kind'))}, but this run reads "
                f"{names[kind]}: resume with the same data or use a new out_dir"
            )
        if self.sampled:
            if self.rng is None:
                self.rng = self.source.sampler_rng()
            self.rng.bit_generator.state = dict(state["rng"])
            return
        self.epoch, self.done = int(state["epoch"]), bool(state["done"])
        self.rng.bit_generator.state = dict(state["rng"])
        self._order = None
        if state["position"] is not None:
            self._epoch_state = self.rng.bit_generator.state
            self._order = self.rng.permutation(len(self.source))
            self._pos = min(int(state["position"]), len(self._order))


class PrefetchedBatches(Iterator[Any]):
    """A batch stream whose next ``depth`` batches are drawn in a background thread.

    For training on a GPU: the CPU draws and collates windows while the GPU runs the step (the main thread waits
    for it with the GIL released). The batches are those of ``stream``, in its order; :meth:`state_dict` is the
    stream's position after the last batch handed out (not the last one drawn), so checkpoints and resumed runs
    stay exact. An error in the thread is raised by the ``next`` call that would have returned its batch.
    The thread starts at the first ``next``; :meth:`close` (or leaving it as a context manager) stops it and
    ends the stream.
    """

    def __init__(self, stream: WindowBatches, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.stream = stream
        self._state = stream.state_dict()  # before the first batch: where a checkpoint at step 0 stands
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread: threading.Thread | None = None  # started by the first next()
        # The thread holds the stream, queue and event, not this object: one dropped without close() is
        # collected, and this stops its thread.
        weakref.finalize(self, self._stop.set)

    def __iter__(self) -> PrefetchedBatches:
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(
                target=_draw_ahead, args=(self.stream, self._queue, self._stop), name="adaworld-prefetch",
                daemon=True,
            )  # fmt: skip
            self._thread.start()
        item = self._queue.get()
        if item is _END_OF_STREAM or isinstance(item, BaseException):
            self._finished = True
            self.close()
            if item is _END_OF_STREAM:
                raise StopIteration
            raise item
        batch, self._state = item
        return batch

    def state_dict(self) -> dict[str, Any] | None:
        """The stream's position after the batches handed out so far (see ``WindowBatches.state_dict``)."""
        return self._state

    def close(self) -> None:
        """Stop the thread and end the stream (batches drawn and not taken are dropped)."""
        self._stop.set()
        self._finished = True
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> PrefetchedBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_END_OF_STREAM = object()


def _draw_ahead(stream: WindowBatches, out: queue.Queue, stop: threading.Event) -> None:
    """The thread of :class:`PrefetchedBatches`: (batch, position after it) pairs, then the end or the error."""

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    try:
        while not stop.is_set():
            try:
                batch = next(stream)
            except StopIteration:
                put(_END_OF_STREAM)
                return
            put((batch, stream.state_dict()))
    except BaseException as err:  # handed to the consumer, which raises it
        put(err)
