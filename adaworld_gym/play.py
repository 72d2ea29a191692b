"""Play any registered environment (imagined or real) with the keyboard, or let a policy play it headless.

    adaworld play --env AdaWorld/WorldModel-v0 --bundle path/to/bundle --record run.gif
    adaworld play --env AdaWorld/Procgen-heist-v0                      # the real game, same controls
    adaworld play --env AdaWorld/WorldModel-v0 --bundle B --headless --steps 50 --record run.gif   # CI

Keys:

* ``Discrete(15)`` (Procgen, or ids containing ``Procgen``): Procgen's own interactive layout. The arrow keys and
  their diagonals are Procgen's movement combos (actions 0-8), no key is Procgen's no-op (action 4); D, A, W, S,
  Q, E are actions 9, 10, 11, 12, 13, 14 (space is D too: action 9, "fire" in the games that shoot), so every
  one of the 15 actions has a key.
* Other ``Discrete(n)``: up, down, left, right (arrows or W, S, A, D) are actions 0, 1, 2, 3; with no key held
  the world waits (a ``Discrete`` space has no known no-op).
* ``Box`` of dimension d: a unit vector, right = +dim 0, up = +dim 1, E / Q = +/- dim 2 (d >= 3), clipped
  to the bounds; no key is the zero action (clipped into the bounds). WASD work as the arrows.
* RobosuitePush (ids containing ``RobosuitePush``): the arrows move the gripper as the camera shows it (its
  action adds ``action[:3]`` to the gripper's world position and the camera sees world +x as screen-down, +y as
  screen-right): right = +dim 1, up = -dim 0, E / Q = up / down (+/- dim 2).
* Digit keys pick a ``Discrete`` action by index (0-9). R starts a new episode, Esc or closing the window quits.
  A key pressed and released between two frames still counts for the next step.

Episodes that end (terminated or truncated) restart at once. Procgen restarts a level itself when a try ends
and returns that restart as the step's observation: it is not recorded, so the last frame before the new
episode's is the one where the try ended. ``--headless`` opens no window
(``SDL_VIDEODRIVER=dummy``) and plays ``policy``: ``"random"`` (the action space sampled with the seed) or
``"keys"`` (a scripted tour: 4 steps each of right, up, left, down, mapped like the keyboard).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["KeyMapper", "KeyboardPolicy", "PlayResult", "play"]

PROCGEN_NOOP = 4
# Procgen's combos by (dx, dy): index = 3 * (dx + 1) + (dy + 1), i.e. LEFT+DOWN, LEFT, LEFT+UP, DOWN, (none), ...
# then its interactive mode's keys D, A, W, S, Q, E for actions 9-14 (space: D's action too).
_PROCGEN_SPECIAL = (("d", 9), ("space", 9), ("a", 10), ("w", 11), ("s", 12), ("q", 13), ("e", 14))
# Outside Procgen's layout WASD are the arrows.
_WASD = {"up": "w", "down": "s", "left": "a", "right": "d"}
SCRIPTED_KEYS = ["right"] * 4 + ["up"] * 4 + ["left"] * 4 + ["down"] * 4
DEFAULT_HEADLESS_STEPS = 100
_SDL_DUMMY = ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER")  # set to "dummy" (if unset) while headless play runs


class KeyMapper:
    """Maps a set of held key names (the arrows ``up``, ``down``, ``left``, ``right``; the letters ``w``, ``a``,
    ``s``, ``d``, ``q``, ``e``; ``space``; ``0``-``9``) to an action of ``space``; ``None`` means "no action:
    wait" (see the module docstring for the layouts).

    Args:
        space: the env's ``Discrete`` or ``Box`` action space.
        procgen: use Procgen's key layout (default: ``Discrete(15)``).
        push: use RobosuitePush's screen-aligned gripper layout (a ``Box`` of dimension >= 3).
    """

    def __init__(self, space: spaces.Space, procgen: bool | None = None, push: bool = False) -> None:
        if not isinstance(space, spaces.Discrete | spaces.Box):
            raise ValueError(f"keyboard play needs a Discrete or Box action space, got {space}")
        if isinstance(space, spaces.Box) and len(space.shape) != 1:
            raise ValueError(f"keyboard play needs a 1-D Box action space, got shape {space.shape}")
        self.space = space
        is_discrete = isinstance(space, spaces.Discrete)
        if procgen is None:
            procgen = is_discrete and int(space.n) == 15
        if procgen and not (is_discrete and int(space.n) == 15):
            raise ValueError(f"Procgen's key layout needs Discrete(15), got {space}")
        if push and not (isinstance(space, spaces.Box) and len(space.shape) == 1 and space.shape[0] >= 3):
            raise ValueError(f"RobosuitePush's key layout needs a Box of dimension >= 3, got {space}")
        self.procgen, self.push = procgen, push

    @property
    def idle(self) -> Any:
        """The action taken when no key is held (None: wait)."""
        return self.action(set())

    def _held(self, pressed: set[str], direction: str) -> bool:
        return direction in pressed or (not self.procgen and _WASD[direction] in pressed)

    def action(self, pressed: set[str]) -> Any:
        space = self.space
        dx = self._held(pressed, "right") - self._held(pressed, "left")
        dy = self._held(pressed, "up") - self._held(pressed, "down")
        if isinstance(space, spaces.Discrete):
            n, start = int(space.n), int(space.start)
            digits = sorted(int(k) for k in pressed if k.isdigit() and int(k) < n)
            if digits:
                return start + digits[0]
            if self.procgen:
                for key, index in _PROCGEN_SPECIAL:
                    if key in pressed:
                        return start + index
                return start + 3 * (dx + 1) + (dy + 1)
            for key, index in (("up", 0), ("down", 1), ("left", 2), ("right", 3)):
                if self._held(pressed, key) and index < n:
                    return start + index
            return None
        vector = np.zeros(space.shape, np.float64)
        vertical = ("e" in pressed) - ("q" in pressed)
        if self.push:  # screen up is world -x, screen right world +y (see the module docstring)
            vector[:3] = (-dy, dx, vertical)
        else:
            vector[0] = dx
            if len(vector) >= 2:
                vector[1] = dy
            if len(vector) >= 3:
                vector[2] = vertical
        norm = np.linalg.norm(vector)
        if norm > 0:
            vector /= norm
        return np.clip(vector, space.low, space.high).astype(space.dtype)


def _key_names(pygame: Any) -> dict[int, str]:
    names = {
        pygame.K_UP: "up",
        pygame.K_DOWN: "down",
        pygame.K_LEFT: "left",
        pygame.K_RIGHT: "right",
        pygame.K_SPACE: "space",
    }
    names.update({getattr(pygame, f"K_{c}"): c for c in "wasdqe"})
    names.update({getattr(pygame, f"K_{i}"): str(i) for i in range(10)})
    return names


class KeyboardPolicy:
    """Reads a :class:`~adaworld_gym.envs.viewer.PygameViewer`'s key events into actions.

    Key state is tracked from KEYDOWN / KEYUP events (so posted events drive it too); a key pressed since the
    last step counts for the next one even if it was released before it (a tap shorter than a frame). After each
    call, :attr:`quit` and :attr:`reset` say whether Esc / the window's close button or R were pressed.
    """

    def __init__(self, mapper: KeyMapper, viewer: Any) -> None:
        self.mapper, self.viewer = mapper, viewer
        self.pygame = viewer.pygame
        self.names = _key_names(self.pygame)
        self.pressed: set[str] = set()
        self.tapped: set[str] = set()  # pressed since the last action, released or not
        self.quit = self.reset = False

    def handle(self, events: list[Any]) -> None:
        pg = self.pygame
        self.reset = False
        for event in events:
            if event.type == pg.QUIT:
                self.quit = True
            elif event.type == pg.KEYDOWN:
                if event.key == pg.K_ESCAPE:
                    self.quit = True
                elif event.key == pg.K_r:
                    self.reset = True
                elif event.key in self.names:
                    self.pressed.add(self.names[event.key])
                    self.tapped.add(self.names[event.key])
            elif event.type == pg.KEYUP and event.key in self.names:
                self.pressed.discard(self.names[event.key])

    def __call__(self, step: int) -> Any:
        self.handle(self.viewer.events())
        keys, self.tapped = self.pressed | self.tapped, set()
        return None if self.quit or self.reset else self.mapper.action(keys)


@dataclass
class PlayResult:
    """What was played: every frame shown (reset frames included; not Procgen's restart frame returned with the
    step that ends a try), the actions and rewards of every step."""

    frames: np.ndarray
    actions: list[Any]
    rewards: np.ndarray
    episode_returns: list[float] = field(default_factory=list)
    record: Path | None = None

    @property
    def steps(self) -> int:
        return len(self.actions)


def _frame(obs: Any) -> np.ndarray:
    frame = obs["observation"] if isinstance(obs, dict) else obs
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"play shows image observations (uint8 [H, W, 3]); got {frame.dtype} {frame.shape}")
    return frame


def make_env(env_id: str, bundle: str | os.PathLike | None = None, **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make(env_id, bundle=bundle, **kwargs)`` with user-facing errors as ``ValueError``."""
    import adaworld_gym  # noqa: F401  (registers the ids)

    if bundle is not None:
        kwargs["bundle"] = bundle
    try:
        return gymnasium.make(env_id, **kwargs)
    except gymnasium.error.Error as e:
        raise ValueError(f"cannot make {env_id!r}: {e}") from e
    except TypeError as e:
        if bundle is not None and "bundle" in str(e):
            raise ValueError(f"--bundle applies to world-model envs only; {env_id} takes none") from e
        if bundle is None and "'bundle'" in str(e):
            raise ValueError(
                f"{env_id} imagines with an adapted bundle: pass --bundle DIR (adaworld adapt writes one), or "
                "play a shipped world model such as AdaWorld/WorldModel-Procgen-coinrun-v0"
            ) from e
        raise


