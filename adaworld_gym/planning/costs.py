"""Goal-image costs for planning, vectorised over candidate trajectories; lower is better.

* :func:`pixel_sse`: per-step sum of squared pixel error to the goal, pixels scaled to [0, 1]. Summed over the
  trajectory it is VP2's ``mse_rgb`` cost.
* :func:`rgb_cosine`: per-step cosine similarity between the flattened RGB frame and the goal (AdaWorld's
  Procgen score).
* :class:`GoalCost` reduces a per-step metric to one cost per candidate: ``sum`` (VP2), ``best`` (the best
  step: AdaWorld's "max along the trajectory"), ``last`` or ``mean``.

Frames are ``[B, T, H, W, 3]`` (uint8, or float on the same 0-255 scale), the goal ``[H, W, 3]``;
:func:`pixel_sse` warns when a float input's maximum is in (0, 1] (an image scaled to [0, 1] by mistake). uint8
inputs are computed in exact integer arithmetic, so costs do not depend on summation order. Every non-finite cost
(from NaN or inf predictions, or a custom cost) becomes +inf (:func:`sanitize_costs`), so planners never pick it.

Example::

    >>> frames = np.zeros((2, 3, 64, 64, 3), np.uint8)
    >>> VP2_COST(frames, np.zeros((64, 64, 3), np.uint8))
    array([0., 0.])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ADAWORLD_COST",
    "ADAWORLD_TIEBREAK_COST",
    "VP2_COST",
    "CostFn",
    "GoalCost",
    "pixel_sse",
    "rgb_cosine",
    "sanitize_costs",
]

CostFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``cost(frames [B, T, H, W, 3], goal [H, W, 3]) -> float [B]``; lower is better."""

# Candidates per block in the per-step metrics: bounds the wide temporaries (int64 / float64 copies of the
# frames) to a few tens of MB however many candidates a planner evaluates.
_BLOCK = 16


