"""A diffusion world model served as Gymnasium environments: single, batched, goal-conditioned, and for SB3.

Every env imagines: ``reset`` puts a start context (k frames) in the history window, ``step`` maps the action
through the bundle's adapter to a latent action ``z`` (:meth:`AdaWorldBundle.latents`: an adapter with a motion
context also reads the motion of the last two frames in the window) and samples the next frame with
:meth:`DiffusionWorldModel.predict_next`. All randomness flows from the env's ``np_random``: the start context
is drawn from it, and so is the seed of the ``torch.Generator`` behind every frame's diffusion noise, so the
same seed gives the same frames.

* Frames: uint8 ``[S, S, 3]``, S the bundle's world-model frame size (``config.sample_size``: 64 for the shipped
  bundles); start frames and goal images must have it.
* Reward: with ``reset(options={"goal": image})`` (a uint8 ``[S, S, 3]`` goal image), the negative mean squared
  pixel error between the new frame and the goal, pixels scaled to [0, 1] (so in [-1, 0], 0 at the goal):
  :func:`goal_reward`. The goal stays for later resets until one passes another (``{"goal": None}`` clears it),
  so every autoreset keeps it: ``gymnasium.make_vec`` in any mode, SB3's ``DummyVecEnv`` and the vector env.
  Otherwise, when the bundle has a reward head (``bundle.reward_head``, a
  :class:`~adaworld_gym.models.reward.RewardHead`), its prediction for (previous frame, new frame[, z]);
  otherwise 0.
* ``terminated``: the reward head's termination prediction when the bundle has one (whether or not a goal is
  given), else always False. Episodes are truncated after ``max_episode_steps`` steps (default 50; None: never);
  stepping a terminated or truncated episode raises until ``reset``. Through ``gymnasium.make`` the registered
  ``TimeLimit`` wrapper ends episodes instead (``gymnasium.make(id, max_episode_steps=N)`` sets it).
* The single env is the batched core with one row, so :class:`WorldModelVectorEnv` row i draws the same start
  context and the same diffusion noise as a :class:`WorldModelEnv` reset with the same seed. Its frames are
  identical for ``num_envs=1``; in a larger batch the UNet's float rounding can differ in the last bit, which
  can flip single pixel levels (and, since each frame feeds the next, grow over a rollout).

Example::

    >>> from adaworld_gym.models.bundle import tiny_random_bundle
    >>> env = WorldModelEnv(tiny_random_bundle("discrete"), max_episode_steps=5)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(1)
    >>> obs.shape, reward, terminated, truncated
    ((64, 64, 3), 0.0, False, False)

``render_mode="human"`` shows the frames in a pygame window (:class:`~adaworld_gym.envs.viewer.PygameViewer`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space

from adaworld_gym._checks import check_pixel_scale, is_int, reset_options
from adaworld_gym._imports import quiet_imports
from adaworld_gym.envs.viewer import PygameViewer
from adaworld_gym.models.bundle import AdaWorldBundle
from adaworld_gym.registration import WORLD_MODEL_EPISODE_STEPS

with quiet_imports():  # stable-baselines3 imports the retired `gym`, which prints a banner
    from stable_baselines3.common.vec_env import VecEnv

__all__ = [
    "GoalWorldModelEnv",
    "SB3VecEnvAdapter",
    "WorldModelEnv",
    "WorldModelVectorEnv",
    "goal_reward",
    "make_goal_env",
    "make_world_model_env",
]

RENDER_FPS = 15


def goal_reward(achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """Negative mean squared error over the last three (H, W, C) axes, pixels in [0, 1]; vectorised.

    Both are images ``[..., H, W, 3]`` of one image shape (batch axes broadcast) on the 0-255 scale (uint8, or
    integers or floats in [0, 255]); anything else raises ``ValueError`` (HER relabelling hands over whole batches
    unchecked).
    """
    achieved, desired = np.asarray(achieved), np.asarray(desired)
    for name, image in (("achieved_goal", achieved), ("desired_goal", desired)):
        if image.ndim < 3 or image.shape[-1] != 3 or image.dtype.kind not in "uif":
            raise ValueError(f"{name} must be images [..., H, W, 3], got {image.dtype} {image.shape}")
        check_pixel_scale(image, name)
    try:
        if achieved.shape[-3:] != desired.shape[-3:]:
            raise ValueError
        np.broadcast_shapes(achieved.shape, desired.shape)
    except ValueError:
        raise ValueError(
            f"achieved_goal {achieved.shape} and desired_goal {desired.shape} do not match (one image shape, "
            "batch axes equal or broadcastable)"
        ) from None
    return _goal_mse_reward(achieved, desired)


def _goal_mse_reward(achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """:func:`goal_reward` without its checks, for ``step``: its frames and goals were checked where they came in."""
    diff = (achieved.astype(np.float32) - desired.astype(np.float32)) / 255.0
    return -np.mean(diff**2, axis=(-3, -2, -1), dtype=np.float32)


def _load_bundle(
    bundle: AdaWorldBundle | str | os.PathLike, expected_action_space: spaces.Space | None
) -> AdaWorldBundle:
    if isinstance(bundle, AdaWorldBundle):
        if expected_action_space is not None and bundle.action_space != expected_action_space:
            raise ValueError(f"bundle action space {bundle.action_space} != expected {expected_action_space}")
        return bundle
    return AdaWorldBundle.from_pretrained(bundle, expected_action_space=expected_action_space)


def _row_seeds(seed: Any, num_envs: int) -> list[int | None]:
    """One seed (an int or None) per row: ``s`` -> ``s + i``; a sequence -> its items, checked.

    Every seed is checked here, before any row is reset: a negative one used to raise (in Gymnasium's seeding)
    only when its row's turn came, after the rows before it had been reset.
    """
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, int | np.integer):
        seeds = [int(seed) + i for i in range(num_envs)]
    elif (
        isinstance(seed, str | bytes)
        or not isinstance(seed, Iterable)
        or (isinstance(seed, np.ndarray) and seed.ndim == 0)
    ):
        # 1.5 raised "'float' object is not iterable"
        raise ValueError(
            f"seed must be a non-negative integer, a sequence of {num_envs} (one per env, each an integer "
            f"or None) or None, got {seed!r}"
        )
    else:
        seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"got {len(seeds)} seeds for {num_envs} envs")
    bad = [s for s in seeds if s is not None and (not isinstance(s, int | np.integer) or s < 0)]
    if bad:
        raise ValueError(f"seeds must be non-negative integers or None, got {bad[0]!r}")
    return [None if s is None else int(s) for s in seeds]


def _reset_mask(mask: Any, num_envs: int) -> np.ndarray:
    """``options["reset_mask"]`` checked as Gymnasium's vector envs check it; None: every row."""
    if mask is None:
        return np.ones(num_envs, bool)
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
    if mask.shape != (num_envs,):
        raise ValueError(f"`options['reset_mask']` must have shape `({num_envs},)`, got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
    if not mask.any():
        raise ValueError(f"`options['reset_mask']` must contain at least one True value, got {mask}")
    return mask


def _check_image(image: Any, name: str, ndim: int, frame_shape: tuple[int, int, int]) -> np.ndarray:
    image = np.asarray(image)
    size = ", ".join(map(str, frame_shape))
    layout = f"[h, {size}]" if ndim == 4 else f"[{size}]"
    if image.dtype != np.uint8 or image.ndim != ndim or image.shape[-3:] != frame_shape:
        raise ValueError(f"{name} must be uint8 {layout}, got {image.dtype} {image.shape}")
    return image


def _predict_next(
    model: Any,
    history: np.ndarray,
    z: np.ndarray,
    lengths: np.ndarray,
    steps: int,
    gens: list[torch.Generator],
) -> np.ndarray:
    """One batched ``predict_next`` call whose initial noise for row i comes from ``gens[i]`` alone."""
    generator = gens[0] if len(gens) == 1 else gens
    return model.predict_next(history, z, steps=steps, history_len=lengths, generator=generator)


class _Imagination:
    """N imagined episodes stepped together: history windows, step counts, goals and noise generators.

    All envs in this module are views of it, so the single env and row i of the vector env cannot drift apart.
    """

    def __init__(
        self, bundle: AdaWorldBundle, num_envs: int, denoise_steps: int, max_episode_steps: int | None
    ):
        if not is_int(denoise_steps) or denoise_steps < 1:
            raise ValueError(f"denoise_steps must be an int >= 1, got {denoise_steps!r}")
        if max_episode_steps is not None and (not is_int(max_episode_steps) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be an int >= 1 or None, got {max_episode_steps!r}")
        denoise_steps = int(denoise_steps)
        max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        size = bundle.world_model.config.sample_size
        self.frame_shape = (size, size, 3)  # the frames the bundle's model makes (64x64 for the shipped ones)
        self.bundle = bundle
        self.denoise_steps, self.max_episode_steps = denoise_steps, max_episode_steps
        self.k = bundle.world_model.config.num_history
        self.windows = np.zeros((num_envs, self.k, *self.frame_shape), np.uint8)  # right-aligned, newest last
        self.lengths = np.zeros(num_envs, np.int64)  # valid frames per window; 0 = never reset
        self.elapsed = np.zeros(num_envs, np.int64)
        self.terminated = np.zeros(num_envs, bool)
        self.goals: list[np.ndarray | None] = [None] * num_envs
        self.gens: list[torch.Generator | None] = [None] * num_envs

    def check_options(self, options: dict[str, Any] | None) -> dict[str, np.ndarray]:
        """The checked reset options of one row (``frames`` and/or ``goal``, as arrays); changes nothing."""
        options = reset_options(options, ("frames", "goal"))
        checked = {}
        if options.get("frames") is not None:
            checked["frames"] = _check_image(options["frames"], 'options["frames"]', 4, self.frame_shape)
            if not 1 <= len(checked["frames"]) <= self.k:
                n = len(checked["frames"])
                raise ValueError(f'options["frames"] has {n} frames; the model takes 1..{self.k}')
        if "goal" in options:  # None: clear the goal (an absent key keeps it, see reset)
            goal = options["goal"]
            checked["goal"] = (
                None if goal is None else _check_image(goal, 'options["goal"]', 3, self.frame_shape).copy()
            )
        return checked

    def reset(self, i: int, rng: np.random.Generator, options: dict[str, Any] | None) -> np.ndarray:
        """Start row i from ``options["frames"]`` or a context drawn with ``rng``; returns its first frame.

        ``options["goal"]`` sets the row's goal image (None clears it); without the key the goal stays.

        The options are checked before anything is drawn or changed, so a rejected call leaves row i and ``rng``
        as they were.
        """
        options = self.check_options(options)
        if "frames" in options:
            context = options["frames"]
        else:
            contexts = self.bundle.initial_frames
            context = contexts[rng.integers(len(contexts))]
        # The goal is the task, kept until a reset passes another (or None): autoresets (Gymnasium's vector envs
        # and Autoreset wrapper, SB3's DummyVecEnv, WorldModelVectorEnv) call reset() without options, so a goal
        # dropped there paid its reward for the first episode only, and each vectoriser differed.
        if "goal" in options:
            self.goals[i] = options["goal"]
        self.gens[i] = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        h = len(context)
        self.windows[i, : self.k - h] = 0
        self.windows[i, self.k - h :] = context
        self.lengths[i], self.elapsed[i], self.terminated[i] = h, 0, False
        return self.windows[i, -1].copy()

    def check_running(self, rows: np.ndarray) -> None:
        for i in rows:
            if self.lengths[i] == 0:
                raise RuntimeError("call reset() before step()")
            if self.terminated[i]:
                raise RuntimeError(
                    "episode terminated (the bundle's reward head predicted its end); call reset()"
                )
            if self.max_episode_steps is not None and self.elapsed[i] >= self.max_episode_steps:
                raise RuntimeError(
                    f"episode truncated after max_episode_steps={self.max_episode_steps} steps; call reset()"
                )

    def step(
        self, rows: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the given rows with a batch of actions; returns (frames, rewards float32, terminated, truncated)."""
        self.check_running(rows)
        z = self.bundle.latents(actions, self.windows[rows], self.lengths[rows])
        previous = self.windows[rows, -1].copy()
        frames = _predict_next(
            self.bundle.world_model,
            self.windows[rows],
            z,
            self.lengths[rows],
            self.denoise_steps,
            [self.gens[i] for i in rows],
        )
        self.windows[rows] = np.concatenate([self.windows[rows, 1:], frames[:, None]], axis=1)
        self.lengths[rows] = np.minimum(self.lengths[rows] + 1, self.k)
        self.elapsed[rows] += 1
        head = self.bundle.reward_head
        if head is None:
            head_rewards, terminated = np.zeros(len(rows), np.float32), np.zeros(len(rows), bool)
        else:
            head_rewards, terminated, _ = head.predict(
                previous, frames, z if head.config.latent_dim else None
            )
        rewards = np.array(
            [
                r if self.goals[i] is None else _goal_mse_reward(f, self.goals[i])
                for i, f, r in zip(rows, frames, head_rewards, strict=True)
            ],
            np.float32,
        )
        self.terminated[rows] = terminated
        if self.max_episode_steps is None:
            return frames, rewards, terminated, np.zeros(len(rows), bool)
        return frames, rewards, terminated, self.elapsed[rows] >= self.max_episode_steps


def _as_single_batch(action: Any, space: spaces.Space) -> np.ndarray:
    """One action of ``space`` as a batch of one, for the adapter's checked ``to_latent``."""
    array = np.asarray(action)
    if isinstance(space, spaces.Discrete):
        if array.size != 1:
            raise ValueError(f"expected a single discrete action, got shape {array.shape}")
        return array.reshape(1)
    if array.shape != space.shape:
        raise ValueError(f"action must have shape {space.shape}, got {array.shape}")
    return array[None]


class WorldModelEnv(gymnasium.Env):
    """One imagined episode of a bundle's world model, driven by the adapter's (real or latent) actions.

    Args:
        bundle: an :class:`AdaWorldBundle` or the path of a saved one.
        denoise_steps: Euler steps per frame (each one UNet call).
        max_episode_steps: steps before ``truncated``; None: never truncated (the ``gymnasium.make`` entry
            points leave it to the registered ``TimeLimit`` wrapper).
        render_mode: ``"rgb_array"``, ``"human"`` (pygame) or None.
        expected_action_space: when given, loading a bundle with another action space raises ``ValueError``.

    ``reset`` options: ``"frames"``: uint8 ``[h, S, S, 3]`` start context (1 <= h <= k, S the model's frame size)
    instead of a bundle context; ``"goal"``: uint8 ``[S, S, 3]`` goal image for the reward, kept by later resets until
    one passes another goal or None (see the module docstring).
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": RENDER_FPS}

    def __init__(
        self,
        bundle: AdaWorldBundle | str | os.PathLike,
        denoise_steps: int = 3,
        max_episode_steps: int | None = WORLD_MODEL_EPISODE_STEPS,
        render_mode: str | None = None,
        expected_action_space: spaces.Space | None = None,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.bundle = _load_bundle(bundle, expected_action_space)
        self.render_mode = render_mode
        self._core = _Imagination(self.bundle, 1, denoise_steps, max_episode_steps)
        self.observation_space = spaces.Box(0, 255, self._core.frame_shape, np.uint8)
        # A copy: Box adapters hand out one space object, so envs of one bundle would share (and reseed) its
        # sampling RNG: env_b.action_space.seed(0) changed what env_a.action_space.sample() draws.
        self.action_space = copy.deepcopy(self.bundle.action_space)
        self._frame: np.ndarray | None = None
        self._window: PygameViewer | None = None
        self._closed = False

    def _fill_options(self, options: dict[str, Any] | None) -> dict[str, Any] | None:
        """Hook for subclasses to complete the reset options (draws must use ``self.np_random``)."""
        return options

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._core.check_options(
            options
        )  # a rejected reset leaves the generator as it was, as the vector env's
        super().reset(seed=seed)
        self._frame = self._core.reset(0, self.np_random, self._fill_options(options))
        self._show()
        return self._frame.copy(), {}

    def step(self, action: Any):
        frames, rewards, terminated, truncated = self._core.step(
            np.zeros(1, np.int64), _as_single_batch(action, self.action_space)
        )
        self._frame = frames[0]
        self._show()
        return self._frame.copy(), float(rewards[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._frame is None:
            raise RuntimeError("call reset() before render()")
        return self._frame.copy()

    def _show(self) -> None:
        if self.render_mode == "human" and not self._closed:
            if self._window is None:
                self._window = PygameViewer(
                    caption="AdaWorld world model", scale=4, fps=self.metadata["render_fps"]
                )
            self._window.show(self._frame)
            if any(e.type == self._window.pygame.QUIT for e in self._window.events()):
                self._window.close()  # closed by the user: stop drawing until close() / a new env

    def close(self) -> None:
        # The model holds nothing else to free: stepping on is allowed, a new window is not.
        self._closed = True
        if self._window is not None:
            self._window.close()
            self._window = None

    def __getstate__(self) -> dict[str, Any]:
        # A pygame window cannot be pickled or copied; the copy opens its own on its next frame.
        return {**self.__dict__, "_window": None}


class GoalWorldModelEnv(WorldModelEnv):
    """Goal-conditioned variant: Dict observations ``observation`` / ``achieved_goal`` / ``desired_goal``.

    The goals are uint8 images of the frames' shape; ``achieved_goal`` is the current frame. A goal passed in
    ``options["goal"]`` stays for later resets (autoresets included) until one passes another; without one (or
    after ``{"goal": None}``) every ``reset`` draws a new goal, the last frame of a bundle start context (with
    ``self.np_random``). The reward is :meth:`compute_reward` (= :func:`goal_reward`), usable for hindsight
    relabelling (SB3 ``HerReplayBuffer``). Through ``gymnasium.make`` the env is wrapped and Gymnasium 1.x
    wrappers do not forward attributes: call ``env.unwrapped.compute_reward`` (or
    ``env.get_wrapper_attr("compute_reward")``, as SB3's vector envs do).
    """

    def __init__(self, bundle: AdaWorldBundle | str | os.PathLike, **kwargs: Any) -> None:
        super().__init__(bundle, **kwargs)
        image = self.observation_space
        self.observation_space = spaces.Dict(
            {"observation": image, "achieved_goal": image, "desired_goal": image}
        )
        self._given_goal: np.ndarray | None = None  # the caller's goal; None: draw one every reset

    def _fill_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        checked = self._core.check_options(options)  # a rejected reset must not draw from np_random first
        if "goal" in checked:  # kept as the core keeps it (None: back to drawn goals)
            self._given_goal = checked["goal"]
        options = dict(options or {})
        if self._given_goal is not None:
            options["goal"] = self._given_goal
        else:
            contexts = self.bundle.initial_frames
            options["goal"] = contexts[self.np_random.integers(len(contexts)), -1]
        return options

    def _observe(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        goal = self._core.goals[0]
        return {"observation": frame, "achieved_goal": frame.copy(), "desired_goal": goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        frame, info = super().reset(seed=seed, options=options)
        return self._observe(frame), info

    def step(self, action: Any):
        frame, reward, terminated, truncated, info = super().step(action)
        return self._observe(frame), reward, terminated, truncated, info

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """Vectorised reward over leading batch axes: :func:`goal_reward`."""
        return goal_reward(achieved_goal, desired_goal)


class WorldModelVectorEnv(gymnasium.vector.VectorEnv):
    """N imagined episodes stepped with ONE batched ``predict_next`` call per step.

    Row i reset with seed s_i draws what ``WorldModelEnv`` reset with seed s_i draws (each row has its own
    ``np_random`` and noise generator; the frames agree up to the batch's float rounding, see the module
    docstring). ``reset(seed=s)`` seeds row i with ``s + i``, as Gymnasium's vector envs do; a sequence gives one
    seed (an integer or None) per row. Every row's options are checked before any row is reset. Terminated or
    truncated rows reset on the next ``step`` (``AutoresetMode.NEXT_STEP``): that step ignores their action and
    returns the first frame of the new episode with reward 0; a row keeps its goal image through autoresets and
    resets without one (``options={"goal": None}`` or a ``None`` entry clears it). Rewards and
    terminations of all rows come from one batched reward-head call.

    Args:
        bundle, denoise_steps, max_episode_steps, expected_action_space: as for :class:`WorldModelEnv`.
        num_envs: N.
        render_mode: ``"rgb_array"`` or None.

    ``reset`` options: ``"frames"`` uint8 ``[N, h, S, S, 3]`` and/or ``"goal"`` uint8 ``[N, S, S, 3]`` (or one
    ``[S, S, 3]`` image for every row, as a ``make_vec(..., vectorization_mode="sync")`` env takes it);
    ``"reset_mask"`` (bool ``[N]``, as in Gymnasium >= 1.1): reset only those rows (with their seeds and option
    entries); the other rows go on and return their current frames.
    """

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": RENDER_FPS,
        "autoreset_mode": gymnasium.vector.AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        bundle: AdaWorldBundle | str | os.PathLike,
        num_envs: int = 8,
        denoise_steps: int = 3,
        max_episode_steps: int | None = WORLD_MODEL_EPISODE_STEPS,
        render_mode: str | None = None,
        expected_action_space: spaces.Space | None = None,
    ) -> None:
        if not is_int(num_envs) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.bundle = _load_bundle(bundle, expected_action_space)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self._core = _Imagination(self.bundle, num_envs, denoise_steps, max_episode_steps)
        self.single_observation_space = spaces.Box(0, 255, self._core.frame_shape, np.uint8)
        self.single_action_space = copy.deepcopy(self.bundle.action_space)  # see WorldModelEnv
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._frames = np.zeros((num_envs, *self._core.frame_shape), np.uint8)
        self._autoreset = np.zeros(num_envs, bool)

    def _reset_row(self, i: int, seed: int | None, options: dict[str, Any] | None) -> None:
        if (
            seed is not None or self._rngs[i] is None
        ):  # as gymnasium.Env.reset: no seed keeps the stream going
            self._rngs[i], _ = seeding.np_random(seed)
        self._frames[i] = self._core.reset(i, self._rngs[i], options)
        self._autoreset[i] = False

    def _autoreset_row(self, i: int) -> None:
        """A new episode for row i, its seed stream continued and its goal image kept (as every reset does)."""
        self._reset_row(i, None, None)

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        seeds = _row_seeds(seed, self.num_envs)
        # Not popped from the caller's dict: vector wrappers (RecordEpisodeStatistics) read the mask after us.
        options = dict(reset_options(options))
        mask = _reset_mask(options.pop("reset_mask", None), self.num_envs)
        if "goal" in options and options["goal"] is None:  # clears every row's goal, as in WorldModelEnv
            options["goal"] = [None] * self.num_envs
        goal = options.get("goal")
        if isinstance(goal, np.ndarray) and goal.ndim == 3:  # one image for all rows, as "sync" mode takes it
            options["goal"] = [goal] * self.num_envs
        unknown = set(options) - {"frames", "goal"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; expected 'frames', 'goal', 'reset_mask'"
            )
        for key, value in options.items():
            scalar = not hasattr(value, "__len__") or (isinstance(value, np.ndarray) and value.ndim == 0)
            if value is not None and (scalar or len(value) != self.num_envs):
                raise ValueError(
                    f'options["{key}"] must have one entry per env ({self.num_envs}), got '
                    f"{'a scalar' if scalar else len(value)}"
                )
        rows = {
            i: {key: value[i] for key, value in options.items() if value is not None}
            for i in np.flatnonzero(mask)
        }
        rows = {i: self._core.check_options(row) for i, row in rows.items()}  # all checked before any reset
        for i, row in rows.items():
            self._reset_row(i, seeds[i], row)
        return self._frames.copy(), {}

    def step(self, actions: Any):
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"expected a batch of {self.num_envs} actions, got shape {actions.shape}")
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        restarting = np.flatnonzero(self._autoreset)
        active = np.flatnonzero(~self._autoreset)
        if len(active):  # first: a rejected action must raise before any row is reset
            frames, rewards[active], terminated[active], truncated[active] = self._core.step(
                active, actions[active]
            )
            self._frames[active] = frames
        for i in restarting:
            self._autoreset_row(i)
        self._autoreset = terminated | truncated
        return self._frames.copy(), rewards, terminated, truncated, {}

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        if (self._core.lengths == 0).any():
            # As WorldModelEnv (and gymnasium.make's OrderEnforcing): black frames of rows never reset would
            # pass for real ones (a video's first frame, say).
            raise RuntimeError("call reset() before render() (every row must have been reset)")
        return tuple(self._frames.copy())


class SB3VecEnvAdapter(VecEnv):
    """A :class:`WorldModelVectorEnv` as a stable-baselines3 ``VecEnv``.

    SB3 resets finished rows within the same step: the returned observation is the new episode's first frame,
    ``infos[i]["terminal_observation"]`` the last frame, and ``infos[i]["TimeLimit.truncated"]`` is True when the
    episode was cut by the time limit rather than terminated by the reward head (SB3 bootstraps from those).
    """

    def __init__(self, venv: WorldModelVectorEnv) -> None:
        if not isinstance(venv, WorldModelVectorEnv):  # it steps the rows' batched core itself
            # Anything else failed only at the first reset, with "... has no attribute '_core'".
            raise TypeError(
                f"SB3VecEnvAdapter takes a WorldModelVectorEnv itself, got {type(venv).__name__}: make one with "
                "WorldModelVectorEnv(bundle, num_envs=N) or gymnasium.make_vec(id, num_envs=N, "
                "vectorization_mode='vector_entry_point'), unwrapped (use SB3's VecEnv wrappers, e.g. VecMonitor, "
                "around the adapter); SB3's DummyVecEnv takes single envs"
            )
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        # SB3's VecEnv keeps only the render modes; VecVideoRecorder reads the frame rate here (else 30 fps).
        self.metadata = {**self.metadata, "render_fps": venv.metadata["render_fps"]}
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        for (
            options
        ) in self._options:  # all rows checked before any is reset, as WorldModelVectorEnv.reset does
            self.venv._core.check_options(options or None)
        for i in range(self.num_envs):
            self.venv._reset_row(i, self._seeds[i], self._options[i] or None)
        self._reset_seeds()
        self._reset_options()
        return self.venv._frames.copy()

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"expected a batch of {self.num_envs} actions, got shape {actions.shape}")
        self._actions = actions

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("call step_async() before step_wait()")
        rows = np.arange(self.num_envs)
        frames, rewards, terminated, truncated = self.venv._core.step(rows, self._actions)
        self._actions = None
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in rows]
        for i in np.flatnonzero(dones):
            infos[i] = {
                "terminal_observation": frames[i].copy(),
                "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
            }
            self.venv._autoreset_row(i)
            frames[i] = self.venv._frames[i]
        self.venv._frames[:] = frames
        # predict_next's frames are a strided view; SB3 (like DummyVecEnv) hands out C-contiguous buffers.
        return self.venv._frames.copy(), rewards, dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> list[np.ndarray]:
        if (self.venv._core.lengths == 0).any():
            raise RuntimeError("call reset() before render() (every row must have been reset)")
        return list(self.venv._frames.copy())

    def _all_rows(self, indices: Any, what: str) -> list[int]:
        """The rows of ``indices``; all of them, since the rows share one vector env and cannot act alone."""
        rows = list(self._get_indices(indices))
        if sorted(rows) != list(range(self.num_envs)):
            raise NotImplementedError(
                f"{what} on rows {rows}: the {self.num_envs} rows are one batched world-model env, so only "
                "all rows at once (indices=None) are supported"
            )
        return rows

    # SB3's get_attr gives each env's own value (DummyVecEnv: one per sub-env); the vector env's spaces are
    # batched, so each row gets the single space, as SB3's VecEnv.observation_space / action_space are.
    _SINGLE_ATTRS = {"action_space": "single_action_space", "observation_space": "single_observation_space"}

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        name = self._SINGLE_ATTRS.get(attr_name, attr_name)
        return [getattr(self.venv, name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        self._all_rows(indices, f"set_attr({attr_name!r})")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        """Calls the vector env's method once and gives its result to every row."""
        rows = self._all_rows(indices, f"env_method({method_name!r})")
        result = getattr(self.venv, method_name)(*args, **kwargs)
        return [result for _ in rows]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_world_model_env(**kwargs: Any) -> WorldModelEnv:
    """``gymnasium.make`` entry point of ``AdaWorld/WorldModel-v0``.

    The registered ``TimeLimit`` wrapper ends the episodes (``gymnasium.make(id, max_episode_steps=N)`` sets its
    limit; gymnasium never passes that keyword on), so the env's own limit is off.
    """
    return WorldModelEnv(**kwargs, max_episode_steps=None)


# gymnasium.make reads the entry point's render modes: without them "rgb_array_list" (RenderCollection) fails.
make_world_model_env.metadata = WorldModelEnv.metadata


def make_goal_env(**kwargs: Any) -> GoalWorldModelEnv:
    """``gymnasium.make`` entry point of ``AdaWorld/GoalWorldModel-v0`` (see :func:`make_world_model_env`)."""
    return GoalWorldModelEnv(**kwargs, max_episode_steps=None)


make_goal_env.metadata = GoalWorldModelEnv.metadata