def play(
    env_id: str,
    bundle: str | os.PathLike | None = None,
    *,
    record: str | os.PathLike | None = None,
    headless: bool = False,
    steps: int | None = None,
    seed: int = 0,
    policy: str | Callable[[int], Any] = "random",
    fps: float | None = None,
    scale: int = 6,
    env_kwargs: dict[str, Any] | None = None,
    viewer: Any = None,
    progress: bool = True,
) -> PlayResult:
    """Play ``env_id`` with the keyboard in a pygame window, or headless with ``policy``.

    Args:
        env_id: any registered id (``AdaWorld/WorldModel-v0`` needs ``bundle``; the shipped world models take
            one in place of theirs; real simulators work too).
        bundle: a bundle directory for world-model envs.
        record: write every frame shown to this GIF.
        headless: no window: ``policy`` plays (``SDL_VIDEODRIVER=dummy`` is set for any pygame use, unless set
            already, and restored when play returns).
        steps: stop after this many env steps (headless default 100; interactive default: until quit).
        seed: seeds the first reset and the random policy.
        policy: headless policy: ``"random"``, ``"keys"`` (scripted) or a callable ``step -> action`` (an
            action every time: None, the keyboard's "wait", raises ``ValueError`` headless).
        fps: frame rate of the window and the GIF, a positive number (default: the env's ``render_fps``, else 15).
        scale: window upscaling.
        env_kwargs: more keywords for ``gymnasium.make``.
        viewer: an open :class:`~adaworld_gym.envs.viewer.PygameViewer` to use (tests, embedding).
        progress: a progress bar over the steps of headless play (a world model takes a while per step).

    Raises:
        ValueError: unknown id, bad arguments (a ``record`` path that is not a writable ``.gif`` among them), or
            an action space keyboard play cannot map.
        FileNotFoundError: a world-model env without its bundle (the message says how to get one).
    """
    if steps is not None and steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if fps is not None and not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")  # now, not when the GIF is written
    if record is not None:  # now, not after a session of play that a bad path would throw away
        from adaworld_gym.viz import GIF_SUFFIXES, check_output_file

        check_output_file(record, GIF_SUFFIXES, "recording")
    saved = {name: os.environ.get(name) for name in _SDL_DUMMY} if headless else {}
    try:
        if headless:
            for name in _SDL_DUMMY:
                os.environ.setdefault(name, "dummy")
            steps = DEFAULT_HEADLESS_STEPS if steps is None else steps
        env = make_env(env_id, bundle, **(env_kwargs or {}))
        try:
            fps = fps or env.metadata.get("render_fps") or 15
            mapper = KeyMapper(
                env.action_space,
                procgen=True if "Procgen" in env_id else None,
                push="RobosuitePush" in env_id,
            )
            if headless:
                act = _headless_policy(policy, env.action_space, mapper, seed)
            else:
                if viewer is None:
                    from adaworld_gym.envs.viewer import PygameViewer

                    viewer = PygameViewer(caption=env_id, scale=scale, fps=fps)
                act = KeyboardPolicy(mapper, viewer)
            shown = viewer if not headless else None
            return _run(env, env_id, act, shown, steps, seed, record, fps, progress=progress and headless)
        finally:
            env.close()
            if viewer is not None and not headless:
                viewer.close()
    finally:  # headless play leaves the process's SDL drivers as it found them
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _headless_policy(
    policy: str | Callable[[int], Any], space: spaces.Space, mapper: KeyMapper, seed: int
) -> Callable[[int], Any]:
    if callable(policy):
        return policy
    if policy == "random":
        space.seed(seed)
        return lambda step: space.sample()
    if policy == "keys":

        def scripted(step: int) -> Any:
            action = mapper.action({SCRIPTED_KEYS[step % len(SCRIPTED_KEYS)]})
            if action is None:  # a Discrete(n < 4) without that direction: walk through its actions
                action = int(space.start) + step % int(space.n)
            return action

        return scripted
    raise ValueError(f"unknown policy {policy!r}; expected 'random', 'keys' or a callable")


