"""Planning edge cases: the simulator oracle's and the MPC loop's frames when a candidate ends on its first step or
the env reuses one observation buffer, two goal-cost edge cases, goals of the wrong size, NaN or off the 0..255
scale, numpy-integer settings, and bad seeds, executed counts, actions and init_std refused where they are given."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from test_planning import GOAL, START, ToyDynamics, ToyEnv, position_of, render, toy_context

from adaworld_gym.models.bundle import tiny_random_bundle
from adaworld_gym.planning import (
    ADAWORLD_COST,
    ADAWORLD_TIEBREAK_COST,
    CEMPlanner,
    GoalCost,
    MPPIPlanner,
    SimulatorDynamics,
    WorldModelDynamics,
    rgb_cosine,
    run_mpc_episode,
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


def test_a_goal_of_the_wrong_size_is_named_as_such():
    # It was reported as "SimulatorDynamics.rollout returned frames of shape ...": the dynamics were fine.
    with SimulatorDynamics(Level, workers=0) as oracle:
        planner = CEMPlanner(oracle, samples=4, elites=2, horizon=2, iterations=1)
        with pytest.raises(ValueError, match=r"the goal image is 8x8 but SimulatorDynamics.rollout predicts"):
            planner.plan(None, np.zeros((8, 8, 3), np.uint8), FRESH)


class _OwnModel:
    """A user's own dynamics, returning whatever ``frames`` says."""

    context_frames, uses_state = 1, False

    def __init__(self, frames):
        self.action_space, self.frames = gymnasium.spaces.Box(-1, 1, (2,), np.float32), frames

    def rollout(self, context, actions, state=None):
        return self.frames(np.shape(actions)[:2])


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (lambda bt: None, r"_OwnModel.rollout returned None, not frames \[4, 2, H, W, 3\]"),
        (
            lambda bt: np.zeros((*bt, 3, 8, 8), np.uint8),
            r"returned frames of shape \(4, 2, 3, 8, 8\).*channels last",
        ),
        (
            lambda bt: np.zeros((bt[0], 8, 8, 3), np.uint8),
            r"returned frames of shape \(4, 8, 8, 3\), expected \[4, 2",
        ),
        (
            lambda bt: np.zeros((*bt, 16, 16, 3), np.uint8),
            r"the goal image is 8x8 but _OwnModel.rollout predicts 16x16",
        ),
    ],
)
def test_a_users_dynamics_returning_other_frames_is_named(frames, match):
    planner = MPPIPlanner(_OwnModel(frames), samples=4, horizon=2)
    with pytest.raises(ValueError, match=match):
        planner.plan(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


def test_an_object_that_is_not_a_dynamics_is_told_what_it_lacks():
    class NoContext:
        action_space, uses_state = gymnasium.spaces.Discrete(2), False

        def rollout(self, context, actions, state=None):
            return None

    with pytest.raises(
        TypeError, match=r"NoContext is not a Dynamics: it lacks context_frames \(a Dynamics has"
    ):
        CEMPlanner(NoContext(), samples=4, elites=2, horizon=2)


def test_a_world_model_planner_checks_the_goal_size_before_any_rollout(monkeypatch):
    from adaworld_gym.models.bundle import tiny_random_bundle

    dynamics = WorldModelDynamics(tiny_random_bundle("discrete"))
    monkeypatch.setattr(
        dynamics, "rollout", lambda *a, **k: pytest.fail("rolled out before checking the goal")
    )
    planner = CEMPlanner(dynamics, samples=4, elites=2, horizon=2)
    with pytest.raises(ValueError, match=r"goal image of shape \(32, 32, 3\) does not match the context"):
        planner.plan(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8))


def test_planners_take_numpy_integer_settings():
    # np.arange sweeps: "horizon must be an int >= 1, got 3", or for CEM "execute (5) cannot exceed horizon (3)".
    with SimulatorDynamics(Level, workers=np.int64(0)) as oracle:
        cem = CEMPlanner(
            oracle, samples=np.int64(6), elites=np.int32(2), horizon=np.int64(3), iterations=np.int64(1)
        )
        assert (cem.horizon, cem.execute, cem.samples) == (3, 3, 6) and type(cem.horizon) is int
        episode = run_mpc_episode(
            Level(), cem, None, frame_at(EDGE - 2), max_steps=np.int64(2), replan_every=np.int64(1)
        )
        assert len(episode.actions) == 2

    class Still:  # a Box model that never moves: only the settings are under test
        action_space, context_frames, uses_state = spaces.Box(-1, 1, (2,), np.float32), 1, False

        def rollout(self, context: Any, actions: np.ndarray, state: Any = None) -> np.ndarray:
            return np.repeat(context[:, -1:], actions.shape[1], axis=1)

    box = Still()
    mppi = MPPIPlanner(box, samples=np.int64(4), horizon=np.int64(2), iterations=np.int64(1))
    assert (mppi.samples, mppi.horizon) == (4, 2)
    assert mppi.plan(np.zeros((1, SIZE, SIZE, 3), np.uint8), frame_at(FRESH)).shape == (2, 2)
    with pytest.raises(ValueError, match="horizon"):
        CEMPlanner(oracle, horizon=True)


