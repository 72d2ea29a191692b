"""Closed-loop model-predictive control in a real env: plan, execute a few actions, observe, replan.

:func:`run_mpc_episode` is the loop the planning benchmarks share (VP2's push protocol, AdaWorld's Procgen
protocol). The planner imagines with its dynamics (a learned world model from the recent frames, or the simulator
oracle from the env's current state); the env executes, and what really happened is recorded: frames, actions,
rewards, infos, optional states and success, and the seconds of every replan.

Example (VP2 push with the simulator oracle; ``sims.push`` provides the env and tasks)::

    task = make_push_tasks(1, seed=0)[0]
    env = RobosuitePushEnv()
    with SimulatorDynamics(RobosuitePushEnv, workers=2) as oracle:
        episode = run_mpc_episode(
            env, MPPIPlanner(oracle, init_std=PUSH_INIT_STD), None, task.goal_image, max_steps=15,
            state=task.init_state,
            warmup_actions=[np.zeros(4, np.float32)], success_fn=push_success_fn(task.goal_state),
        )
    print(episode.succeeded, episode.seconds_per_replan)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from adaworld_gym._checks import is_int
from adaworld_gym.planning.dynamics import Dynamics
from adaworld_gym.planning.planners import Planner

__all__ = [
    "PROCGEN_MOVE_ACTIONS",
    "PROCGEN_NOOP_ACTION",
    "MPCEpisode",
    "SuccessFn",
    "procgen_success",
    "push_success_fn",
    "run_mpc_episode",
]

PROCGEN_MOVE_ACTIONS = (1, 3, 5, 7)
"""LEFT, DOWN, UP, RIGHT in Procgen's 15-action set: the actions AdaWorld's Procgen planner chooses from."""

PROCGEN_NOOP_ACTION = 4
"""Procgen's no-op: a safe ``default_action`` (fallback) for a discrete planner over Procgen."""

SuccessFn = Callable[[gymnasium.Env, dict[str, Any]], bool]
"""``success(env, info) -> bool``, called after every executed step."""


def procgen_success(env: gymnasium.Env, info: dict[str, Any]) -> bool:
    """Procgen: the level was solved (``info["level_complete"]``, set on the terminating step)."""
    return bool(info.get("level_complete", False))


def push_success_fn(goal_state: np.ndarray, threshold: float | None = None) -> SuccessFn:
    """RobosuitePush: every object within ``threshold`` (VP2: 0.05 m) of its position in ``goal_state``."""
    from adaworld_gym.sims.push import SUCCESS_THRESHOLD, push_success  # robosuite loads only when needed

    limit = SUCCESS_THRESHOLD if threshold is None else threshold

    def success(env: gymnasium.Env, info: dict[str, Any]) -> bool:
        return push_success(env.unwrapped.get_state(), goal_state, limit)

    return success


@dataclass
class MPCEpisode:
    """What one closed-loop episode did.

    Attributes:
        frames: uint8 ``[n + 1, H, W, 3]``: the reset frame, then the frame after each executed step.
        actions: the ``n`` executed actions (warm-up actions included), ``[n, *action_shape]``.
        rewards: float64 ``[n]`` env rewards.
        infos: the env's info dict of each step.
        planned: bool ``[n]``: True where a replan happened right before the step.
        replan_seconds: wall time of each replan (planning only, not execution).
        plan_infos: the planner's ``last_info`` after each replan (MPPI adds ``cost_spread``: 0 when no
            candidate looked different from another); ``planned_costs`` reads their ``best_cost``.
        states: ``env.unwrapped.get_state()`` after reset and after each step (``record_states=True``).
        success: per-step ``success_fn`` results (empty without one).
        terminated, truncated: how the episode ended (both False when ``max_steps`` ran out or on early success).
    """

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    infos: list[dict[str, Any]]
    planned: np.ndarray
    replan_seconds: list[float]
    states: list[Any] | None = None
    success: list[bool] = field(default_factory=list)
    plan_infos: list[dict[str, Any]] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False

    @property
    def succeeded(self) -> bool:
        """True if ``success_fn`` held after any step (VP2 and AdaWorld both count the best step)."""
        return any(self.success)

    @property
    def seconds_per_replan(self) -> float:
        return float(np.mean(self.replan_seconds)) if self.replan_seconds else float("nan")

    @property
    def planned_costs(self) -> list[float]:
        """The best predicted cost of each replan."""
        return [float(info.get("best_cost", np.nan)) for info in self.plan_infos]


def _env_action(action: np.ndarray, space: spaces.Space) -> Any:
    return int(action) if isinstance(space, spaces.Discrete) else np.asarray(action, dtype=space.dtype)


def _frame(obs: Any) -> np.ndarray:
    """A copy of the image of an observation: the observation itself, or a goal env's Dict
    ``obs["observation"]`` (a copy: an env may write every observation into one buffer, which made every
    recorded frame and context frame the latest one)."""
    if isinstance(obs, dict):
        # Goal envs (GoalWorldModelEnv, gymnasium-robotics style) put the frame under "observation"; stacking the
        # dicts failed later with "context must be uint8 ... got object (1,)", which did not say why.
        if "observation" not in obs:
            raise TypeError(
                f"run_mpc_episode plans from image observations; this env returns a dict with keys "
                f"{sorted(obs)} and no 'observation' image"
            )
        obs = obs["observation"]
    return np.array(obs)


