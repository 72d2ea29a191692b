"""Collectors: real simulators and action-free videos -> episode shards.

Every episode gets a fixed name (``ep_<index>``) and a seed derived from ``(seed, subset, index)``, so a
collection that is interrupted and started again skips what is already on disk and produces exactly
the episodes it would have produced in one go.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from adaworld_gym._checks import check_seed
from adaworld_gym.data.episodes import COLLECTION, MANIFEST, Episode, EpisodeStore
from adaworld_gym.sims.games import check_distribution_mode, check_game, episode_timeout
from adaworld_gym.sims.procgen import NUM_ACTIONS, _import_procgen, level_range

if TYPE_CHECKING:
    from adaworld_gym.sims.push import RobosuitePushEnv

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


@dataclass
class CollectionReport:
    """What a collection wrote (new episodes only) and how fast."""

    episodes_written: int
    episodes_skipped: int
    frames: int
    bytes: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes / max(self.frames, 1)

    def __str__(self) -> str:
        return (
            f"{self.episodes_written} episodes written ({self.episodes_skipped} already present), "
            f"{self.frames} frames in {self.seconds:.1f} s = {self.frames_per_second:.0f} frames/s, "
            f"{self.bytes / 1e6:.2f} MB = {self.bytes_per_frame:.0f} bytes/frame"
        )


def episode_seed(seed: int, subset: str, index: int) -> int:
    """A stable per-episode seed; independent of how episodes are batched or resumed."""
    return int(np.random.SeedSequence([seed, zlib.crc32(subset.encode()), index]).generate_state(1)[0])


def _write_all(
    store: EpisodeStore,
    jobs: Iterable[tuple[str, Episode]],
    total: int,
    skipped: int,
    desc: str,
) -> CollectionReport:
    start = time.perf_counter()
    frames = nbytes = written = 0
    with tqdm(total=total, desc=desc, unit="ep", dynamic_ncols=True) as bar:
        for name, episode in jobs:
            nbytes += store.write(name, episode)
            frames += len(episode.frames)
            written += 1
            bar.update(1)
            bar.set_postfix(frames=frames, fps=f"{frames / (time.perf_counter() - start):.0f}")
    return CollectionReport(written, skipped, frames, nbytes, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- Procgen


def _procgen_batch(
    game: str, seeds: Sequence[int], steps: int, levels: tuple[int, int], distribution_mode: str
) -> list[Episode]:
    """Run len(seeds) random-action episodes of one game side by side in one vectorised gym3 env.

    An episode that reaches the game's time-out (:func:`~adaworld_gym.sims.games.episode_timeout`) uncompleted
    is truncated, as ``ProcgenEnv`` reports it: Procgen ends it like a death, but its last transition is dropped
    (its frame is already the reset) instead of being stored as a termination; ``meta["truncated"]`` is True.
    """
    import gym3

    gym3_env = _import_procgen()
    rngs = [np.random.default_rng(s) for s in seeds]
    level_ids = [int(rng.integers(*levels)) for rng in rngs]
    envs = [
        gym3_env(
            num=1,
            env_name=game,
            start_level=level,
            num_levels=1,
            distribution_mode=distribution_mode,
            rand_seed=int(rng.integers(0, 2**31 - 1)),
        )
        for level, rng in zip(level_ids, rngs, strict=True)
    ]
    env = gym3.ConcatEnv(envs)
    n = len(seeds)
    _, obs, _ = env.observe()
    frames = [[obs["rgb"][i].copy()] for i in range(n)]
    actions = [[] for _ in range(n)]
    rewards = [[] for _ in range(n)]
    terms = [[] for _ in range(n)]
    truncated = [False] * n
    timeout = episode_timeout(game, distribution_mode)
    alive = np.ones(n, bool)
    for _ in range(steps):
        act = np.array([rng.integers(0, NUM_ACTIONS) for rng in rngs], dtype=np.int32)
        env.act(act)
        reward, obs, first = env.observe()
        infos = env.get_info() if first.any() else None
        for i in np.flatnonzero(alive):
            if first[i] and not infos[i].get("prev_level_complete", 0) and len(actions[i]) + 1 >= timeout:
                # A time-out, as ProcgenEnv reports it: no termination, and no step into the reset frame.
                truncated[i] = True
                alive[i] = False
                continue
            actions[i].append(int(act[i]))
            rewards[i].append(float(reward[i]))
            terms[i].append(bool(first[i]))
            # On termination procgen has already reset: this frame starts a new try, so the terminal
            # transition is kept for rewards/terminations but marked, and datasets skip it as a frame target.
            frames[i].append(obs["rgb"][i].copy())
            if first[i]:
                alive[i] = False
        if not alive.any():
            break
    for sub_env in envs:
        sub_env.close()
    return [
        Episode(
            frames=np.stack(frames[i]),
            actions=np.array(actions[i], np.int64),
            rewards=np.array(rewards[i], np.float32),
            terminations=np.array(terms[i], bool),
            env_id=f"AdaWorld/Procgen-{game}-v0",
            action_space={"type": "discrete", "n": NUM_ACTIONS},
            frame_skip=1,
            seed=int(seeds[i]),
            meta={
                "level": level_ids[i],
                "distribution_mode": distribution_mode,
                "policy": "uniform_random",
                "terminal_frame_is_reset": True,
                **({"truncated": True} if truncated[i] else {}),
            },
        )
        for i in range(n)
    ]


def collect_procgen(
    games: Sequence[str],
    episodes: int,
    steps: int,
    out: str | Path,
    levels: str | tuple[int, int] = "train",
    distribution_mode: str = "easy",
    seed: int = 0,
    batch: int = 16,
) -> CollectionReport:
    """Uniform-random-action Procgen episodes, ``episodes`` per game, written to ``out/procgen-<game>/``.

    Episodes stop at ``steps`` actions or when the game ends.
    """
    games = [check_game(g) for g in games]
    for game in games:  # all before any collection.json: Procgen's C code ends the process on a mode it lacks
        check_distribution_mode(game, distribution_mode)
    levels_range = level_range(levels)
    if episodes < 1 or steps < 1 or batch < 1:
        raise ValueError(f"episodes, steps and batch must be positive, got {episodes}, {steps} and {batch}")
    check_seed(seed)  # before a collection records its settings
    reports = []
    for game in games:
        subset = f"procgen-{game}"
        store = EpisodeStore(Path(out) / subset, create=True)
        store.check_collection(
            {"collector": "procgen", "game": game, "steps": steps, "levels": list(levels_range),
             "distribution_mode": distribution_mode, "seed": seed}
        )  # fmt: skip
        store.set_aside_damaged()
        todo = [i for i in range(episodes) if f"ep_{i:06d}" not in store]

        def jobs(store=store, todo=todo, game=game, subset=subset):
            for start in range(0, len(todo), batch):
                chunk = todo[start : start + batch]
                seeds = [episode_seed(seed, subset, i) for i in chunk]
                for i, episode in zip(
                    chunk, _procgen_batch(game, seeds, steps, levels_range, distribution_mode), strict=True
                ):
                    yield f"ep_{i:06d}", episode

        reports.append(_write_all(store, jobs(), len(todo), episodes - len(todo), f"procgen {game}"))
    return _sum_reports(reports)


def _sum_reports(reports: list[CollectionReport]) -> CollectionReport:
    return CollectionReport(
        sum(r.episodes_written for r in reports),
        sum(r.episodes_skipped for r in reports),
        sum(r.frames for r in reports),
        sum(r.bytes for r in reports),
        sum(r.seconds for r in reports),
    )


# ------------------------------------------------------------------------------------------ robosuite push

# Share of push episodes per behaviour: scripted pushes (VP2's demos), noisier pushes, random actions.
PUSH_POLICY_MIX = (("scripted", 0.5), ("scripted_noisy", 0.25), ("random", 0.25))
_PUSH_ENV = None  # one env per worker process, built on first use


def _push_policy(index: int) -> str:
    """Deterministic policy assignment by episode index, in the proportions of PUSH_POLICY_MIX."""
    position = (index % 8) / 8
    edge = 0.0
    for name, share in PUSH_POLICY_MIX:
        edge += share
        if position < edge:
            return name
    return PUSH_POLICY_MIX[-1][0]


def exit_with_parent(parent: int) -> None:
    """Make a worker exit when the collector dies (a killed collector must not leave simulators running)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _push_worker_init(parent: int) -> None:
    """A push worker: exits with the collector and ignores a terminal's Ctrl-C, which the collector handles
    (stopping the pool) instead of each worker printing a KeyboardInterrupt traceback or dying mid-episode."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)


# Scripted pushes can shove an object (the pushed one or a neighbour) off the table; such an episode is redrawn
# with the next attempt's seed, as make_push_tasks drops such demos, so the data matches the planning tasks.
PUSH_MAX_ATTEMPTS = 20


def _push_attempt(
    env: RobosuitePushEnv, index: int, ep_seed: int, attempt: int, steps: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """One try at episode ``index``: frames, actions, and whether every object is still on the table at the end
    (a fallen object does not come back).
    Attempt 0 draws from the episode's seed alone, attempt ``a`` from ``[seed, a]``."""
    from adaworld_gym.sims.push import ScriptedPusher, objects_on_table

    policy = _push_policy(index)
    rng = np.random.default_rng(ep_seed if attempt == 0 else [ep_seed, attempt])
    obs, _ = env.reset(seed=int(rng.integers(0, 2**31 - 1)))
    pusher = ScriptedPusher(
        target_object=index % 4,
        np_random=rng,
        noise_std=0.3 if policy == "scripted_noisy" else 0.05,
        retarget=True,
    )
    frames, actions = [obs], []
    for _ in range(steps):
        if policy == "random":
            action = rng.uniform(-1, 1, 4).astype(np.float32)
            action[3] = 0.0
        else:
            action = pusher.act(env)
        obs, _, _, _, _ = env.step(action)
        frames.append(obs)
        actions.append(action)
    return np.stack(frames), np.stack(actions).astype(np.float32), objects_on_table(env.object_positions())


