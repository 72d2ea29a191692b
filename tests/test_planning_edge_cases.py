"""Planning edge cases: the simulator oracle's frames when a candidate ends on its first
step, and two goal-cost edge cases."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from adaworld_gym.planning import (
    ADAWORLD_COST,
    ADAWORLD_TIEBREAK_COST,
    GoalCost,
    SimulatorDynamics,
    rgb_cosine,
)

SIZE, FRESH, EDGE = 16, 4, 12  # frame side; x after a fresh start; reaching x >= EDGE completes the level


def frame_at(x: int) -> np.ndarray:
    frame = np.full((SIZE, SIZE, 3), 30, np.uint8)
    frame[6:10, x : x + 4, 0] = 250
    return frame


class Level(gymnasium.Env):
    """Discrete(3) (stay, left, right by 2 px). Reaching the right edge completes the level; the terminal
    observation then shows the next try, as Procgen's does."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self) -> None:
        self.action_space = spaces.Discrete(3)
        self.observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        self.x = FRESH

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.x = int((options or {}).get("state", FRESH))
        return frame_at(self.x), {}

    def step(self, action: Any):
        self.x = max(0, self.x + (0, -2, 2)[int(action)])
        if self.x >= EDGE:
            self.x = FRESH
            return frame_at(self.x), 1.0, True, False, {"level_complete": True}
        return frame_at(self.x), 0.0, False, False, {}

    def render(self) -> np.ndarray:
        return frame_at(self.x)

    def get_state(self) -> int:
        return self.x

    def set_state(self, state: int) -> None:
        self.x = int(state)


def test_an_oracle_candidate_that_completes_on_its_first_step_holds_the_start_frame():
    # One move from completion, at the goal frame (the frame before the completing step, as the Procgen
    # benchmark's goals are). Completing at once used to show the next try's frame, so it scored below
    # standing still and the oracle never took the completing move from there.
    state, goal = EDGE - 2, frame_at(EDGE - 2)
    with SimulatorDynamics(Level, workers=0) as oracle:
        frames = oracle.rollout(None, np.array([[2, 2, 2], [0, 0, 0], [1, 2, 2]]), state=state)
    np.testing.assert_array_equal(frames[0], np.stack([goal] * 3))  # ended at once: the start frame, held
    np.testing.assert_array_equal(frames[1], np.stack([goal] * 3))  # stays
    # Ends on its third step: the frame before it (the goal frame) is held, as before.
    np.testing.assert_array_equal(frames[2], np.stack([frame_at(EDGE - 4), goal, goal]))
    for cost in (ADAWORLD_COST, ADAWORLD_TIEBREAK_COST):
        costs = cost(frames, goal)
        assert costs[0] == costs.min() == costs[1], (cost, costs)


def test_a_nan_goal_gives_inf_costs_under_the_cosine_metric_too():
    frames = np.random.default_rng(0).integers(0, 256, (3, 2, 4, 4, 3), dtype=np.uint8)
    goal = np.full((4, 4, 3), np.nan)
    assert np.isnan(rgb_cosine(frames, goal)).all()  # was 0: "no direction", a finite similarity
    assert np.isposinf(ADAWORLD_COST(frames, goal)).all()
    assert np.isposinf(GoalCost("mse", "sum")(frames, goal)).all()


def test_the_mse_tiebreak_cost_accepts_array_likes_as_the_other_costs_do():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 2, 4, 4, 3), dtype=np.uint8)
    goal = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    cost = GoalCost("mse", "best_then_mean")
    np.testing.assert_array_equal(cost(frames.tolist(), goal.tolist()), cost(frames, goal))