def run_mpc_episode(
    env: gymnasium.Env,
    planner: Planner,
    dynamics: Dynamics | None,
    goal: np.ndarray,
    max_steps: int,
    replan_every: int | None = None,
    *,
    state: Any = None,
    seed: int | None = None,
    reset_options: dict[str, Any] | None = None,
    warmup_actions: Sequence[Any] | None = None,
    success_fn: SuccessFn | None = None,
    stop_on_success: bool = False,
    record_states: bool = False,
    planner_seed: int | None = None,
) -> MPCEpisode:
    """Reset ``env`` and control it towards ``goal`` with ``planner`` for at most ``max_steps`` steps.

    Args:
        env: the real env (its unwrapped env needs ``get_state`` when the dynamics use the state). Its
            observations are images, or Dicts with the image under ``"observation"`` (goal envs such as
            :class:`~adaworld_gym.envs.GoalWorldModelEnv`: pass the goal in ``reset_options={"goal": ...}`` too,
            so that the env's reward measures the planner's goal); ``frames`` records the images.
        planner: a :class:`Planner`; it is reset (warm start and timings) at the start.
        dynamics: the model to plan with; None uses ``planner.dynamics``. Passing another one (e.g. the
            simulator oracle) plans with it under the same planner settings.
        goal: the goal image ``[H, W, 3]``.
        max_steps: executed steps in all, warm-up actions included (VP2's push: 15).
        replan_every: actions executed per plan (default ``planner.execute``; VP2: 1, AdaWorld's Procgen: 5).
        state: start state, passed to ``env.reset`` as ``options["state"]`` (both real envs accept it).
        seed: ``env.reset`` seed.
        reset_options: further ``env.reset`` options (e.g. ``{"level": n}`` for Procgen).
        warmup_actions: executed before the first plan, e.g. VP2's single zero action that fills its 2-frame
            context.
        success_fn: ``success(env, info)`` evaluated after every step, e.g. :func:`push_success_fn`,
            :func:`procgen_success`.
        stop_on_success: end the episode at the first success.
        record_states: keep ``env.unwrapped.get_state()`` after reset and every step.
        planner_seed: reseeds the planner's sampling and, when it has ``reseed``, the dynamics' diffusion noise,
            so the episode does not depend on what the planner and model did before. None keeps both streams
            going (a planner reused across episodes then gives each a result that depends on the ones before).

    The episode also ends when the env terminates or truncates (Procgen's terminal step, a ``TimeLimit``).
    """
    dyn = planner.dynamics if dynamics is None else dynamics
    if not is_int(max_steps) or max_steps < 1:  # numpy integers too
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    replan_every = planner.execute if replan_every is None else replan_every
    if not is_int(replan_every) or not 1 <= replan_every <= planner.horizon:
        raise ValueError(f"replan_every must be an int in 1..horizon={planner.horizon}, got {replan_every!r}")
    base = env.unwrapped
    needs_state = dyn.uses_state or record_states
    if needs_state and not callable(getattr(base, "get_state", None)):
        raise TypeError(
            f"{type(base).__name__} has no get_state(): the simulator oracle (and record_states) need it; "
            "plan with a learned WorldModelDynamics from frames instead"
        )
    goal = np.asarray(goal)
    options = dict(reset_options or {})
    if state is not None:
        options["state"] = state
    obs = _frame(env.reset(seed=seed, options=options or None)[0])
    planner.reset(planner_seed)
    if planner_seed is not None and callable(getattr(dyn, "reseed", None)):
        dyn.reseed(planner_seed)
    space = env.action_space

    frames, actions, rewards, infos, planned, success = [obs], [], [], [], [], []
    states = [base.get_state()] if record_states else None
    context: deque[np.ndarray] = deque([obs], maxlen=max(1, dyn.context_frames))
    pending: deque[np.ndarray] = deque(np.asarray(a) for a in (warmup_actions or ()))
    plan_infos: list[dict[str, Any]] = []
    executed_since_plan = 0
    terminated = truncated = False
    for _ in range(max_steps):
        replanned = not pending
        if replanned:
            plan = planner.plan(
                np.stack(context),
                goal,
                base.get_state() if dyn.uses_state else None,
                dynamics=dyn,
                executed=executed_since_plan if plan_infos else None,
            )
            plan_infos.append(dict(planner.last_info))
            pending.extend(plan[:replan_every])
            executed_since_plan = 0
        action = pending.popleft()
        obs, reward, terminated, truncated, info = env.step(_env_action(action, space))
        obs = _frame(obs)
        executed_since_plan += 1
        frames.append(obs)
        context.append(obs)
        actions.append(np.asarray(action))
        rewards.append(float(reward))
        infos.append(info)
        planned.append(replanned)
        if states is not None:
            states.append(base.get_state())
        if success_fn is not None:
            success.append(bool(success_fn(env, info)))
        if terminated or truncated or (stop_on_success and success and success[-1]):
            break
    return MPCEpisode(
        frames=np.stack(frames),
        actions=np.stack(actions),
        rewards=np.asarray(rewards, np.float64),
        infos=infos,
        planned=np.asarray(planned, bool),
        replan_seconds=list(planner.replan_seconds),
        states=states,
        success=success,
        plan_infos=plan_infos,
        terminated=bool(terminated),
        truncated=bool(truncated),
    )
