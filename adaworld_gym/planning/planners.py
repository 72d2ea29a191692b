"""Sampling-based goal-image planners over any :class:`~adaworld_gym.planning.dynamics.Dynamics`.

* :class:`MPPIPlanner`: VP2's default. Temporally correlated Gaussian perturbations of the mean plan, weights
  ``exp(-gamma * (cost - min cost))``, new plan = weighted mean; warm-started from the shifted previous plan.
* :class:`CEMPlanner`: cross-entropy method with elites. ``Box`` actions: a Gaussian per step, the best sample
  is returned (VP2's CEM). ``Discrete`` actions: a categorical distribution per step, updated from elite
  frequencies with smoothing (AdaWorld's Procgen planner, defaults 100 x 15, top 10, 2 iterations, execute 5).

``plan(context, goal, state=None)`` returns a whole action sequence, ``act`` its first ``execute`` actions. All
sampling comes from the planner's ``numpy.random.Generator`` (``seed``), so with deterministic dynamics a plan is
reproducible. Candidates whose cost is NaN or infinite (a model that blew up) get weight 0 / are never elite;
if every candidate is non-finite the planner warns and keeps the shifted previous plan (or the default action).
Each call's wall time is appended to ``replan_seconds``; ``last_info`` holds the call's diagnostics.

Example (``dynamics`` from :mod:`adaworld_gym.planning.dynamics`, ``context`` the last k frames)::

    planner = MPPIPlanner(dynamics, samples=200, horizon=10, seed=0)  # VP2's settings
    first_action = planner.act(context, goal)[0]
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
from gymnasium import spaces

from adaworld_gym._checks import check_pixel_scale, check_seed, is_int
from adaworld_gym.planning.costs import ADAWORLD_COST, VP2_COST, CostFn, sanitize_costs
from adaworld_gym.planning.dynamics import Dynamics, WorldModelDynamics, not_a_dynamics

__all__ = ["PUSH_INIT_STD", "CEMPlanner", "MPPIPlanner", "Planner", "correlated_noise", "default_init_std"]

PUSH_INIT_STD = (0.5, 0.5, 0.5, 0.0)
"""VP2's initial MPPI standard deviation for the 4-D push action: the gripper entry stays 0."""


def default_init_std(space: spaces.Box) -> np.ndarray:
    """Initial sampling std: half of each dimension's half-range (0.5 where a bound is infinite).

    VP2's push planners pass :data:`PUSH_INIT_STD` instead (:func:`adaworld_gym.plan.make_planner`).
    """
    half = (space.high.astype(np.float64) - space.low.astype(np.float64)) / 2
    return np.where(np.isfinite(half), 0.5 * half, 0.5)


def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, ...], std: np.ndarray | float, beta: float
) -> np.ndarray:
    """Temporally correlated Gaussian noise ``[S, T, ...]`` (VP2 / iCEM):
    ``n_0 = std * w_0``, ``n_t = beta * n_(t-1) + (1 - beta) * std * w_t`` with white ``w``.

    ``std`` broadcasts against ``shape[1:]`` (one value per step and action dimension, or a scalar).
    """
    noise = rng.standard_normal(shape) * np.asarray(std, np.float64)
    for t in range(1, shape[1]):
        noise[:, t] = beta * noise[:, t - 1] + (1.0 - beta) * noise[:, t]
    return noise


def _check_dynamics(dynamics: Any) -> None:
    if not isinstance(dynamics, Dynamics):
        raise TypeError(not_a_dynamics(dynamics))


def _check_goal(goal: Any) -> np.ndarray:
    goal = np.asarray(goal)
    if goal.ndim != 3 or goal.shape[-1] != 3 or goal.dtype.kind not in "uif":
        raise ValueError(f"goal must be an image [H, W, 3], got {goal.dtype} {goal.shape}")
    # A NaN goal made every candidate's cost NaN, which read as a model fault ("non-finite predictions?").
    check_pixel_scale(goal, "goal")
    return goal