def test_a_float_goal_scaled_to_unit_range_warns_under_the_pixel_cost():
    frames = np.full((2, 1, 4, 4, 3), 200, np.uint8)
    goal = np.full((4, 4, 3), 200.0)
    with pytest.warns(UserWarning, match=r"goal has max 0\.784 <= 1.*0-255 scale"):
        GoalCost("mse", "sum")(frames, goal / 255)  # was silently 2 * 48 * (200/255)^2 away from 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(GoalCost("mse", "sum")(frames, goal), [0, 0])  # the 0-255 scale
        GoalCost("mse", "sum")(frames, np.zeros((4, 4, 3)))  # all black: the same on both scales
        ADAWORLD_COST(frames, goal / 255)  # a cosine does not depend on the scale


class _Flat:
    """Every candidate looks the same: the planner's mean only moves by its own arithmetic."""

    action_space, context_frames, uses_state = spaces.Box(-5, 5, (1,), np.int64), 1, False

    def rollout(self, context: Any, actions: np.ndarray, state: Any = None) -> np.ndarray:
        return np.repeat(context[:, -1:], actions.shape[1], axis=1)


@pytest.mark.parametrize("start", [3, -3])
@pytest.mark.parametrize("kind", ["mppi", "cem"])
def test_integer_box_plans_round_instead_of_truncating_towards_zero(kind, start):
    default = np.array([start])
    if kind == "mppi":
        planner = MPPIPlanner(_Flat(), samples=200, horizon=2, init_std=0.4, default_action=default)
    else:
        planner = CEMPlanner(
            _Flat(),
            samples=200,
            horizon=2,
            elites=20,
            init_std=0.4,
            return_best=False,
            default_action=default,
        )
    context, goal = np.zeros((1, 4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    for _ in range(3):  # truncated samples averaged about start -/+ 0.5, cast to start -/+ 1: a drift to 0
        plan = planner.plan(context, goal)
        assert plan.dtype == np.int64 and plan[:, 0].tolist() == [start, start], plan


def test_run_mpc_episode_drives_a_goal_env_with_dict_observations():
    from adaworld_gym.envs import GoalWorldModelEnv
    from adaworld_gym.envs.world_model_env import goal_reward
    from adaworld_gym.models.bundle import tiny_random_bundle

    bundle = tiny_random_bundle("discrete")
    env = GoalWorldModelEnv(bundle, denoise_steps=1, max_episode_steps=3)
    goal = bundle.initial_frames[0, -1]
    planner = CEMPlanner(WorldModelDynamics(bundle, steps=1), samples=4, elites=2, horizon=2, iterations=1)
    # Stacking the dict observations failed with "context must be uint8 [k>=1, H, W, 3], got object (1,)".
    episode = run_mpc_episode(env, planner, None, goal, max_steps=2, seed=0, reset_options={"goal": goal})
    assert episode.frames.shape == (3, 64, 64, 3) and episode.frames.dtype == np.uint8
    np.testing.assert_allclose(episode.rewards, [goal_reward(f, goal) for f in episode.frames[1:]], rtol=1e-6)

    class NoImage(Level):
        observation_space = spaces.Dict({"state": spaces.Discrete(SIZE)})

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
            super().reset(seed=seed, options=options)
            return {"state": self.x}, {}

    with pytest.raises(TypeError, match=r"dict with keys \['state'\] and no 'observation' image"):
        run_mpc_episode(NoImage(), planner, None, goal, max_steps=1)


class _OneBuffer:
    """Mixin: every observation and render is written into one array that is handed out each time (gymnasium
    allows it; a caller that keeps a frame must copy it)."""

    def _out(self, frame: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_buffer"):
            self._buffer = np.empty_like(frame)
        self._buffer[...] = frame
        return self._buffer

    def reset(self, **kwargs):
        frame, info = super().reset(**kwargs)
        return self._out(frame), info

    def step(self, action):
        frame, *rest = super().step(action)
        return (self._out(frame), *rest)

    def render(self):
        return self._out(super().render())


class OneBufferLevel(_OneBuffer, Level):
    pass


class OneBufferToyEnv(_OneBuffer, ToyEnv):
    pass


@pytest.mark.usefixtures("one_thread")
def test_plan_refuses_a_negative_or_fractional_executed_count():
    planner = MPPIPlanner(ToyDynamics(), samples=8, horizon=4, seed=0)
    goal = render(GOAL)
    first = planner.plan(toy_context(), goal)
    # -1 silently dropped the warm start; 2.7 was truncated to 2.
    for bad in (-1, 2.7):
        with pytest.raises(ValueError, match="executed must be an int >= 0"):
            planner.plan(toy_context(), goal, executed=bad)
    # Valid counts still work: 0 warm-starts from the unshifted plan, a numpy integer is an int.
    seen = []
    planner._optimise = lambda dynamics, context, goal, state, previous: (seen.append(previous), (None, {}))[
        1
    ]
    with pytest.warns(RuntimeWarning, match="previous plan"):
        planner.plan(toy_context(), goal, executed=0)
    np.testing.assert_array_equal(seen[-1], first)
    with pytest.warns(RuntimeWarning):
        planner.plan(toy_context(), goal, executed=np.int64(1))
    np.testing.assert_array_equal(seen[-1][:-1], first[1:])


@pytest.mark.usefixtures("one_thread")
def test_discrete_cem_refuses_fractional_actions():
    from test_planning import DISCRETE

    dynamics = ToyDynamics(DISCRETE)
    # [1.5, 2.7] became actions [1, 2] and 2.9 became 2, without a word.
    with pytest.raises(ValueError, match="allowed_actions must be integers"):
        CEMPlanner(dynamics, allowed_actions=[1.5, 2.7])
    for bad in (2.9, True, [2]):
        with pytest.raises(ValueError, match="default_action"):
            CEMPlanner(dynamics, default_action=bad)
    assert (
        CEMPlanner(dynamics, allowed_actions=np.array([3, 1]), default_action=np.int64(2)).default_action == 2
    )
    assert CEMPlanner(dynamics, default_action=np.array(4)).default_action == 4


@pytest.mark.usefixtures("one_thread")
def test_the_oracle_holds_the_frame_before_termination_even_if_the_env_reuses_its_buffer():
    actions = np.array([[0, 2, 2, 0], [2, 0, 0, 0]])  # from EDGE - 4: completes on step 3 / never
    with SimulatorDynamics(OneBufferLevel, workers=0) as oracle:
        frames = oracle.rollout(None, actions, state=EDGE - 4)
        # From EDGE - 2: completes at once / walks left / completes at once.
        at_once = oracle.rollout(None, np.array([[2, 0], [1, 1], [2, 0]]), state=EDGE - 2)
    # Ends on its third step: the frame before it is held, not the next try's that the env wrote over it.
    expected = np.stack([frame_at(EDGE - 4), frame_at(EDGE - 2), frame_at(EDGE - 2), frame_at(EDGE - 2)])
    np.testing.assert_array_equal(frames[0], expected)
    np.testing.assert_array_equal(frames[1], np.stack([frame_at(EDGE - 2)] * 4))
    # Ends at once: the start frame is held for it, even after another candidate stepped the env.
    np.testing.assert_array_equal(at_once[0], np.stack([frame_at(EDGE - 2)] * 2))
    np.testing.assert_array_equal(at_once[1], np.stack([frame_at(EDGE - 4), frame_at(EDGE - 6)]))
    np.testing.assert_array_equal(at_once[2], np.stack([frame_at(EDGE - 2)] * 2))


@pytest.mark.usefixtures("one_thread")
def test_mpc_records_every_frame_even_if_the_env_reuses_its_buffer():
    def episode(env):
        planner = MPPIPlanner(ToyDynamics(), samples=16, horizon=4, seed=0)
        return run_mpc_episode(env, planner, None, render(GOAL), max_steps=4, state=START)

    reused, plain = episode(OneBufferToyEnv()), episode(ToyEnv())
    # Every recorded frame was the latest observation (the square's final position, five times).
    np.testing.assert_array_equal(reused.frames, plain.frames)
    np.testing.assert_allclose(position_of(reused.frames[0]), START)
    assert len({tuple(np.round(p, 3)) for p in position_of(reused.frames)}) == 5


@pytest.fixture(scope="module")
def box_dynamics():
    return WorldModelDynamics(tiny_random_bundle("continuous"), steps=1)


@pytest.mark.usefixtures("one_thread")
def test_planners_refuse_goals_with_nan_or_pixels_off_the_0_255_scale(box_dynamics):
    planner = MPPIPlanner(box_dynamics, samples=4, horizon=2)
    context = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="goal contains NaN or inf"):
        planner.plan(context, np.full((64, 64, 3), np.nan))
    with pytest.raises(ValueError, match=r"goal pixels must lie in \[0, 255\], got -1000"):
        planner.plan(context, np.zeros((64, 64, 3), np.int64) - 1000)
    assert planner.plan(context, np.full((64, 64, 3), 255.0)).shape == (2, 2)  # in range: planned


@pytest.mark.usefixtures("one_thread")
def test_seeds_and_guidance_are_checked_where_they_are_given(box_dynamics):
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            MPPIPlanner(box_dynamics, samples=4, horizon=2, seed=seed)
        with pytest.raises(ValueError, match="generator_seed must be an integer >= 0"):
            WorldModelDynamics(tiny_random_bundle("continuous"), generator_seed=seed)
    planner = MPPIPlanner(box_dynamics, samples=4, horizon=2, seed=np.int64(3))
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -2"):
        planner.reset(seed=-2)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number, got 'x'"):
        WorldModelDynamics(tiny_random_bundle("continuous"), guidance_scale="x")


@pytest.mark.usefixtures("one_thread")
def test_cem_over_discrete_actions_refuses_an_init_std():
    dynamics = WorldModelDynamics(tiny_random_bundle("discrete"), steps=1)
    with pytest.raises(ValueError, match="init_std applies to Box action spaces"):
        CEMPlanner(dynamics, samples=4, elites=2, horizon=2, init_std=0.5)
