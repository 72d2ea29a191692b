"""A plug-in model for the planning benchmarks: "nothing moves" (the last context frame, repeated).

Benchmark your own video model the same way: a module (or file) with a factory that takes the real env's id and
returns an object with ``action_space``, ``context_frames``, ``uses_state`` and ``rollout`` (the
``adaworld_gym.planning.Dynamics`` protocol), then

    python -m benchmarks.vp2_push --preset cpu --models oracle,random \\
        --dynamics copy_last=docs/examples/copy_last_dynamics.py:make
    python -m benchmarks.procgen_planning --preset cpu --models oracle,random \\
        --dynamics copy_last=docs/examples/copy_last_dynamics.py:make

``rollout`` gets at most ``context_frames`` past frames (fewer at an episode's start; planners pass a read-only
view, so copy before writing).
Optional: ``reseed(seed)`` (called before every episode with the seed every model gets) and ``close()``.
This model cannot tell actions apart, so the planner is blind: a floor for the learned models' rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


class CopyLastDynamics:
    """Predicts that every action leaves the last context frame as it is."""

    context_frames = 1  # how many of the most recent real frames rollout gets
    uses_state = False  # True would hand rollout the simulator's state instead of frames (the oracle's way)

    def __init__(self, action_space: spaces.Space) -> None:
        self.action_space = action_space

    def rollout(self, context: np.ndarray, actions: np.ndarray, state: Any = None) -> np.ndarray:
        """uint8 context ``[B, k, H, W, 3]``, actions ``[B, T, ...]`` -> uint8 frames ``[B, T, H, W, 3]``."""
        return np.repeat(np.asarray(context)[:, -1:], actions.shape[1], axis=1)


def make(env_id: str) -> CopyLastDynamics:
    """The factory the benchmarks call, once per env (per game for Procgen)."""
    import gymnasium

    import adaworld_gym  # noqa: F401  (registers the AdaWorld/ env ids)

    env = gymnasium.make(env_id)
    try:
        return CopyLastDynamics(env.action_space)
    finally:
        env.close()
