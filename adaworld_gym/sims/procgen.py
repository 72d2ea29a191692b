"""The 16 Procgen games as Gymnasium environments (``AdaWorld/Procgen-<game>-v0``).

Wraps ``procgen-mirror``'s gym3 interface. Each ``reset`` draws a level from the configured level range
and a game seed from ``self.np_random``, so ``reset(seed=s)`` is exactly reproducible.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from adaworld_gym._checks import is_int, reset_options
from adaworld_gym._imports import quiet_imports
from adaworld_gym.sims.games import (
    TEST_LEVELS,
    TRAIN_LEVELS,
    check_distribution_mode,
    check_game,
    episode_timeout,
)

NUM_ACTIONS = 15

# Procgen's serialized state begins with a 4-byte version, the game name's length and the name, then 12
# int32 options (use_backgrounds the 5th, distribution_mode the 8th), grid_step, and the level range
# [low, high) the game was built with (one level here). Procgen's C code ends the whole process on a state
# that does not fit, so set_state checks these fields, and the footer below, before handing a state over.
_OPTION_NAMES = (
    "paint_vel_info", "use_generated_assets", "use_monochrome_assets", "restrict_themes", "use_backgrounds",
    "center_agent", "debug_mode", "distribution_mode", "use_sequential_levels", "use_easy_jump",
    "plain_assets", "physics_mode",
)  # fmt: skip
_MODE_NAMES = {0: "easy", 1: "hard", 2: "extreme", 10: "memory", 20: "exploration"}
# get_state appends a footer: Procgen's byte count, their CRC32 and the episode's step count (so a time-out
# after a restore is still a truncation), then this magic. A cut or damaged state is refused, not crashed on.
_STATE_MAGIC = b"AWPGst\x01\x00"
_STATE_FOOTER = struct.Struct("<IIi")
_FOOTER_SIZE = _STATE_FOOTER.size + len(_STATE_MAGIC)


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
    :meth:`get_state` (of this game and distribution mode, its level in this env's range). Procgen resets
    itself when an episode ends, so the observation returned with ``terminated=True`` is already the first
    frame of a new try at the same level; ``info["level_complete"]`` says whether the level was solved. An
    episode that reaches Procgen's own time limit (:attr:`timeout`: 1000 steps in most games) without being
    completed ends with ``truncated=True`` instead (a state from :meth:`get_state` carries its episode's step
    count, so this holds across restores too).
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
        # The header (version, game name) and Procgen's options, as set_state expects them: see _OPTION_NAMES.
        self._state_prefix = self._env.callmethod("get_state")[0][
            : 8 + len(self.game) + 4 * len(_OPTION_NAMES)
        ]

    def _observe(self) -> np.ndarray:
        _, obs, _ = self._env.observe()
        return obs["rgb"][0].copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = reset_options(options, ("level", "state"))
        low, high = self.levels
        level = options.get("level")
        if level is None:
            level = int(self.np_random.integers(low, high))
        elif not is_int(level) or not low <= level < high:
            # outside the configured range would quietly cross the train/test split
            raise ValueError(
                f"options['level'] must be an int in this env's levels [{low}, {high}), got {level!r}"
            )
        state = options.get("state")  # None: no state, as for "level" (and RobosuitePushEnv's "state")
        restore = None
        if state is not None and self._env is not None:
            restore = self._check_state(state)  # a bad state is refused before the env changes
        self._make(level, int(self.np_random.integers(0, 2**31 - 1)))
        self._obs = self._observe()
        self._episode_steps = 0
        if state is not None:
            self._restore(*(restore or self._check_state(state)))
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
        """The exact game state (RNG and episode step count included) as a uint8 array; restore it with
        :meth:`set_state`. Procgen's own bytes followed by a footer (their length, CRC32, the step count and
        a magic), which lets :meth:`set_state` refuse a truncated or damaged state."""
        if self._env is None:
            raise RuntimeError("call reset() before get_state()")
        raw = self._env.callmethod("get_state")[0]
        footer = _STATE_FOOTER.pack(len(raw), zlib.crc32(raw), self._episode_steps) + _STATE_MAGIC
        return np.frombuffer(raw + footer, dtype=np.uint8).copy()

    def set_state(self, state: np.ndarray | bytes) -> None:
        """Restore a state from :meth:`get_state` of a ProcgenEnv with the same game and distribution mode
        whose level lies in this env's level range; any other state raises ValueError, the env unchanged."""
        if self._env is None:
            raise RuntimeError("call reset() before set_state()")
        self._restore(*self._check_state(state))

    def _restore(self, raw: bytes, steps: int) -> None:
        self._env.callmethod("set_state", [raw])
        self._obs = self._observe()
        self._episode_steps = steps  # the restored episode's own count: its time-out is still a truncation
        self.level = int(self._env.get_info()[0].get("level_seed", self.level))

    def _check_state(self, state: np.ndarray | bytes) -> tuple[bytes, int]:
        """Procgen's bytes and the episode step count of a state, checked so that Procgen's C code (which
        ends the process on a state that does not fit) never sees a bad one; a ValueError naming the problem
        otherwise."""
        if not isinstance(state, (bytes, bytearray, np.ndarray)):
            raise ValueError(
                f"state must be the bytes or uint8 array get_state() returns, got {type(state).__name__}"
            )
        raw = bytes(state) if isinstance(state, (bytes, bytearray)) else np.asarray(state, np.uint8).tobytes()
        if len(raw) < _FOOTER_SIZE or raw[-len(_STATE_MAGIC) :] != _STATE_MAGIC:
            raise ValueError(
                f"not a state from ProcgenEnv.get_state ({len(raw)} bytes without its footer): a raw Procgen "
                "state, one from before adaworld-gym added the footer, or a cut one cannot be checked, and "
                "Procgen would end the process on a bad one; save the state again with get_state()"
            )
        length, crc, steps = _STATE_FOOTER.unpack_from(raw, len(raw) - _FOOTER_SIZE)
        raw = raw[: len(raw) - _FOOTER_SIZE]
        if length != len(raw):
            raise ValueError(
                f"truncated or padded Procgen state: {len(raw)} bytes where get_state wrote {length}"
            )
        if zlib.crc32(raw) != crc:
            raise ValueError("damaged Procgen state: its bytes do not match the CRC32 get_state recorded")
        header = 8 + len(self.game)
        if raw[:header] != self._state_prefix[:header]:
            raise ValueError(f"not a state of Procgen {self.game} (its header is {raw[:24]!r})")
        if len(raw) < len(self._state_prefix) + 12:
            raise ValueError(f"not a Procgen state: {len(raw)} bytes")
        ours = np.frombuffer(self._state_prefix[header:], "<i4")
        theirs = np.frombuffer(raw[header : len(self._state_prefix) + 12], "<i4")
        mode = _OPTION_NAMES.index("distribution_mode")
        if theirs[mode] != ours[mode]:
            name = _MODE_NAMES.get(int(theirs[mode]), f"code {int(theirs[mode])}")
            raise ValueError(
                f"a state of distribution_mode {name!r}, but this env plays {self.distribution_mode!r}: "
                "restore it in an env of that mode"
            )
        differ = [i for i in range(len(_OPTION_NAMES)) if theirs[i] != ours[i]]
        if differ:
            there = ", ".join(f"{_OPTION_NAMES[i]}={int(theirs[i])}" for i in differ)
            here = ", ".join(f"{_OPTION_NAMES[i]}={int(ours[i])}" for i in differ)
            raise ValueError(f"a state made with other Procgen options ({there}; this env has {here})")
        low, high = (int(v) for v in theirs[-2:])
        if not self.levels[0] <= low < high <= self.levels[1]:
            shown = f"level {low}" if high == low + 1 else f"levels [{low}, {high})"
            raise ValueError(
                f"a state of {shown}, outside this env's levels [{self.levels[0]}, {self.levels[1]}): "
                "restoring it would cross the train/test split"
            )
        if steps < 0:
            raise ValueError(f"damaged Procgen state: episode step count {steps}")
        return raw, steps

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