def _run(
    env: gymnasium.Env,
    env_id: str,
    act: Callable[[int], Any],
    viewer: Any,
    steps: int | None,
    seed: int,
    record: str | os.PathLike | None,
    fps: float,
    progress: bool = False,
) -> PlayResult:
    from tqdm.auto import tqdm

    from adaworld_gym.sims.procgen import ProcgenEnv

    restarts_itself = isinstance(env.unwrapped, ProcgenEnv)
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards, returns = [_frame(obs)], [], [], []
    episode_return = 0.0

    def show() -> None:
        if viewer is not None:
            caption = f"{env_id}  step {len(actions)}  return {episode_return:.2f}  (Esc quits, R resets)"
            viewer.show(frames[-1], caption)

    show()
    bar = tqdm(total=steps, desc=f"play {env_id}", unit="step", disable=not progress)
    while steps is None or len(actions) < steps:
        action = act(len(actions))
        if isinstance(act, KeyboardPolicy):
            if act.quit or viewer.closed:
                break
            if act.reset:
                obs, _ = env.reset()
                returns.append(episode_return)
                episode_return = 0.0
                frames.append(_frame(obs))
                show()
                continue
        if action is None:  # nothing to do until a key is held
            if not isinstance(act, KeyboardPolicy):  # no key ever comes: this looped forever
                raise ValueError(
                    f"the headless policy returned None at step {len(actions)} (None means 'wait for a key', "
                    "and headless play has no keyboard): return an action of the env's action space"
                )
            show()
            continue
        obs, reward, terminated, truncated, info = env.step(action)
        bar.update(1)
        actions.append(action)
        rewards.append(float(reward))
        episode_return += float(reward)
        # Procgen's observation at the end of a try (info["level_complete"] set) is already the level's restart,
        # not what the step led to: skip it, so the frame where the try ended stays the episode's last.
        if not (restarts_itself and (terminated or truncated) and "level_complete" in info):
            frames.append(_frame(obs))
            show()
        if terminated or truncated:
            returns.append(episode_return)
            episode_return = 0.0
            obs, _ = env.reset()
            frames.append(_frame(obs))
            show()
    bar.close()
    result = PlayResult(np.stack(frames), actions, np.array(rewards, np.float32), returns)
    if record is not None:
        from adaworld_gym.viz import save_gif

        result.record = save_gif(result.frames, record, fps=fps)
    return result
