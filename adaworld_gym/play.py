"""Play any registered environment (imagined or real) with the keyboard, or let a policy play it headless.

    adaworld play --env AdaWorld/WorldModel-v0 --bundle path/to/bundle --record run.gif
    adaworld play --env AdaWorld/Procgen-heist-v0                      # the real game, same controls
    adaworld play --env AdaWorld/WorldModel-v0 --bundle B --headless --steps 50 --record run.gif   # CI

Keys (arrow keys and WASD are the same directions):

* ``Discrete(15)`` (Procgen, or ids containing ``Procgen``): directions and their diagonals map to Procgen's
  movement combos, no key is Procgen's no-op (action 4); space is action 9 (Procgen's "D": fire), Q and E
  actions 13 and 14.
* Other ``Discrete(n)``: up, down, left, right are actions 0, 1, 2, 3; with no key held the world waits
  (a ``Discrete`` space has no known no-op).
* ``Box`` of dimension d: a unit vector, right = +dim 0, up = +dim 1, E / Q = +/- dim 2 (d >= 3), clipped
  to the bounds; no key is the zero action (clipped into the bounds).
* Digit keys pick a ``Discrete`` action by index (0-9). R starts a new episode, Esc or closing the window quits.

Episodes that end (terminated or truncated) restart at once. ``--headless`` opens no window
(``SDL_VIDEODRIVER=dummy``) and plays ``policy``: ``"random"`` (the action space sampled with the seed) or
``"keys"`` (a scripted tour: 4 steps each of right, up, left, down, mapped like the keyboard).
"""

from __future__ import annotations

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
_PROCGEN_SPECIAL = {"space": 9, "q": 13, "e": 14}
SCRIPTED_KEYS = ["right"] * 4 + ["up"] * 4 + ["left"] * 4 + ["down"] * 4
DEFAULT_HEADLESS_STEPS = 100


class KeyMapper:
    """Maps a set of held key names (``up``, ``down``, ``left``, ``right``, ``space``, ``q``, ``e``, ``0``-``9``)
    to an action of ``space``; ``None`` means "no action: wait" (see the module docstring for the layouts).

    Args:
        space: the env's ``Discrete`` or ``Box`` action space.
        procgen: use Procgen's movement combos (default: ``Discrete(15)``).
    """

    def __init__(self, space: spaces.Space, procgen: bool | None = None) -> None:
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
        self.procgen = procgen

    @property
    def idle(self) -> Any:
        """The action taken when no key is held (None: wait)."""
        return self.action(set())

    def action(self, pressed: set[str]) -> Any:
        space = self.space
        dx = ("right" in pressed) - ("left" in pressed)
        dy = ("up" in pressed) - ("down" in pressed)
        if isinstance(space, spaces.Discrete):
            n, start = int(space.n), int(space.start)
            digits = sorted(int(k) for k in pressed if k.isdigit() and int(k) < n)
            if digits:
                return start + digits[0]
            if self.procgen:
                for key, index in _PROCGEN_SPECIAL.items():
                    if key in pressed:
                        return start + index
                return start + 3 * (dx + 1) + (dy + 1)
            for key, index in (("up", 0), ("down", 1), ("left", 2), ("right", 3)):
                if key in pressed and index < n:
                    return start + index
            return None
        vector = np.zeros(space.shape, np.float64)
        vector[0] = dx
        if len(vector) >= 2:
            vector[1] = dy
        if len(vector) >= 3:
            vector[2] = ("e" in pressed) - ("q" in pressed)
        norm = np.linalg.norm(vector)
        if norm > 0:
            vector /= norm
        return np.clip(vector, space.low, space.high).astype(space.dtype)


def _key_names(pygame: Any) -> dict[int, str]:
    names = {
        pygame.K_UP: "up",
        pygame.K_w: "up",
        pygame.K_DOWN: "down",
        pygame.K_s: "down",
        pygame.K_LEFT: "left",
        pygame.K_a: "left",
        pygame.K_RIGHT: "right",
        pygame.K_d: "right",
        pygame.K_SPACE: "space",
        pygame.K_q: "q",
        pygame.K_e: "e",
    }
    names.update({getattr(pygame, f"K_{i}"): str(i) for i in range(10)})
    return names


class KeyboardPolicy:
    """Reads a :class:`~adaworld_gym.envs.viewer.PygameViewer`'s key events into actions.

    Key state is tracked from KEYDOWN / KEYUP events (so posted events drive it too). After each call,
    :attr:`quit` and :attr:`reset` say whether Esc / the window's close button or R were pressed.
    """

    def __init__(self, mapper: KeyMapper, viewer: Any) -> None:
        self.mapper, self.viewer = mapper, viewer
        self.pygame = viewer.pygame
        self.names = _key_names(self.pygame)
        self.pressed: set[str] = set()
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
            elif event.type == pg.KEYUP and event.key in self.names:
                self.pressed.discard(self.names[event.key])

    def __call__(self, step: int) -> Any:
        self.handle(self.viewer.events())
        return None if self.quit or self.reset else self.mapper.action(self.pressed)


@dataclass
class PlayResult:
    """What was played: every frame shown (reset frames included), the actions and rewards of every step."""

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
        headless: no window: ``policy`` plays (``SDL_VIDEODRIVER=dummy`` is set for any pygame use).
        steps: stop after this many env steps (headless default 100; interactive default: until quit).
        seed: seeds the first reset and the random policy.
        policy: headless policy: ``"random"``, ``"keys"`` (scripted) or a callable ``step -> action``.
        fps: frame rate of the window and the GIF (default: the env's ``render_fps``, else 15).
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
    if record is not None:  # now, not after a session of play that a bad path would throw away
        from adaworld_gym.viz import GIF_SUFFIXES, check_output_file

        check_output_file(record, GIF_SUFFIXES, "recording")
    if headless:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        steps = DEFAULT_HEADLESS_STEPS if steps is None else steps
    env = make_env(env_id, bundle, **(env_kwargs or {}))
    try:
        fps = fps or env.metadata.get("render_fps") or 15
        mapper = KeyMapper(env.action_space, procgen=True if "Procgen" in env_id else None)
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
            show()
            continue
        obs, reward, terminated, truncated, _ = env.step(action)
        bar.update(1)
        actions.append(action)
        rewards.append(float(reward))
        episode_return += float(reward)
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
