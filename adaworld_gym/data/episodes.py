"""The episode shard format: one compressed file per episode, plus a manifest with checksums.

A shard is a zip archive holding ``.npy`` arrays and a ``meta.json``. The frames are one raw
``.npy`` compressed with LZMA (preset 3): its long match window finds the unchanged parts of the previous
frame, which beats frame differencing on scrolling games and costs about 0.5 ms per 64x64 frame.
The zip's CRCs catch corruption. Arrays are read with ``allow_pickle=False``; nothing in a shard is ever
unpickled.

Writes are atomic (temporary file in the same directory, fsync, rename), so a killed collection never
leaves a half-written shard under its final name. The manifest (``manifest.json``) maps shard names to
their SHA-256 and sizes; it is rewritten atomically after every shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import lzma
import os
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not on Windows: writers of one directory are then not serialised
    fcntl = None

from adaworld_gym._version import __version__

FORMAT = "adaworld-episode/1"
MANIFEST = "manifest.json"
# Held (flock) while a writer updates the manifest, so that two writers of one directory keep each other's entries.
MANIFEST_LOCK = ".manifest.lock"
# The settings a collector wrote the subset with (EpisodeStore.check_collection).
COLLECTION = "collection.json"
SHARD_SUFFIX = ".awe"
FRAMES_MEMBER = "frames.npy.xz"
LZMA_PRESET = 3
FRAME_SHAPE = (64, 64, 3)


class EpisodeError(ValueError):
    """A shard or manifest is missing, corrupt, truncated or inconsistent."""


@dataclass
class Episode:
    """One episode: ``frames[t+1]`` follows ``frames[t]`` under ``actions[t]``.

    Attributes:
        frames: uint8 ``[T+1, H, W, 3]``.
        actions: ``[T]`` int64 (discrete) or ``[T, A]`` float32 (continuous), or None for action-free video.
        rewards: float32 ``[T]`` (zeros when unknown).
        terminations: bool ``[T]``; ``terminations[t]`` means the episode ended after action ``t``.
        env_id: where the frames came from (a Gymnasium id, or ``video:<name>``).
        action_space: JSON description of the action space, e.g. ``{"type": "discrete", "n": 15}``.
        frame_skip: simulator steps (or source video frames) per stored frame.
        seed: the seed the episode was generated from, if any.
        meta: any further JSON-serialisable facts (level, task, source file).
    """

    frames: np.ndarray
    actions: np.ndarray | None = None
    rewards: np.ndarray | None = None
    terminations: np.ndarray | None = None
    env_id: str = "unknown"
    action_space: dict[str, Any] | None = None
    frame_skip: int = 1
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    version: str = __version__

    def __post_init__(self) -> None:
        if self.meta is None:
            self.meta = {}
        # Readers look entries up in it (meta.get): anything else is refused at the write, not at the read.
        if not isinstance(self.meta, dict):
            raise ValueError(f"meta must be a dict, got {type(self.meta).__name__}")
        self.frames = np.asarray(self.frames)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(
                f"frames must be uint8 [T,H,W,3], got {self.frames.dtype} {tuple(self.frames.shape)}"
            )
        if len(self.frames) < 1 or 0 in self.frames.shape[1:3]:
            raise ValueError(f"an episode needs at least one non-empty frame, got {tuple(self.frames.shape)}")
        n = len(self.frames) - 1
        if self.rewards is None:
            self.rewards = np.zeros(n, np.float32)
        if self.terminations is None:
            self.terminations = np.zeros(n, bool)
        self.rewards = np.asarray(self.rewards, np.float32)
        terminations = np.asarray(self.terminations)
        for name, value in (("rewards", self.rewards), ("terminations", terminations)):
            if value.shape != (n,):  # one per transition: [T-1], not a scalar or a table
                raise ValueError(f"{name} must have shape [len(frames)-1] = ({n},), got {value.shape}")
        if not np.isfinite(self.rewards).all():
            raise ValueError("rewards contain NaN or inf")
        if terminations.dtype != bool and not np.isin(terminations, (0, 1)).all():
            raise ValueError(
                f"terminations must be booleans (or 0/1), got values {np.unique(terminations)[:5]}"
            )
        self.terminations = terminations.astype(bool)
        if self.actions is not None:
            self.actions = np.asarray(self.actions)
            if self.actions.ndim == 0 or (self.actions.dtype.kind in "iu" and self.actions.ndim != 1):
                raise ValueError(
                    f"actions must be [T-1] (discrete) or [T-1, A] (continuous), got {self.actions.shape}"
                )
            if len(self.actions) != n:
                raise ValueError(f"actions must have len(frames)-1 = {n} entries, got {len(self.actions)}")
            if self.actions.dtype.kind in "iu":
                self.actions = self.actions.astype(np.int64)
            elif self.actions.dtype.kind == "f":
                if not np.isfinite(self.actions).all():
                    raise ValueError("actions contain NaN or inf")
                self.actions = self.actions.astype(np.float32)
            else:
                raise ValueError(f"actions must be integer or float, got {self.actions.dtype}")
            if self.action_space is not None:
                _check_actions_in_space(self.actions, self.action_space)

    @property
    def num_transitions(self) -> int:
        return len(self.frames) - 1


def _check_actions_in_space(actions: np.ndarray, space: dict[str, Any]) -> None:
    """Actions that the episode's own action-space description (``{"type": "discrete", "n": 15}``, ...) allows."""
    kind = space.get("type")
    if kind == "discrete":
        n = int(space["n"])
        if actions.dtype.kind not in "iu" or actions.ndim != 1:
            raise ValueError(
                f"discrete actions must be integers of shape [T], got {actions.dtype} {actions.shape}"
            )
        if len(actions) and (actions.min() < 0 or actions.max() >= n):
            raise ValueError(f"discrete actions must lie in [0, {n}), got {actions.min()}..{actions.max()}")
    elif kind == "box":
        shape = tuple(space["shape"])
        if actions.shape[1:] != shape:
            raise ValueError(
                f"box actions must have shape [T, {', '.join(map(str, shape))}], got {actions.shape}"
            )
        low = np.broadcast_to(np.asarray(space["low"], np.float32), shape)
        high = np.broadcast_to(np.asarray(space["high"], np.float32), shape)
        slack = 1e-5 * np.maximum(1.0, np.abs(high - low))  # float32 round trips
        if len(actions) and ((actions < low - slack).any() or (actions > high + slack).any()):
            raise ValueError(
                f"box actions must lie in [{space['low']}, {space['high']}], got {actions.min()}..{actions.max()}"
            )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _current_umask()  # new files get 0o666 & ~UMASK, directories 0o777 & ~UMASK