class Planner:
    """Shared machinery: warm start, guarded evaluation, fallback, seeding and timing.

    Args:
        dynamics: the model queried for candidate frames (can be overridden per call).
        cost: ``cost(frames [B, T, H, W, 3], goal [H, W, 3]) -> [B]``, lower is better.
        horizon: actions per candidate sequence.
        execute: actions meant to be executed per plan (``act`` returns this many); the next plan is
            warm-started from the previous one shifted by this much (or by ``executed``).
        warm_start: start from the shifted previous plan instead of the default action.
        default_action: the safe action used before any plan exists and when every candidate is non-finite
            (default: zeros clipped to a Box; the first candidate action for Discrete).
        seed: seed of the planner's ``numpy.random.Generator``.
    """

    def __init__(
        self,
        dynamics: Dynamics,
        cost: CostFn,
        horizon: int,
        execute: int,
        warm_start: bool,
        default_action: Any,
        seed: int,
    ) -> None:
        _check_dynamics(dynamics)
        # is_int: numpy integers were refused as "must be an int >= 1, got 10", which reads as a contradiction.
        for name, value in (("horizon", horizon), ("execute", execute)):
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        horizon, execute = int(horizon), int(execute)
        if execute > horizon:
            raise ValueError(f"execute ({execute}) cannot exceed horizon ({horizon})")
        if not callable(cost):
            raise TypeError("cost must be callable: cost(frames, goal) -> [B]")
        self.dynamics = dynamics
        self.action_space: spaces.Space = dynamics.action_space
        self.cost, self.horizon, self.execute = cost, horizon, execute
        self.warm_start = warm_start
        self.default_action = self._resolve_default(default_action)
        self.seed = check_seed(seed)
        self.rng = np.random.default_rng(self.seed)
        self.replan_seconds: list[float] = []
        self.last_info: dict[str, Any] = {}
        self._previous: np.ndarray | None = None

    # --------------------------------------------------------------------------------- to override
    def _resolve_default(self, default_action: Any) -> np.ndarray:
        raise NotImplementedError

    def _optimise(
        self,
        dynamics: Dynamics,
        context: np.ndarray | None,
        goal: np.ndarray,
        state: Any,
        previous: np.ndarray | None,
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Return (plan, info); plan None means no candidate had a finite cost."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------- public API
    def reset(self, seed: int | None = None) -> None:
        """Forget the previous plan and the timings (a new episode); reseed if ``seed`` is given."""
        self._previous = None
        self.replan_seconds = []
        self.last_info = {}
        if seed is not None:
            self.seed = check_seed(seed)
            self.rng = np.random.default_rng(self.seed)

    def plan(
        self,
        context: np.ndarray | None,
        goal: np.ndarray,
        state: Any = None,
        *,
        dynamics: Dynamics | None = None,
        executed: int | None = None,
    ) -> np.ndarray:
        """Plan a ``[horizon, *action_shape]`` action sequence (``[horizon]`` int64 for Discrete).

        Args:
            context: uint8 ``[k, H, W, 3]`` recent frames, oldest first (learned dynamics; may be None for a
                simulator).
            goal: the goal image ``[H, W, 3]``.
            state: the simulator state (``env.unwrapped.get_state()``), for :class:`SimulatorDynamics`.
            dynamics: plan with this model instead of ``self.dynamics`` (same action space required), e.g. the
                simulator oracle under the same planner settings.
            executed: how many actions of the previous plan were executed since it was made (default
                ``execute``); the warm start drops that many (an int >= 0; ``ValueError`` otherwise).
        """
        dynamics = self._resolve_dynamics(dynamics)
        goal = _check_goal(goal)
        context = self._check_context(context, dynamics)
        if (
            isinstance(dynamics, WorldModelDynamics)
            and context is not None
            and goal.shape != context.shape[1:]
        ):
            # A world model predicts frames of its context's size: say so now, not after a whole rollout.
            raise ValueError(
                f"goal image of shape {goal.shape} does not match the context frames {context.shape[1:]}, "
                "which are the size the world model predicts"
            )
        if executed is not None and (not is_int(executed) or executed < 0):
            # int() truncated 2.7 to 2, and a negative count silently dropped the warm start.
            raise ValueError(
                f"executed must be an int >= 0 (actions run since the last plan), got {executed!r}"
            )
        shift = self.execute if executed is None else int(executed)
        previous = self._shifted_previous(shift)
        start = time.perf_counter()
        plan, info = self._optimise(dynamics, context, goal, state, previous)
        info["fallback"] = plan is None
        if plan is None:
            fallback = previous if previous is not None else self._default_plan()
            warnings.warn(
                f"{type(self).__name__}: every candidate had a non-finite cost (NaN/inf predictions?); "
                f"falling back to the {'previous plan' if previous is not None else 'default action'}",
                RuntimeWarning,
                stacklevel=2,
            )
            plan = fallback
        info["seconds"] = time.perf_counter() - start
        self.replan_seconds.append(info["seconds"])
        self.last_info = info
        self._previous = plan.copy()
        return plan.copy()

    def act(
        self,
        context: np.ndarray | None,
        goal: np.ndarray,
        state: Any = None,
        *,
        dynamics: Dynamics | None = None,
        executed: int | None = None,
    ) -> np.ndarray:
        """The first ``execute`` actions of :meth:`plan` (same arguments)."""
        return self.plan(context, goal, state, dynamics=dynamics, executed=executed)[: self.execute]

    # --------------------------------------------------------------------------------- helpers
    def _resolve_dynamics(self, dynamics: Dynamics | None) -> Dynamics:
        if dynamics is None:
            return self.dynamics
        _check_dynamics(dynamics)
        if dynamics.action_space != self.action_space:
            raise ValueError(
                f"dynamics action space {dynamics.action_space} differs from the planner's {self.action_space}"
            )
        return dynamics

    @staticmethod
    def _check_context(context: Any, dynamics: Dynamics) -> np.ndarray | None:
        if context is None:
            if not dynamics.uses_state:
                raise ValueError(
                    f"{type(dynamics).__name__} predicts from past frames: pass context (uint8 [k, H, W, 3])"
                )
            return None
        context = np.asarray(context)
        if context.dtype != np.uint8 or context.ndim != 4 or context.shape[-1] != 3 or len(context) < 1:
            raise ValueError(f"context must be uint8 [k>=1, H, W, 3], got {context.dtype} {context.shape}")
        return context[-dynamics.context_frames :]

    def _shifted_previous(self, shift: int) -> np.ndarray | None:
        """The previous plan minus its first ``shift`` actions, padded by repeating its last action (VP2)."""
        if not self.warm_start or self._previous is None or shift >= self.horizon or shift < 0:
            return None
        kept = self._previous[shift:]
        return np.concatenate([kept, np.repeat(kept[-1:], shift, axis=0)])

    def _default_plan(self) -> np.ndarray:
        return np.repeat(self.default_action[None], self.horizon, axis=0)

    def _evaluate(
        self,
        dynamics: Dynamics,
        context: np.ndarray | None,
        goal: np.ndarray,
        state: Any,
        candidates: np.ndarray,
    ) -> np.ndarray:
        """Costs float64 ``[S]`` of candidate sequences; non-finite costs become +inf."""
        n = len(candidates)
        # A read-only broadcast: the context is not copied per candidate here (dynamics copy per chunk).
        batch_context = None if context is None else np.broadcast_to(context, (n, *context.shape))
        predicted = dynamics.rollout(batch_context, candidates, state=state)
        who = f"{type(dynamics).__name__}.rollout"
        if predicted is None:
            raise ValueError(f"{who} returned None, not frames [{n}, {self.horizon}, H, W, 3]")
        frames = np.asarray(predicted)
        if frames.ndim != 5 or frames.shape[:2] != (n, self.horizon) or frames.shape[-1] != 3:
            raise ValueError(
                f"{who} returned frames of shape {frames.shape}, expected [{n}, {self.horizon}, H, W, 3] "
                "(one frame per candidate and step, channels last)"
            )
        if frames.shape[2:] != goal.shape:
            # Both are images; which size is meant is the caller's to say.
            raise ValueError(
                f"the goal image is {goal.shape[0]}x{goal.shape[1]} but {who} predicts "
                f"{frames.shape[2]}x{frames.shape[3]} frames: give a goal at the model's frame size"
            )
        with np.errstate(all="ignore"):
            costs = np.asarray(self.cost(frames, goal))
        if costs.shape != (n,):
            raise ValueError(f"cost returned shape {costs.shape}, expected ({n},)")
        return sanitize_costs(costs)


def _check_box(space: spaces.Space, planner: str) -> spaces.Box:
    if not isinstance(space, spaces.Box):
        raise TypeError(
            f"{planner} needs a Box action space, got {space}; use CEMPlanner for Discrete actions"
        )
    return space


class MPPIPlanner(Planner):
    """MPPI with temporally correlated noise, VP2's defaults.

    Args:
        dynamics: a :class:`Dynamics` with a ``Box`` action space.
        cost: default VP2's ``mse_rgb`` (:data:`VP2_COST`); ``gamma`` is tuned to its scale.
        samples: candidate sequences per iteration (VP2: 200).
        horizon: actions per sequence (VP2: 10).
        gamma: inverse temperature of the weights ``exp(-gamma * (cost - min cost))`` (VP2: 0.05, written there
            as ``exp(gamma * (R - max R))`` with reward ``R = -cost``).
        beta: noise correlation across steps (VP2: 0.5; 0 = white noise).
        init_std: sampling std per action dimension (default :func:`default_init_std`; VP2's push uses
            :data:`PUSH_INIT_STD`, whose gripper entry stays 0).
        iterations: updates per plan (VP2: 1).
        execute: actions executed per plan (VP2 replans every step: 1).
        warm_start, default_action, seed: see :class:`Planner`.

    Samples are clipped to the action space bounds; the plan is the weighted mean of the clipped samples.
    ``last_info`` gets ``best_cost`` (lowest sampled cost), ``nonfinite`` (candidates with a non-finite cost),
    ``evaluated`` and ``fallback``.
    """

    def __init__(
        self,
        dynamics: Dynamics,
        cost: CostFn = VP2_COST,
        *,
        samples: int = 200,
        horizon: int = 10,
        gamma: float = 0.05,
        beta: float = 0.5,
        init_std: float | np.ndarray | tuple[float, ...] | None = None,
        iterations: int = 1,
        execute: int = 1,
        warm_start: bool = True,
        default_action: Any = None,
        seed: int = 0,
    ) -> None:
        _check_dynamics(dynamics)
        space = _check_box(dynamics.action_space, "MPPIPlanner")
        super().__init__(dynamics, cost, horizon, execute, warm_start, default_action, seed)
        if not is_int(samples) or samples < 1 or not is_int(iterations) or iterations < 1:
            raise ValueError(f"samples and iterations must be ints >= 1, got {samples!r}, {iterations!r}")
        samples, iterations = int(samples), int(iterations)
        if not 0 < gamma < math.inf or not 0 <= beta < 1:
            raise ValueError(f"need a finite gamma > 0 and 0 <= beta < 1, got {gamma}, {beta}")
        self.samples, self.iterations = samples, iterations
        self.gamma, self.beta = float(gamma), float(beta)
        self.init_std = _resolve_std(init_std, space)

    def _resolve_default(self, default_action: Any) -> np.ndarray:
        return _box_default(self.action_space, default_action)

    def _optimise(
        self,
        dynamics: Dynamics,
        context: np.ndarray | None,
        goal: np.ndarray,
        state: Any,
        previous: np.ndarray | None,
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        space = self.action_space
        mean = (previous if previous is not None else self._default_plan()).astype(np.float64)
        shape = (self.samples, self.horizon, *space.shape)
        best_cost, nonfinite, found = np.inf, 0, False
        spread, effective = np.nan, np.nan  # stay NaN unless two or more candidates had a finite cost
        for _ in range(self.iterations):
            candidates = _clip(mean + correlated_noise(self.rng, shape, self.init_std, self.beta), space)
            costs = self._evaluate(dynamics, context, goal, state, candidates)
            finite = np.isfinite(costs)
            nonfinite += int((~finite).sum())
            if not finite.any():
                continue  # nothing to learn from this draw; the mean stays
            found = True
            best_cost = min(best_cost, float(costs[finite].min()))
            # exp(-inf) = 0: non-finite candidates get no weight. The minimum gets weight 1, so the sum is >= 1.
            weights = np.exp(-self.gamma * (costs - costs[finite].min()))
            mean = np.tensordot(weights / weights.sum(), candidates.astype(np.float64), axes=1)
            # Diagnostics: a spread of 0 means every candidate looked the same (a blind planner: the plan is the
            # mean of the noise); effective samples near 1 mean one candidate took all the weight.
            if finite.sum() >= 2:
                spread = float(costs[finite].max() - costs[finite].min())
                effective = float(weights.sum() ** 2 / (weights**2).sum())
        info = {
            "best_cost": best_cost,
            "nonfinite": nonfinite,
            "evaluated": self.samples * self.iterations,
            "cost_spread": spread,
            "effective_samples": effective,
        }
        return (_clip(mean, space) if found else None), info


class CEMPlanner(Planner):
    """Cross-entropy method for ``Box`` and ``Discrete`` actions; defaults are AdaWorld's Procgen planner.

    Args:
        dynamics: a :class:`Dynamics` with a ``Box`` or ``Discrete`` action space.
        cost: default AdaWorld's score (:data:`ADAWORLD_COST`: best RGB cosine similarity along the trajectory);
            VP2's CEM uses :data:`VP2_COST`.
        samples: candidate sequences per iteration (AdaWorld: 100; VP2: 200).
        horizon: actions per sequence (AdaWorld: 15; VP2: 10).
        elites: candidates kept per iteration (AdaWorld: 10; VP2: 5% of 200 = 10).
        iterations: refinements per plan (AdaWorld: 2; VP2: 3).
        execute: actions executed per plan (default ``min(5, horizon)``: AdaWorld executes 5, then replans;
            VP2: 1).
        init_std: Box only, initial std per dimension (default :func:`default_init_std`).
        beta: Box only, noise correlation across steps (0 = white, as plain CEM).
        smoothing: Discrete only, weight of the old probabilities in ``p = (1 - s) * elite_freq + s * p``; above 0
            no action's probability reaches 0, so no action is ruled out for good by one iteration.
        allowed_actions: Discrete only, the actions to sample from (default: all). AdaWorld's Procgen planner
            uses LEFT, DOWN, UP, RIGHT: :data:`~adaworld_gym.planning.mpc.PROCGEN_MOVE_ACTIONS`.
        return_best: return the lowest-cost sample seen (VP2's CEM) rather than the final mean / most likely
            actions.
        keep_previous: put the shifted previous plan among the first iteration's candidates (iCEM's elite
            carry-over), so a replan never scores below what it was already doing.
        warm_start, default_action, seed: see :class:`Planner`.

    Discrete warm start: the shifted previous plan becomes a prior: each step's probabilities are half a one-hot of
    the previous action and half uniform.
    """

    def __init__(
        self,
        dynamics: Dynamics,
        cost: CostFn = ADAWORLD_COST,
        *,
        samples: int = 100,
        horizon: int = 15,
        elites: int = 10,
        iterations: int = 2,
        execute: int | None = None,
        init_std: float | np.ndarray | tuple[float, ...] | None = None,
        beta: float = 0.0,
        smoothing: float = 0.1,
        allowed_actions: np.ndarray | list[int] | tuple[int, ...] | None = None,
        return_best: bool = True,
        keep_previous: bool = True,
        warm_start: bool = True,
        default_action: Any = None,
        seed: int = 0,
    ) -> None:
        _check_dynamics(dynamics)
        space = dynamics.action_space
        if not isinstance(space, spaces.Box | spaces.Discrete):
            raise TypeError(f"CEMPlanner needs a Box or Discrete action space, got {space}")
        self.discrete = isinstance(space, spaces.Discrete)
        if self.discrete:
            allowed = (
                np.arange(space.start, space.start + space.n) if allowed_actions is None else allowed_actions
            )
            allowed = np.asarray(allowed)
            if allowed.size and allowed.dtype.kind not in "iu":  # a cast to int64 truncated 1.5 to 1
                raise ValueError(f"allowed_actions must be integers, got {allowed_actions!r}")
            allowed = np.unique(allowed.astype(np.int64))
            if allowed.size < 1 or not all(space.contains(int(a)) for a in allowed):
                raise ValueError(
                    f"allowed_actions must be non-empty actions of {space}, got {allowed_actions}"
                )
            self.allowed_actions = allowed
        elif allowed_actions is not None:
            raise ValueError("allowed_actions applies to Discrete action spaces only")
        if execute is None:  # AdaWorld executes 5 actions of 15; a shorter horizon executes all of its own
            execute = min(5, horizon) if is_int(horizon) else 5
        super().__init__(dynamics, cost, horizon, execute, warm_start, default_action, seed)
        for name, value in (("samples", samples), ("elites", elites), ("iterations", iterations)):
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        samples, elites, iterations = int(samples), int(elites), int(iterations)
        if elites > samples:
            raise ValueError(f"elites ({elites}) cannot exceed samples ({samples})")
        if not 0 <= smoothing < 1 or not 0 <= beta < 1:
            raise ValueError(f"need 0 <= smoothing < 1 and 0 <= beta < 1, got {smoothing}, {beta}")
        self.samples, self.elites, self.iterations = samples, elites, iterations
        self.beta, self.smoothing = float(beta), float(smoothing)
        self.return_best, self.keep_previous = return_best, keep_previous
        if self.discrete and init_std is not None:  # was ignored: CEM over Discrete refits action frequencies
            raise ValueError(
                "init_std applies to Box action spaces; CEM over Discrete samples action frequencies"
            )
        self.init_std = None if self.discrete else _resolve_std(init_std, space)

    def _resolve_default(self, default_action: Any) -> np.ndarray:
        space = self.action_space
        if not self.discrete:
            return _box_default(space, default_action)
        action = self.allowed_actions[0] if default_action is None else default_action
        # int() truncated 2.9 to 2: only integers (Python, numpy or a 0-d integer array) are actions.
        if (
            np.ndim(action) != 0
            or np.asarray(action).dtype.kind not in "iu"
            or not space.contains(int(action))
        ):
            raise ValueError(f"default_action {default_action!r} is not in {space}")
        return np.array(int(action), np.int64)

    def _optimise(
        self,
        dynamics: Dynamics,
        context: np.ndarray | None,
        goal: np.ndarray,
        state: Any,
        previous: np.ndarray | None,
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        sample = self._sample_discrete if self.discrete else self._sample_box
        update = self._update_discrete if self.discrete else self._update_box
        dist = self._initial_discrete(previous) if self.discrete else self._initial_box(previous)
        best, best_cost, nonfinite = None, np.inf, 0
        for iteration in range(self.iterations):
            candidates = sample(dist)
            if iteration == 0 and previous is not None and self.keep_previous:
                candidates[0] = previous
            costs = self._evaluate(dynamics, context, goal, state, candidates)
            finite = np.isfinite(costs)
            nonfinite += int((~finite).sum())
            order = np.argsort(costs, kind="stable")[: self.elites]
            order = order[np.isfinite(costs[order])]  # never let a non-finite candidate become an elite
            if len(order) == 0:
                continue
            if costs[order[0]] < best_cost:
                best, best_cost = candidates[order[0]].copy(), float(costs[order[0]])
            dist = update(dist, candidates[order])
        info = {"best_cost": best_cost, "nonfinite": nonfinite, "evaluated": self.samples * self.iterations}
        if best is None:
            return None, info
        if self.return_best:
            return best, info
        if self.discrete:
            return self.allowed_actions[np.argmax(dist, axis=-1)], info
        return _clip(dist[0], self.action_space), info

    # Box: dist = (mean [H, *shape], std [H, *shape])
    def _initial_box(self, previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        mean = (previous if previous is not None else self._default_plan()).astype(np.float64)
        return mean, np.broadcast_to(self.init_std, mean.shape).astype(np.float64)

    def _sample_box(self, dist: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        mean, std = dist
        noise = correlated_noise(self.rng, (self.samples, *mean.shape), std, self.beta)
        return _clip(mean + noise, self.action_space)

    def _update_box(
        self, dist: tuple[np.ndarray, np.ndarray], elites: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        elites = elites.astype(np.float64)
        return elites.mean(axis=0), elites.std(axis=0)

    # Discrete: dist = probabilities [H, len(allowed_actions)]
    def _initial_discrete(self, previous: np.ndarray | None) -> np.ndarray:
        n = len(self.allowed_actions)
        probs = np.full((self.horizon, n), 1.0 / n)
        if previous is not None:
            index = self._index_of(previous)
            known = index >= 0  # a fallback default action may lie outside allowed_actions: no prior there
            probs[known] *= 0.5
            probs[np.flatnonzero(known), index[known]] += 0.5
        return probs

    def _index_of(self, actions: np.ndarray) -> np.ndarray:
        """Position of each action in ``allowed_actions``, -1 where it is not one."""
        position = np.searchsorted(self.allowed_actions, actions)
        position = np.minimum(position, len(self.allowed_actions) - 1)
        return np.where(self.allowed_actions[position] == actions, position, -1)

    def _sample_discrete(self, probs: np.ndarray) -> np.ndarray:
        # Inverse-CDF sampling of every (sample, step) at once.
        cdf = np.cumsum(probs, axis=-1)
        u = self.rng.random((self.samples, self.horizon, 1)) * cdf[:, -1:][None]
        index = np.minimum((u >= cdf[None]).sum(axis=-1), probs.shape[-1] - 1)
        return self.allowed_actions[index]

    def _update_discrete(self, probs: np.ndarray, elites: np.ndarray) -> np.ndarray:
        index = self._index_of(elites)  # [E, H]
        freq = np.zeros_like(probs)
        for t in range(self.horizon):
            known = index[:, t][index[:, t] >= 0]
            if len(known):
                freq[t] = np.bincount(known, minlength=probs.shape[-1]) / len(known)
            else:
                freq[t] = probs[t]
        return (1.0 - self.smoothing) * freq + self.smoothing * probs


def _resolve_std(init_std: Any, space: spaces.Box) -> np.ndarray:
    std = default_init_std(space) if init_std is None else np.asarray(init_std, np.float64)
    try:
        std = np.broadcast_to(std, space.shape).astype(np.float64)
    except ValueError:
        raise ValueError(
            f"init_std of shape {np.shape(init_std)} does not fit actions of shape {space.shape}"
        ) from None
    if not np.all(np.isfinite(std)) or np.any(std < 0):
        raise ValueError(f"init_std must be finite and >= 0, got {std}")
    return std


def _box_default(space: spaces.Box, default_action: Any) -> np.ndarray:
    if default_action is None:
        return _clip(np.zeros(space.shape), space)
    action = np.asarray(default_action, space.dtype)
    if not space.contains(action):
        raise ValueError(f"default_action {default_action!r} is not in {space}")
    return action


def _clip(actions: np.ndarray, space: spaces.Box) -> np.ndarray:
    """Clip to the bounds and cast to the space's dtype (the bounds are exact in that dtype).

    Integer spaces round to the nearest integer first: a bare cast truncates towards 0, which biased every
    sample and the MPPI / CEM mean towards 0 (a weighted mean of 2.9 became 2, of -0.6 became 0).
    """
    if np.issubdtype(space.dtype, np.integer):
        actions = np.rint(actions)
    return np.clip(actions, space.low, space.high).astype(space.dtype)