def _check(frames: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames, goal = np.asarray(frames), np.asarray(goal)
    if goal.ndim != 3 or goal.shape[-1] != 3:
        raise ValueError(f"goal must be an [H, W, 3] image, got shape {goal.shape}")
    if frames.ndim != 5 or frames.shape[2:] != goal.shape:
        raise ValueError(
            f"frames must have shape [B, T, {', '.join(map(str, goal.shape))}], got {frames.shape}"
        )
    for name, array in (("frames", frames), ("goal", goal)):
        if array.dtype.kind not in "uif":
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return frames, goal


def _warn_unit_scale(frames: np.ndarray, goal: np.ndarray) -> None:
    """Warn when a float input looks scaled to [0, 1]: compared with 0-255 pixels its errors mean nothing.

    A warning, not an error: a very dark image on the 0-255 scale can have max <= 1 too. An all-zero image is
    the same on both scales, so it is not flagged.
    """
    for name, array in (("goal", goal), ("frames", frames)):
        if array.dtype.kind == "f" and array.size:
            peak = float(np.max(array))
            if 0.0 < peak <= 1.0:
                warnings.warn(
                    f"pixel_sse: float {name} has max {peak:.3g} <= 1: it looks scaled to [0, 1], but pixels "
                    "must be on the 0-255 scale (pass uint8, or multiply by 255); the costs are meaningless "
                    "otherwise",
                    UserWarning,
                    stacklevel=3,
                )


def _exact(array: np.ndarray) -> bool:
    return array.dtype == np.uint8


def pixel_sse(frames: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Sum of squared pixel errors to ``goal`` per frame, pixels scaled to [0, 1]: float64 ``[B, T]``."""
    frames, goal = _check(frames, goal)
    _warn_unit_scale(frames, goal)  # not in rgb_cosine: a cosine does not depend on the scale
    batch, steps = frames.shape[:2]
    out = np.empty((batch, steps), np.float64)
    exact = _exact(frames) and _exact(goal)
    # Integer path: (a - b)^2 summed in int64 is exact, then scaled once.
    g = goal.astype(np.int64 if exact else np.float64).reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, batch, _BLOCK):
            block = frames[start : start + _BLOCK].reshape(-1, g.size)
            diff = block.astype(g.dtype) - g
            out[start : start + _BLOCK] = np.einsum("nd,nd->n", diff, diff).reshape(-1, steps)
    return out / 255.0**2


def rgb_cosine(frames: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Cosine similarity between each flattened frame and ``goal``: float64 ``[B, T]`` in [-1, 1].

    An all-zero image has no direction: its similarity is 1 to another all-zero image and 0 to anything else.
    """
    frames, goal = _check(frames, goal)
    batch, steps = frames.shape[:2]
    exact = _exact(frames) and _exact(goal)
    g = goal.astype(np.int64 if exact else np.float64).reshape(-1)
    g_norm = np.sqrt(float(g @ g))
    out = np.empty((batch, steps), np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for start in range(0, batch, _BLOCK):
            block = frames[start : start + _BLOCK].reshape(-1, g.size).astype(g.dtype)
            dot = (block @ g).astype(np.float64)
            norm = np.sqrt(np.einsum("nd,nd->n", block, block).astype(np.float64))
            denom = norm * g_norm
            cos = np.where(
                denom > 0, dot / np.where(denom > 0, denom, 1.0), np.where(norm == g_norm, 1.0, 0.0)
            )
            # NaN or inf frames (or goal) must give NaN (and so +inf costs), not "no direction" or a finite
            # ratio: a NaN goal otherwise read as "no direction", similarity 0 for every candidate.
            cos = np.where(np.isfinite(norm) & np.isfinite(g_norm), cos, np.nan)
            out[start : start + _BLOCK] = cos.reshape(-1, steps)
    return np.clip(out, -1.0, 1.0)


def sanitize_costs(costs: np.ndarray) -> np.ndarray:
    """float64 copy of ``costs`` with every NaN, +inf and -inf replaced by +inf (never chosen)."""
    costs = np.array(costs, dtype=np.float64)
    costs[~np.isfinite(costs)] = np.inf
    return costs


_METRICS = ("mse", "cosine")
_REDUCTIONS = ("sum", "mean", "best", "last", "best_then_mean")
# Mean-cost weight of "best_then_mean", below any real difference of best costs: for "mse" the smallest one is
# one pixel level, (1/255)^2, and a mean cost is at most one per value, so the weight is divided by the frame size.
_TIEBREAK = 1e-9


@dataclass(frozen=True)
class GoalCost:
    """A goal-image cost: a per-step metric reduced over the trajectory, one cost per candidate.

    Args:
        metric: ``"mse"``: :func:`pixel_sse` per step; ``"cosine"``: minus :func:`rgb_cosine` per step.
        reduce: ``"sum"`` over steps (VP2), ``"mean"``, ``"best"`` (the lowest step cost, i.e. the closest the
            trajectory gets to the goal; AdaWorld's max-along-trajectory score), ``"last"`` (final frame only) or
            ``"best_then_mean"`` (``best``, ties broken by the mean: reaching the goal sooner and staying wins).

    Calling it returns float64 ``[B]`` with non-finite values replaced by +inf. A step with a non-finite cost
    makes the whole candidate +inf, also under ``"best"``: a model that produced NaN is not trusted elsewhere.
    """

    metric: str = "mse"
    reduce: str = "sum"

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {self.metric!r}")
        if self.reduce not in _REDUCTIONS:
            raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {self.reduce!r}")

    def step_costs(self, frames: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Per-step costs, float64 ``[B, T]`` (not sanitised)."""
        return pixel_sse(frames, goal) if self.metric == "mse" else -rgb_cosine(frames, goal)

    def __call__(self, frames: np.ndarray, goal: np.ndarray) -> np.ndarray:
        steps = self.step_costs(frames, goal)
        with np.errstate(invalid="ignore", over="ignore"):
            if self.reduce == "sum":
                costs = steps.sum(axis=1)
            elif self.reduce == "mean":
                costs = steps.mean(axis=1)
            elif self.reduce == "best":
                costs = steps.min(axis=1)
            elif self.reduce == "best_then_mean":
                # The frame size from the goal: ``frames`` may be any array-like (a nested list).
                weight = _TIEBREAK if self.metric == "cosine" else 0.1 / 255**2 / np.size(goal)
                costs = steps.min(axis=1) + weight * steps.mean(axis=1)
            else:
                costs = steps[:, -1].copy()
        # Checked per step: "best" or "last" would otherwise hide a NaN step (and min would pick a -inf one).
        costs[~np.isfinite(steps).all(axis=1)] = np.inf
        return sanitize_costs(costs)


VP2_COST = GoalCost("mse", "sum")
"""VP2's robosuite cost ``mse_rgb``: squared error summed over all predicted frames, pixels and channels."""

ADAWORLD_COST = GoalCost("cosine", "best")
"""AdaWorld's Procgen score as a cost: minus the best RGB cosine similarity along the trajectory."""

ADAWORLD_TIEBREAK_COST = GoalCost("cosine", "best_then_mean")
""":data:`ADAWORLD_COST` with ties broken by the mean similarity. With the simulator oracle a completed Procgen
level repeats the goal frame, so completing ties with merely passing the goal frame under the plain score."""