def fsync_path(path: Path) -> None:
    """Flush a file or a directory to disk (a directory's fsync makes the renames in it survive a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def swap_in_directory(side: Path, directory: Path) -> None:
    """Move the finished directory ``side`` into the place of ``directory`` (a sibling; may not exist yet).

    Every file of ``side`` is flushed first. The old directory is moved aside before the new one is moved in and
    deleted after, so a kill leaves the old one or the new one (or, between the two renames, the old one in
    ``.NAME-old``).
    """
    import shutil

    for path in [*(p for p in side.rglob("*") if p.is_file()), side]:
        # safetensors writes through mkstemp (0600): give files the usual permissions, as for other writes.
        if path.is_file():
            os.chmod(path, 0o666 & ~UMASK)
        fsync_path(path)
    old = directory.with_name(f".{directory.name}-old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(side, directory)
    fsync_path(directory.parent)  # the swap itself, before the old copy goes
    shutil.rmtree(old, ignore_errors=True)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_episode(episode: Episode) -> bytes:
    """Serialise an episode to the shard byte format."""
    frames = episode.frames
    arrays = {"rewards": episode.rewards, "terminations": episode.terminations}
    if episode.actions is not None:
        arrays["actions"] = episode.actions
    meta = {
        "format": FORMAT,
        "env_id": episode.env_id,
        "action_space": episode.action_space,
        "frame_skip": int(episode.frame_skip),
        "seed": None if episode.seed is None else int(episode.seed),
        "num_frames": len(frames),
        "frame_shape": list(frames.shape[1:]),
        "version": episode.version,
        "meta": episode.meta,
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(_member("meta.json"), json.dumps(meta))
        frames_xz = lzma.compress(_npy_bytes(frames), preset=LZMA_PRESET)
        zf.writestr(_member(FRAMES_MEMBER, zipfile.ZIP_STORED), frames_xz)
        for name, array in arrays.items():
            zf.writestr(_member(f"{name}.npy"), _npy_bytes(array))
    return buf.getvalue()


def _member(name: str, compress_type: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    """A zip member with a fixed time stamp: the same episode makes the same bytes (and checksum) whenever it is
    written, so an episode collected again after damage leaves a run's data digest as it was."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compress_type
    info.external_attr = 0o600 << 16  # what writestr gives a member named by a string
    return info


