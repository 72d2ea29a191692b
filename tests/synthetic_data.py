"""Synthetic data and small helpers shared by several test modules (not collected: no ``test_`` prefix)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from adaworld_gym.data.episodes import Episode, EpisodeStore

MOVES = np.array([[0, 0], [-4, 0], [4, 0], [0, -4], [0, 4]])  # action 0 is a no-op; 5..14 never taken


def grid_episodes(root, episodes: int = 4, steps: int = 12, seed: int = 0):
    """Discrete-action episodes (Procgen's Discrete(15) space; actions 0-4 move a square)."""
    store = EpisodeStore(root / "grid", create=True)
    rng = np.random.default_rng(seed)
    for i in range(episodes):
        pos, frames = rng.integers(16, 48, 2), []
        actions = rng.integers(0, 5, steps)
        for t in range(steps + 1):
            frame = np.full((64, 64, 3), 40, np.uint8)
            frame[pos[0] - 4 : pos[0] + 4, pos[1] - 4 : pos[1] + 4] = (250, 200, 30)
            frames.append(frame)
            if t < steps:
                pos = np.clip(pos + MOVES[actions[t]], 6, 58)
        store.write(
            f"ep_{i:06d}",
            Episode(
                frames=np.stack(frames),
                actions=actions.astype(np.int64),
                env_id="synthetic:grid",
                action_space={"type": "discrete", "n": 15},
            ),
        )
    return root / "grid"


def save_tiny_models(root, action_agnostic: bool = False, frame_size: int = 64, seed: int = 1):
    """A tiny random world model and LAM on disk (``root/wm``, ``root/lam``), as pretraining runs leave them;
    returns the two directories and the bundle they come from."""
    from adaworld_gym.models.bundle import tiny_random_bundle

    bundle = tiny_random_bundle("latent", seed=seed, action_agnostic=action_agnostic, frame_size=frame_size)
    bundle.world_model.save_pretrained(root / "wm")
    bundle.lam.save_pretrained(root / "lam")
    return root / "wm", root / "lam", bundle


def random_frames(shape, seed: int = 0) -> np.ndarray:
    """Uniform random uint8 frames of ``shape``."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def run_in_fresh_interpreter(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: a check whose failure would be Procgen's C code ending the process then
    fails one test instead of killing the whole run."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )
