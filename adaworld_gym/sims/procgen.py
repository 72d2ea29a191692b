"""The 16 Procgen games as Gymnasium environments (``AdaWorld/Procgen-<game>-v0``).

Wraps ``procgen-mirror``'s gym3 interface. Each ``reset`` draws a level from the configured level range
and a game seed from ``self.np_random``, so ``reset(seed=s)`` is exactly reproducible.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from adaworld_gym._imports import quiet_imports
from adaworld_gym.sims.games import (
    TEST_LEVELS,
    TRAIN_LEVELS,
    check_distribution_mode,
    check_game,
    episode_timeout,
)

NUM_ACTIONS = 15


def _import_procgen():
    with quiet_imports():
        from procgen import ProcgenGym3Env
    return ProcgenGym3Env


def level_range(levels: str | tuple[int, int]) -> tuple[int, int]:
    """Resolve ``"train"``, ``"test"`` or an explicit ``(low, high)`` half-open level range."""
    if levels == "train":
        return TRAIN_LEVELS
    if levels == "test":
        return TEST_LEVELS
    if isinstance(levels, (tuple, list)) and len(levels) == 2:
        low, high = int(levels[0]), int(levels[1])
        if 0 <= low < high < 2**31:
            return low, high
    raise ValueError(
        f"levels must be 'train', 'test' or a (low, high) range with 0 <= low < high, got {levels!r}"
    )


def check_discrete_action(action: Any, n: int) -> int:
    """Validate a discrete action, accepting Python and numpy integers (and 0-d/1-element arrays)."""
    array = np.asarray(action)
    if array.size != 1:
        raise ValueError(f"expected a single discrete action, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.isfinite(array).all() and float(array.item()).is_integer():
            pass  # 3.0 is a fine spelling of 3
        else:
            raise ValueError(
                f"discrete action must be an integer in [0, {n}), got {action!r} ({array.dtype})"
            )
    value = int(array.item())
    if not 0 <= value < n:
        raise ValueError(f"action {value} out of range: this env has {n} actions, [0, {n})")
    return value


class ProcgenEnv(gymnasium.Env):
    """One Procgen game with 64x64 RGB observations and the full 15-action set.

    Args:
        game: one of :data:`adaworld_gym.sims.games.PROCGEN_GAMES`.
        distribution_mode: Procgen's difficulty setting (``"easy"`` or ``"hard"``, ...).
        levels: ``"train"`` (levels 0-8999), ``"test"`` (9000-9999, held out) or an explicit ``(low, high)``.
        use_backgrounds: Procgen's background images (on by default, as in Procgen).
        render_mode: only ``"rgb_array"``.

    ``reset`` options: ``{"level": int}`` to pick the level, ``{"state": array}`` to restore a state from
    :meth:`get_state`. Procgen resets itself when an episode ends, so the observation returned with
    ``terminated=True`` is already the first frame of a new try at the same level; ``info["level_complete"]``
    says whether the level was solved. An episode that reaches Procgen's own time limit (:attr:`timeout`: 1000
    steps in most games) without being completed ends with ``truncated=True`` instead (steps counted from the
    last reset or restore).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        game: str,
        distribution_mode: str = "easy",
        levels: str | tuple[int, int] = "train",
        use_backgrounds: bool = True,
        render_mode: str | None = "rgb_array",
    ):
        self.game = check_game(game)
        check_distribution_mode(self.game, distribution_mode)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.distribution_mode = distribution_mode
        self.timeout = episode_timeout(self.game, distribution_mode)
        self._episode_steps = 0
        self.levels = level_range(levels)
        self.use_backgrounds = use_backgrounds
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = spaces.Discrete(NUM_ACTIONS)
        self._gym3_cls = _import_procgen()
        self._env = None
        self._obs: np.ndarray | None = None
        self.level: int | None = None

    def _make(self, level: int, game_seed: int):
        if self._env is not None:
            self._env.close()
        self._env = self._gym3_cls(
            num=1,
            env_name=self.game,
            start_level=int(level),
            num_levels=1,
            distribution_mode=self.distribution_mode,
            use_backgrounds=self.use_backgrounds,
            rand_seed=int(game_seed),
        )
        self.level = int(level)
        # A serialized state starts with a 4-byte field, the name's length and the game's name: Procgen's C code
        # kills the whole process on a state of another game, so set_state compares this prefix first.
        self._state_header = self._env.callmethod("get_state")[0][: 8 + len(self.game)]

    def _observe(self) -> np.ndarray:
        _, obs, _ = self._env.observe()
        return obs["rgb"][0].copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        low, high = self.levels
        level = options.get("level")
        if level is None:
            level = int(self.np_random.integers(low, high))
        elif not isinstance(level, (int, np.integer)) or not low <= level < high:
            # outside the configured range would quietly cross the train/test split
            raise ValueError(
                f"options['level'] must be an int in this env's levels [{low}, {high}), got {level!r}"
            )
        self._make(level, int(self.np_random.integers(0, 2**31 - 1)))
        if "state" in options:
            self.set_state(options["state"])
        self._obs = self._observe()
        self._episode_steps = 0
        # A copy: render() must show the game's frame even after a caller edits the observation in place.
        return self._obs.copy(), {"level": self.level}

    def step(self, action):
        if self._env is None:
            raise RuntimeError("call reset() before step()")
        action = check_discrete_action(action, NUM_ACTIONS)
        self._env.act(np.array([action], dtype=np.int32))
        reward, obs, first = self._env.observe()
        info = self._env.get_info()[0]
        terminated = bool(first[0])
        self._obs = obs["rgb"][0].copy()
        self.level = int(
            info.get("level_seed", self.level)
        )  # the level being played (a restore may change it)
        self._episode_steps += 1
        step_info = {"level": self.level}
        truncated = False
        if terminated:
            step_info["level_complete"] = complete = bool(info.get("prev_level_complete", 0))
            # Procgen ends a timed-out episode like a finished one; Gymnasium calls that truncation.
            truncated = not complete and self._episode_steps >= self.timeout
            terminated = not truncated
            self._episode_steps = 0
        return self._obs.copy(), float(reward[0]), terminated, truncated, step_info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if self._obs is None:
            raise RuntimeError("call reset() before render()")
        return self._obs.copy()  # not the array handed out as the observation

    def get_state(self) -> np.ndarray:
        """The exact game state (RNG included) as a uint8 array; restore it with :meth:`set_state`."""
        if self._env is None:
            raise RuntimeError("call reset() before get_state()")
        return np.frombuffer(self._env.callmethod("get_state")[0], dtype=np.uint8).copy()

    def set_state(self, state: np.ndarray | bytes) -> None:
        if self._env is None:
            raise RuntimeError("call reset() before set_state()")
        raw = bytes(state) if isinstance(state, (bytes, bytearray)) else np.asarray(state, np.uint8).tobytes()
        if len(raw) < 16:
            raise ValueError(f"not a Procgen state: {len(raw)} bytes")
        if raw[: len(self._state_header)] != self._state_header:
            raise ValueError(f"not a state of Procgen {self.game} (its header is {raw[:24]!r})")
        self._env.callmethod("set_state", [raw])
        self._obs = self._observe()
        self._episode_steps = 0  # counted from the restore: a timeout soon after reads as an ordinary end
        self.level = int(self._env.get_info()[0].get("level_seed", self.level))

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __getstate__(self) -> dict[str, Any]:
        # The game lives in Procgen's C library; without this, pickle fails on an internal module object.
        raise TypeError(
            "a ProcgenEnv cannot be pickled or copied: copy its game with get_state() and restore it in a new "
            "env with set_state() or reset(options={'state': ...})"
        )