def _push_episode(args: tuple[int, int, int]) -> tuple[int, Episode]:
    from adaworld_gym.sims.push import RobosuitePushEnv

    global _PUSH_ENV
    index, ep_seed, steps = args
    if _PUSH_ENV is None:
        _PUSH_ENV = RobosuitePushEnv()
    for attempt in range(PUSH_MAX_ATTEMPTS):
        frames, actions, on_table = _push_attempt(_PUSH_ENV, index, ep_seed, attempt, steps)
        if on_table:
            break
    else:
        raise RuntimeError(
            f"push episode {index}: an object fell off the table in all {PUSH_MAX_ATTEMPTS} attempts"
        )
    episode = Episode(
        frames=frames,
        actions=actions,
        env_id="AdaWorld/RobosuitePush-v0",
        action_space={"type": "box", "shape": [4], "low": -1.0, "high": 1.0},
        frame_skip=1,
        seed=ep_seed,
        meta={"policy": _push_policy(index), "target_object": index % 4, "attempt": attempt},
    )
    return index, episode


def collect_push(
    episodes: int, out: str | Path, steps: int = 30, seed: int = 0, workers: int = 2
) -> CollectionReport:
    """RobosuitePush episodes (scripted, noisy-scripted and random actions) written to ``out/push/``.

    An episode in which an object falls off the table is redrawn (up to ``PUSH_MAX_ATTEMPTS`` times); the
    attempt kept is recorded in ``meta["attempt"]``."""
    if episodes < 1 or steps < 1 or workers < 1:
        raise ValueError(
            f"episodes, steps and workers must be positive, got {episodes}, {steps} and {workers}"
        )
    check_seed(seed)  # before a collection records its settings
    store = EpisodeStore(Path(out) / "push", create=True)
    store.check_collection({"collector": "push", "steps": steps, "seed": seed})
    store.set_aside_damaged()
    todo = [i for i in range(episodes) if f"ep_{i:06d}" not in store]
    args = [(i, episode_seed(seed, "push", i), steps) for i in todo]
    if workers <= 1:
        results: Iterable = map(_push_episode, args)
        return _write_all(
            store, ((f"ep_{i:06d}", ep) for i, ep in results), len(todo), episodes - len(todo), "push"
        )
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_push_worker_init,
        initargs=(os.getpid(),),
    )
    try:
        results = pool.map(_push_episode, args)
        return _write_all(
            store, ((f"ep_{i:06d}", ep) for i, ep in results), len(todo), episodes - len(todo), "push"
        )
    finally:
        # map() queues every episode up front and a plain shutdown (a with-block's) waits for all of them: on
        # Ctrl-C or an error the collector would simulate the whole rest of the collection, then drop it.
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------------ videos
def _video_names(files: list[Path], src: Path) -> dict[Path, str]:
    """Episode names of video files: a CRC of the path under ``src``, so a rerun finds what it wrote.

    Two paths with one CRC (about 1% at 10,000 files) would share a name and one video be lost; the later one
    in path order gets a suffix instead (``files`` come sorted, so the names are the same on every run).
    """
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for f in files:
        name = base = f"ep_{zlib.crc32(str(f.relative_to(src)).encode()):08x}"
        k = 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        names[f] = name
        taken.add(name)
    return names


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All RGB frames of a video and its frame rate.

    A GIF's frames are shown for their own delays, and GIF writers (Pillow among them) merge repeated frames into
    one longer one: a recording where nothing moved for 5 steps holds 1 frame. Each frame is repeated by its delay
    over the frame time (written in the comment of this package's GIFs, else the shortest delay), so the frames
    come back at one rate, as many as were recorded.
    """
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence

        try:
            with Image.open(path) as image:
                comment = image.info.get("comment", b"")
                shown = [
                    (np.asarray(frame.convert("RGB")), int(frame.info.get("duration") or 0))
                    for frame in ImageSequence.Iterator(image)  # grey and palette GIFs too
                ]
        except Exception as e:  # Pillow raises several unrelated types for a bad file
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"cannot read GIF {path} (corrupt or not a GIF): {reason}") from None
        delays = [d for _, d in shown if d > 0]
        step = min(delays) if delays else 100  # ms; GIFs without delays play at 10 fps in browsers
        written = re.search(rb"frame_ms=(\d+)", comment if isinstance(comment, bytes) else comment.encode())
        if written and int(written.group(1)) > 0:
            step = int(written.group(1))
        frames = [f for f, d in shown for _ in range(max(1, round((d or step) / step)))]
        return frames, 1000.0 / step
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path} (missing, corrupt or an unsupported codec)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise ValueError(f"no frames could be decoded from {path}")
    return frames, float(fps)


def square_resize(frame: np.ndarray, size: int = 64) -> np.ndarray:
    """Centre-crop to a square, then resize with area averaging (anti-aliased)."""
    import cv2

    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(frame[top : top + side, left : left + side])
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def _records_source(store: EpisodeStore) -> bool:
    """Whether a video subset records its source folder: all do but those collected before it was recorded,
    whose record (without ``source``) is kept, so they stay usable and resumable as before."""
    try:
        recorded = json.loads((store.root / COLLECTION).read_text())
    except (OSError, ValueError):
        return True  # none yet (or a corrupt one, which check_collection reports)
    return not isinstance(recorded, dict) or "source" in recorded


def _refuse_collected_elsewhere(out: Path, src: Path, files: list[Path], writing: set[str]) -> None:
    """Refuse videos that another video subset of ``out`` (one not written now) already holds: collecting a
    folder and then one of its subfolders would put the same videos in two subsets, counted twice. Videos are
    matched by their resolved path, in subsets whose recorded source folder holds ``src`` or lies inside it (a
    source moved since, or a subset collected before sources were recorded, is not matched)."""
    wanted = {f.resolve() for f in files}
    here = src.resolve()
    for subset in sorted(out.glob("video-*")) if out.is_dir() else ():
        if subset.name in writing or not (subset / COLLECTION).is_file() or not (subset / MANIFEST).is_file():
            continue
        try:
            record = json.loads((subset / COLLECTION).read_text())
            root = Path(record["source"]).resolve()
            if not (root == here or root in here.parents or here in root.parents):
                continue  # unrelated folders share no videos (and need no path resolved)
            collected = {
                (root / info["env_id"].removeprefix("video:")).resolve()
                for info in EpisodeStore(subset).manifest.values()
                if str(info.get("env_id", "")).startswith("video:")
            }
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an older or unreadable record: nothing to compare against (the store reports its own)
        both = sorted(wanted & collected)
        if both:
            raise ValueError(
                f"{len(both)} of these videos are already collected in {subset} (e.g. {both[0]}): collecting them "
                f"from {src} would count them twice; collect {record['source']} again into {out} instead, or "
                "use another --out"
            )


def collect_videos(
    src: str | Path, out: str | Path, size: int = 64, target_hz: float = 10.0, min_frames: int = 2
) -> CollectionReport:
    """Action-free videos under ``src`` -> one subset per folder (``out/video-<folder>/``).

    A video that cannot be read does not stop the others: they are all collected, then a ``ValueError`` lists
    the unreadable ones (fix or remove them and rerun; the videos collected are kept and not read again)."""
    src = Path(src)
    if src.is_file():
        raise ValueError(f"{src} is a file: pass the directory that holds the videos (one subset per folder)")
    if not src.is_dir():
        raise ValueError(f"video source directory not found: {src}")
    if size < 1 or not target_hz > 0 or min_frames < 1:
        raise ValueError(
            f"size, target_hz and min_frames must be positive, got {size}, {target_hz} and {min_frames}"
        )
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise ValueError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under {src}")
    by_folder: dict[Path, list[Path]] = {}
    for f in files:
        by_folder.setdefault(f.parent, []).append(f)
    labels: dict[Path, str] = {}
    for folder in by_folder:
        label = "root" if folder == src else "-".join(folder.relative_to(src).parts)
        # a-b/ and a/b/ (or root/ and the top level) would share video-a-b/: one subset where there are two
        other = next((f for f, known in labels.items() if known == label), None)
        if other is not None:
            raise ValueError(
                f"video folders {other} and {folder} would both be collected into video-{label}/ (one subset "
                "per folder): rename one of them"
            )
        labels[folder] = label
    _refuse_collected_elsewhere(Path(out), src, files, {f"video-{label}" for label in labels.values()})
    stores = {}
    for folder, label in labels.items():  # every subset's settings checked before any episode is written
        store = EpisodeStore(Path(out) / f"video-{label}", create=True)
        # Frames of another size or rate must not join this subset on a rerun, nor videos of another source
        # folder: episode names come from paths under the source, so its same-named files would be skipped.
        settings = {"collector": "videos", "size": size, "target_hz": target_hz, "min_frames": min_frames}
        store.check_collection(
            {**settings, "source": str(src.resolve())} if _records_source(store) else settings
        )
        stores[folder] = label, store
    reports, unreadable = [], []
    for folder, folder_files in by_folder.items():
        label, store = stores[folder]
        names = _video_names(folder_files, src)
        store.set_aside_damaged()
        todo = [f for f in folder_files if names[f] not in store]

        def jobs(todo=todo, names=names) -> Iterable[tuple[str, Episode]]:
            for f in todo:
                try:
                    frames, fps = read_video(f)
                except ValueError as e:
                    tqdm.write(f"skipping {f}: {e}")
                    unreadable.append(f)
                    continue
                skip = max(1, round(fps / target_hz))
                kept = [square_resize(fr, size) for fr in frames[::skip]]
                if len(kept) < min_frames:
                    tqdm.write(f"skipping {f}: only {len(kept)} frames after frame skip {skip}")
                    continue
                yield (
                    names[f],
                    Episode(
                        frames=np.stack(kept),
                        env_id=f"video:{f.relative_to(src)}",
                        frame_skip=skip,
                        meta={"source": str(f.relative_to(src)), "source_fps": fps},
                    ),
                )

        reports.append(_write_all(store, jobs(), len(todo), len(folder_files) - len(todo), f"videos {label}"))
    if unreadable:
        listed = ", ".join(map(str, unreadable[:5])) + (
            f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        )
        raise ValueError(
            f"{len(unreadable)} of {len(files)} videos could not be read ({listed}); the others were collected "
            f"into {out}: fix or remove these and rerun to add them"
        )
    return _sum_reports(reports)