def read_episode(path: str | os.PathLike) -> Episode:
    """Read one shard, checking its structure; any damage raises :class:`EpisodeError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise EpisodeError(f"episode file not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("meta.json"))
            if not isinstance(meta, dict):
                raise EpisodeError(f"{path}: meta.json is not a JSON object")
            if meta.get("format") != FORMAT:
                raise EpisodeError(f"{path}: unknown episode format {meta.get('format')!r}")
            arrays = {
                name[:-4]: np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
                for name in zf.namelist()
                if name.endswith(".npy")
            }
            arrays["frames"] = np.load(
                io.BytesIO(lzma.decompress(zf.read(FRAMES_MEMBER))), allow_pickle=False
            )
    except EpisodeError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        lzma.LZMAError,
        zlib.error,  # a damaged deflate stream (a flipped byte in an array member)
        NotImplementedError,  # a damaged header: "compression method not supported", "zip file version"
        RuntimeError,  # a damaged header flag: "encrypted, password required"
        KeyError,
        EOFError,
        OSError,
        ValueError,
    ) as e:
        raise EpisodeError(f"corrupt or truncated episode file {path}: {e}") from e
    try:
        frames = arrays["frames"]
        if len(frames) != meta["num_frames"]:
            raise EpisodeError(f"{path}: expected {meta['num_frames']} frames, found {len(frames)}")
        if "frame_shape" in meta and tuple(frames.shape[1:]) != tuple(meta["frame_shape"]):
            raise EpisodeError(
                f"{path}: frames are {frames.shape[1:]}, its header says {meta['frame_shape']}"
            )
        return Episode(
            frames=frames,
            actions=arrays.get("actions"),
            rewards=arrays["rewards"],
            terminations=arrays["terminations"],
            env_id=meta["env_id"],
            action_space=meta["action_space"],
            frame_skip=meta["frame_skip"],
            seed=meta["seed"],
            meta=meta.get("meta", {}),
            version=meta.get("version", "unknown"),
        )
    except KeyError as e:
        raise EpisodeError(f"{path}: missing field {e}") from e
    except (ValueError, TypeError, AttributeError) as e:  # header fields of the wrong type, too
        if isinstance(e, EpisodeError):
            raise
        raise EpisodeError(f"{path}: inconsistent episode: {e}") from e


class EpisodeStore:
    """A directory of episode shards with a checksummed manifest.

    Shard names are chosen by the writer (collectors use ``ep_<index>``), which is what makes an
    interrupted collection resumable without duplicates: a name already present is skipped.
    """

    def __init__(self, root: str | os.PathLike, create: bool = False):
        self.root = Path(root)
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = self.root / ".write-test"
                probe.write_bytes(b"")
                probe.unlink(missing_ok=True)  # a collector starting beside this one may have removed it
            except OSError as e:
                raise OSError(f"cannot write to output directory {self.root}: {e.strerror or e}") from e
        elif not self.root.is_dir():
            raise EpisodeError(f"episode directory not found: {self.root}")
        self._manifest_id: tuple[int, ...] | None = None  # which manifest file self.manifest was read from
        self.manifest = self._load_manifest()
        if create:
            with self._locked():
                self._adopt_orphans()

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def _stat_id(self) -> tuple[int, ...] | None:
        try:
            st = self.manifest_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _load_manifest(self) -> dict[str, dict[str, Any]]:
        self._manifest_id = self._stat_id()
        if self._manifest_id is None:
            return {}
        try:
            data = json.loads(self.manifest_path.read_text())
            episodes = data["episodes"]
        except (ValueError, KeyError, TypeError) as e:  # ValueError: bad JSON, and bytes that are not UTF-8
            raise EpisodeError(f"corrupt manifest {self.manifest_path}: {e}") from e
        if not isinstance(episodes, dict):
            raise EpisodeError(f"corrupt manifest {self.manifest_path}: 'episodes' is not a mapping")
        # Readers index these fields directly; a damaged entry must fail here, naming the manifest, not later
        # as a bare KeyError.
        for name, entry in episodes.items():
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("sha256"), str)
                and all(isinstance(entry.get(k), int) for k in ("bytes", "frames"))
                and isinstance(entry.get("has_actions"), bool)
            ):
                raise EpisodeError(
                    f"corrupt manifest {self.manifest_path}: entry {name!r} lacks sha256, bytes, frames or "
                    f"has_actions: {entry!r}"
                )
        return dict(episodes)

    @contextlib.contextmanager
    def _locked(self):
        """Hold the directory's manifest lock and bring :attr:`manifest` up to date with the file.

        Every write rewrites the whole manifest from memory; two writers of one directory (two collectors run
        side by side) would otherwise each drop the entries of the other, leaving shards no reader sees.
        """
        with contextlib.ExitStack() as stack:
            if fcntl is not None:
                lock_path = self.root / MANIFEST_LOCK
                # flock needs any open descriptor: read-only when another user's lock file is not writable here.
                mode = "rb" if lock_path.exists() and not os.access(lock_path, os.W_OK) else "ab"
                lock = stack.enter_context(open(lock_path, mode))
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
                except OSError:  # a file system without locks (some network mounts): go on unserialised
                    pass
            if self._stat_id() != self._manifest_id:  # another writer saved since we read it
                self.manifest = self._load_manifest()
            yield

    def _adopt_orphans(self) -> None:
        """Index shards that were renamed into place but not yet recorded (a kill between the two)."""
        changed = False
        for path in sorted(self.root.glob(f"*{SHARD_SUFFIX}")):
            name = path.stem
            if name in self.manifest:
                continue
            try:
                episode = read_episode(path)
            except EpisodeError as e:
                # Set aside, not deleted (it may be a transient read error or a hand-copied file); the
                # collector regenerates the name.
                path.replace(path.with_name(path.name + ".corrupt"))
                warnings.warn(f"{e}; moved aside to {path.name}.corrupt", stacklevel=2)
                continue
            self.manifest[name] = self._entry(path, episode)
            changed = True
        if changed:
            self._save_manifest()

    def _entry(self, path: Path, episode: Episode) -> dict[str, Any]:
        return {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "frames": len(episode.frames),
            "env_id": episode.env_id,
            "has_actions": episode.actions is not None,
        }

    def _save_manifest(self) -> None:
        data = {"format": FORMAT, "episodes": dict(sorted(self.manifest.items()))}
        atomic_write_bytes(self.manifest_path, json.dumps(data, indent=1).encode())
        self._manifest_id = self._stat_id()

    def path(self, name: str) -> Path:
        return self.root / f"{name}{SHARD_SUFFIX}"

    def check_collection(self, settings: dict[str, Any]) -> None:
        """Record what a collector writes here (``collection.json``) or refuse settings that differ from it.

        Collectors skip episode names already present, so collecting into a subset written with other settings
        (other levels, seed or episode length) would silently mix the two; the number of episodes may grow.
        """
        path = self.root / COLLECTION
        settings = json.loads(json.dumps(settings))  # tuples -> lists, as read back
        with self._locked():  # two collectors started together must not both record their settings
            if not path.is_file():
                atomic_write_bytes(path, json.dumps(settings, indent=1).encode())
                return
            try:
                recorded = json.loads(path.read_text())
            except ValueError as e:
                raise EpisodeError(f"corrupt collection record {path}: {e}") from e
        if not isinstance(recorded, dict):
            raise EpisodeError(f"corrupt collection record {path}: not a JSON object")
        if recorded != settings:
            changed = sorted(k for k in {*recorded, *settings} if recorded.get(k) != settings.get(k))
            raise ValueError(
                f"{self.root} was collected with other settings ({', '.join(changed)}: "
                f"{ {k: recorded.get(k) for k in changed} } there, { {k: settings.get(k) for k in changed} } "
                "now); collect into another directory"
            )

    def set_aside_damaged(self) -> list[str]:
        """Move shards whose checksum no longer matches the manifest to ``<file>.corrupt`` and forget them.

        Collectors call it before skipping the names present, so rerunning the collection that wrote a damaged
        episode writes it again. Returns the names set aside.
        """
        with self._locked():
            damaged = [
                name
                for name in self.names()
                if self.path(name).exists() and sha256_file(self.path(name)) != self.manifest[name]["sha256"]
            ]
            for name in damaged:
                path = self.path(name)
                path.replace(path.with_name(path.name + ".corrupt"))
                del self.manifest[name]
            if damaged:
                self._save_manifest()
        if damaged:
            warnings.warn(
                f"{len(damaged)} damaged episode(s) in {self.root} (checksum mismatch) moved aside to *.corrupt "
                f"and collected again: {', '.join(damaged[:5])}{' ...' if len(damaged) > 5 else ''}",
                stacklevel=2,
            )
        return damaged

    def __contains__(self, name: str) -> bool:
        return name in self.manifest and self.path(name).exists()

    def __len__(self) -> int:
        return len(self.manifest)

    def names(self) -> list[str]:
        return sorted(self.manifest)

    def write(self, name: str, episode: Episode) -> int:
        """Atomically write a shard and record it in the manifest; returns its size in bytes."""
        path, data = self.path(name), encode_episode(episode)
        with self._locked():  # the shard too: its manifest checksum must be of the file that stays
            atomic_write_bytes(path, data)
            self.manifest[name] = self._entry(path, episode)
            self._save_manifest()
        return self.manifest[name]["bytes"]

    def read(self, name: str, verify: bool = True) -> Episode:
        if name not in self.manifest:
            raise EpisodeError(f"no episode {name!r} in {self.manifest_path}")
        path = self.path(name)
        if not path.exists():
            raise EpisodeError(f"episode file listed in the manifest is missing: {path}")
        if verify and sha256_file(path) != self.manifest[name]["sha256"]:
            raise EpisodeError(
                f"checksum mismatch (corrupt or modified file): {path}; rerun the command that collected it "
                "(`adaworld collect` or `adaworld adapt`, same output directory): it collects damaged episodes again"
            )
        return read_episode(path)

    def total_frames(self) -> int:
        return sum(entry["frames"] for entry in self.manifest.values())

    def total_bytes(self) -> int:
        return sum(entry["bytes"] for entry in self.manifest.values())
