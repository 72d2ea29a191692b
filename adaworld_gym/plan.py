"""Goal-image planning on RobosuitePush with VP2's protocol: ``adaworld plan`` and the pieces the push benchmark
(``benchmarks/vp2_push.py``) shares with it.

    adaworld plan --env AdaWorld/RobosuitePush-v0 --model oracle --task 3 --samples 32 --horizon 10 --out plan.gif
    adaworld plan --model path/to/push-bundle --planner cem --out plan.gif     # an adapted world model
    adaworld plan --model default --out plan.gif                               # the shipped push bundle

One episode (VP2): reset the env to task ``i`` of ``make_push_tasks(n, seed)`` (the same task whatever ``n``,
as long as ``n > i``), execute one zero action, then replan every step with MPPI (or CEM) under VP2's summed
pixel-MSE cost to the task's goal image, 15 steps in all. Success = every object within 0.05 m of its goal
position at some visited state; the score of a state is the largest object distance (``max_object_distance``).

Models (``--model``):

* ``oracle``: the real simulator (:class:`SimulatorDynamics`: ``--workers`` processes, each a copy of the env
  restored to the current state), VP2's upper bound;
* a bundle directory: an adapted :class:`AdaWorldBundle` whose action space is the push env's
  ``Box(-1, 1, (4,), float32)``, planned through :class:`WorldModelDynamics`;
* ``default``: the shipped push bundle (``adaworld_gym/assets/bundles/robosuite-push``: zero-shot, not
  finetuned); where it is missing, a ``FileNotFoundError`` names the path and suggests ``--model oracle``.

The GIF shows goal | real frames, plus, for a learned model, its one-step prediction of each executed action from
the frames seen so far (what the model imagined the step would do).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
from gymnasium import spaces

from adaworld_gym._checks import add_note
from adaworld_gym.planning import (
    PUSH_INIT_STD,
    VP2_COST,
    CEMPlanner,
    MPCEpisode,
    MPPIPlanner,
    Planner,
    SimulatorDynamics,
    WorldModelDynamics,
    push_success_fn,
    run_mpc_episode,
)
from adaworld_gym.planning.dynamics import Dynamics

if TYPE_CHECKING:
    from adaworld_gym.models.bundle import AdaWorldBundle
    from adaworld_gym.sims.push import PushTask

__all__ = [
    "PUSH_ENV_ID",
    "VP2_STEPS",
    "PlanResult",
    "PushEpisodeResult",
    "RandomPlanner",
    "episode_video",
    "imagine_one_step",
    "load_push_bundle",
    "make_env",
    "make_planner",
    "plan_push",
    "push_action_space",
    "resolve_model",
    "run_push_episode",
]

PUSH_ENV_ID = "AdaWorld/RobosuitePush-v0"
VP2_STEPS = 15
"""Executed steps per episode (VP2's push): one zero action, then 14 planned ones."""
PLANNERS = ("mppi", "cem")


def push_action_space() -> spaces.Box:
    """The push env's action space ``Box(-1, 1, (4,), float32)``: an adapted push bundle must have it."""
    return spaces.Box(-1.0, 1.0, (4,), np.float32)


def make_env(env_id: str = PUSH_ENV_ID, **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make(env_id)`` after registering the package's ids: picklable as
    ``functools.partial(make_env, env_id)``, so simulator workers can build the same env."""
    import adaworld_gym  # noqa: F401  (registers the ids in a fresh worker process)

    return gymnasium.make(env_id, **kwargs)


def _check_env_id(env_id: str) -> None:
    if env_id != PUSH_ENV_ID:
        raise ValueError(
            f"planning is implemented for {PUSH_ENV_ID} (VP2's push tasks) only, got --env {env_id}"
        )


# ------------------------------------------------------------------------------------------------ models


def resolve_model(model: str | os.PathLike) -> str | Path:
    """``"oracle"``, or the bundle directory that ``model`` names (``"default"``: the shipped push bundle).

    Raises:
        FileNotFoundError: the directory (or, for ``default``, the shipped bundle) does not exist; the message
            names the path and suggests ``--model oracle``.
    """
    if str(model) == "oracle":
        return "oracle"
    if str(model) == "default":
        from adaworld_gym.envs.shipped import shipped_bundle_dir

        path = shipped_bundle_dir("RobosuitePush")
        if not (path / "bundle.json").is_file():
            raise FileNotFoundError(
                f"no adapted RobosuitePush world-model bundle is shipped in this installation ({path} is "
                "missing). Plan with the simulator instead (--model oracle), pass a bundle directory "
                "(--model path/to/bundle), or adapt a world model to AdaWorld/RobosuitePush-v0 and save the "
                f"bundle at {path}"
            )
        return path
    path = Path(model)
    if not (path / "bundle.json").is_file():
        raise FileNotFoundError(
            f"--model {model}: not a bundle directory ({path / 'bundle.json'} is missing); give 'oracle', "
            "'default' or the directory of an adapted push bundle"
        )
    return path


def load_push_bundle(path: str | os.PathLike) -> AdaWorldBundle:
    """Load a bundle and check that it is adapted to the push action space (``ValueError`` if not)."""
    from adaworld_gym.models.bundle import ActionSpaceMismatch, AdaWorldBundle

    try:
        return AdaWorldBundle.from_pretrained(Path(path), expected_action_space=push_action_space())
    except ActionSpaceMismatch as e:  # a Procgen or latent bundle: say what plan takes
        add_note(e, "adaworld plan plans on AdaWorld/RobosuitePush-v0: give a bundle adapted to push "
                 "(adaworld adapt --env AdaWorld/RobosuitePush-v0)")  # fmt: skip
        raise


def make_planner(
    name: str, dynamics: Dynamics, samples: int = 200, horizon: int = 10, seed: int = 0
) -> Planner:
    """VP2's planners under its cost (:data:`VP2_COST`), replanning every step.

    ``mppi``: :class:`MPPIPlanner` (gamma 0.05, beta 0.5, init std (0.5, 0.5, 0.5, 0), one update).
    ``cem``: :class:`CEMPlanner`, 3 iterations, elite fraction 0.05 (at least 1), best sample returned.
    """
    # VP2's std for the push action; any other Box gets the planners' generic default.
    init_std = PUSH_INIT_STD if dynamics.action_space == push_action_space() else None
    if name == "mppi":
        return MPPIPlanner(dynamics, VP2_COST, samples=samples, horizon=horizon, init_std=init_std, seed=seed)
    if name == "cem":
        elites = max(1, int(round(0.05 * samples)))
        return CEMPlanner(
            dynamics,
            VP2_COST,
            samples=samples,
            horizon=horizon,
            elites=elites,
            iterations=3,
            execute=1,
            init_std=init_std,
            seed=seed,
        )
    raise ValueError(f"unknown planner {name!r}; choose one of {', '.join(PLANNERS)}")


class _NoModel:
    """A :class:`Dynamics` that is never queried: gives :class:`RandomPlanner` its action space."""

    context_frames = 1
    uses_state = False

    def __init__(self, action_space: spaces.Box) -> None:
        self.action_space = action_space

    def rollout(self, context: Any, actions: np.ndarray, state: Any = None) -> np.ndarray:
        raise RuntimeError("RandomPlanner predicts nothing")


class RandomPlanner(Planner):
    """The random-action baseline in the same harness: every "plan" is uniform random actions in the push space
    with the gripper entry 0 (as VP2's planners keep it); no model is queried."""

    def __init__(self, horizon: int = 1, seed: int = 0, action_space: spaces.Box | None = None) -> None:
        space = action_space or push_action_space()
        super().__init__(_NoModel(space), VP2_COST, horizon, 1, False, None, seed)

    def _resolve_default(self, default_action: Any) -> np.ndarray:
        return np.zeros(self.action_space.shape, self.action_space.dtype)

    def _optimise(self, dynamics, context, goal, state, previous):  # type: ignore[no-untyped-def]
        space = self.action_space
        plan = self.rng.uniform(space.low, space.high, (self.horizon, *space.shape)).astype(space.dtype)
        if space == push_action_space():  # VP2's planners leave the gripper closed
            plan[:, 3] = 0.0
        return plan, {"best_cost": np.nan}


# ----------------------------------------------------------------------------------------------- episodes


@dataclass
class PushEpisodeResult:
    """One VP2 push episode.

    Attributes:
        success: some visited state had every object within 0.05 m of its goal (``push_success``).
        best_distance: the lowest ``max_object_distance`` over the visited states (the reset state included;
            it is above the threshold by construction of the tasks).
        distances: ``max_object_distance`` of the reset state and of the state after each step.
        seconds_per_replan: mean planning wall time per replan.
        episode: the closed-loop record (frames, actions, states, replan timings).
        imagined: the learned model's one-step predictions ``[n + 1, H, W, 3]`` (frame 0 is the real reset
            frame), or None.
    """

    success: bool
    best_distance: float
    distances: list[float]
    seconds_per_replan: float
    episode: MPCEpisode
    imagined: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "best_distance": self.best_distance,
            "initial_distance": self.distances[0],
            "final_distance": self.distances[-1],
            "seconds_per_replan": self.seconds_per_replan,
            "replans": len(self.episode.replan_seconds),
            # Replans where every candidate predicted the same cost: the planner could not see its actions.
            "blind_replans": sum(info.get("cost_spread") == 0 for info in self.episode.plan_infos),
        }


def run_push_episode(
    env: gymnasium.Env,
    task: PushTask,
    planner: Planner,
    dynamics: Dynamics | None = None,
    steps: int = VP2_STEPS,
) -> PushEpisodeResult:
    """VP2's closed loop on one task: reset to ``task.init_state``, one zero action, then replan every step."""
    from adaworld_gym.sims.push import max_object_distance

    zero = np.zeros(env.action_space.shape, env.action_space.dtype)
    episode = run_mpc_episode(
        env,
        planner,
        dynamics,
        task.goal_image,
        max_steps=steps,
        replan_every=1,
        state=task.init_state,
        warmup_actions=[zero],
        success_fn=push_success_fn(task.goal_state),
        record_states=True,
    )
    assert episode.states is not None
    distances = [max_object_distance(s, task.goal_state) for s in episode.states]
    return PushEpisodeResult(
        success=episode.succeeded,
        best_distance=float(min(distances)),
        distances=distances,
        seconds_per_replan=episode.seconds_per_replan,
        episode=episode,
    )


def imagine_one_step(dynamics: WorldModelDynamics, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The model's prediction of each executed step from the real frames before it: uint8 ``[n + 1, H, W, 3]``
    (frame 0 is the real first frame; frame t + 1 predicts the frame after ``actions[t]``)."""
    k = dynamics.context_frames
    out = [frames[0]]
    for t, action in enumerate(actions):
        context = frames[max(0, t + 1 - k) : t + 1]
        out.append(dynamics.rollout(context[None], np.asarray(action)[None, None])[0, 0])
    return np.stack(out)


def episode_video(goal: np.ndarray, frames: np.ndarray, imagined: np.ndarray | None = None) -> np.ndarray:
    """goal | real (| imagined) side by side, one frame per visited state: uint8 ``[n + 1, H, W', 3]``."""
    from adaworld_gym.viz import side_by_side

    videos = [np.repeat(np.asarray(goal)[None], len(frames), axis=0), frames]
    if imagined is not None:
        videos.append(imagined)
    return side_by_side(*videos)


class _StepProgress(gymnasium.Wrapper):
    """Advances a progress bar on every real step, showing the current max object distance."""

    def __init__(self, env: gymnasium.Env, bar: Any, goal_state: np.ndarray) -> None:
        super().__init__(env)
        self.bar, self.goal_state = bar, goal_state

    def step(self, action: Any) -> Any:
        from adaworld_gym.sims.push import max_object_distance

        result = super().step(action)
        distance = max_object_distance(self.env.unwrapped.get_state(), self.goal_state)
        self.bar.set_postfix(distance=f"{distance:.3f} m", refresh=False)
        self.bar.update(1)
        return result


# -------------------------------------------------------------------------------------------------- CLI


@dataclass
class PlanResult:
    """What :func:`plan_push` did."""

    model: str
    dynamics: str  # class name of the dynamics planned with
    task: int
    success: bool
    best_distance: float
    seconds_per_replan: float
    out: Path
    result: PushEpisodeResult = field(repr=False)


def _build_dynamics(
    resolved: str | Path, env_id: str, workers: int, denoise_steps: int, seed: int
) -> tuple[Dynamics, Callable[[], None]]:
    if resolved == "oracle":
        oracle = SimulatorDynamics(functools.partial(make_env, env_id), workers=workers)
        return oracle, oracle.close
    dynamics = WorldModelDynamics(load_push_bundle(resolved), steps=denoise_steps, generator_seed=seed)
    return dynamics, lambda: None


def plan_push(
    out: str | os.PathLike,
    model: str | os.PathLike = "oracle",
    task: int = 0,
    env_id: str = PUSH_ENV_ID,
    planner: str = "mppi",
    samples: int = 200,
    horizon: int = 10,
    seed: int = 0,
    workers: int = 2,
    steps: int = VP2_STEPS,
    denoise_steps: int = 1,
    progress: bool = True,
    task_start: str = "approach",
) -> PlanResult:
    """Plan one VP2 push task (``adaworld plan``): write the GIF to ``out`` and return the outcome.

    Args:
        out: the GIF (goal | real | imagined for a learned model).
        model: ``"oracle"``, ``"default"`` or a bundle directory (see the module docstring).
        task: index into ``make_push_tasks(task + 1, seed, start=task_start)``.
        planner: ``"mppi"`` (VP2's default) or ``"cem"``.
        samples, horizon: candidates per replan and actions per candidate (VP2: 200 and 10).
        seed: seeds the tasks, the planner and the world model's diffusion noise.
        workers: simulator processes for the oracle (0: in this process).
        steps: executed steps (VP2: 15).
        denoise_steps: Euler steps per predicted frame (learned models).
        task_start: where the task starts in its demo, ``"approach"`` or ``"contact"`` (``make_push_tasks``).
    """
    from tqdm.auto import tqdm

    from adaworld_gym.sims.push import TASK_STARTS, make_push_tasks
    from adaworld_gym.viz import GIF_SUFFIXES, check_output_file, save_gif

    _check_env_id(env_id)
    if task_start not in TASK_STARTS:
        raise ValueError(f"--task-start must be one of {', '.join(TASK_STARTS)}, got {task_start!r}")
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner {planner!r}; choose one of {', '.join(PLANNERS)}")
    for name, value in (("task", task), ("workers", workers)):
        if value < 0:
            raise ValueError(f"--{name} must be >= 0, got {value}")
    for name, value in (
        ("samples", samples),
        ("horizon", horizon),
        ("steps", steps),
        ("denoise-steps", denoise_steps),
    ):
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    check_output_file(out, GIF_SUFFIXES, "--out")  # before any slow work, as are the checks above and below
    resolved = resolve_model(model)  # before any slow work: a missing bundle fails at once

    dynamics, close = _build_dynamics(resolved, env_id, workers, denoise_steps, seed)
    env: gymnasium.Env | None = None
    try:
        env = make_env(env_id, max_episode_steps=steps)
        push_task = make_push_tasks(task + 1, seed, env=env.unwrapped, start=task_start)[task]
        plan = make_planner(planner, dynamics, samples, horizon, seed)
        with tqdm(
            total=steps,
            desc=f"plan task {task} ({resolved if resolved == 'oracle' else 'model'})",
            unit="step",
            disable=not progress,
        ) as bar:
            result = run_push_episode(
                _StepProgress(env, bar, push_task.goal_state), push_task, plan, steps=steps
            )
        if isinstance(dynamics, WorldModelDynamics):
            imaginer = WorldModelDynamics(dynamics.bundle, steps=denoise_steps, generator_seed=seed + 1)
            result.imagined = imagine_one_step(imaginer, result.episode.frames, result.episode.actions)
        video = episode_video(push_task.goal_image, result.episode.frames, result.imagined)
        path = save_gif(video, out, fps=2)
    finally:
        if env is not None:
            env.close()
        close()
    return PlanResult(
        model="oracle" if resolved == "oracle" else str(resolved),
        dynamics=type(dynamics).__name__,
        task=task,
        success=result.success,
        best_distance=result.best_distance,
        seconds_per_replan=result.seconds_per_replan,
        out=path,
        result=result,
    )
