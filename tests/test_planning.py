"""Tests for adaworld_gym.planning: costs, dynamics, MPPI / CEM and the closed-loop MPC helper.

Most tests use a toy world whose dynamics are analytic: a square (with a wide halo, so the pixel cost has a
slope far from the goal) moves by the action. Its learned-model stand-in reads the square's position from the
last context frame, its simulator twin keeps the position as state; both render the same frames.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from adaworld_gym.planning import (
    ADAWORLD_COST,
    PUSH_INIT_STD,
    VP2_COST,
    CEMPlanner,
    Dynamics,
    GoalCost,
    MPPIPlanner,
    SimulatorDynamics,
    WorldModelDynamics,
    correlated_noise,
    make_dynamics,
    pixel_sse,
    rgb_cosine,
    run_mpc_episode,
    sanitize_costs,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------------------------------------ toy world

SIZE = 64
HALF = 5.0  # half side of the square, pixels
SPEED = 4.0  # pixels per unit of a Box action
LOW, HIGH = 8.0, 56.0  # the square's centre stays here, so it is always fully inside the frame
MOVES = np.array(
    [[0, 0], [-6, 0], [6, 0], [0, -6], [0, 6]], np.float64
)  # Discrete: stay, left, right, up, down
_EDGES = np.arange(SIZE, dtype=np.float64)
_CENTRES = _EDGES + 0.5


def render(pos: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 64, 64, 3]`` frames of squares centred at ``pos [..., 2]`` (x, y in pixels).

    Red: the square with exact area coverage at its edges (so its centroid is the position). Green: a wide
    Gaussian halo, which gives the pixel cost a slope even when the squares do not overlap. Both are outer
    products of per-axis profiles, which keeps rendering thousands of candidate frames cheap.
    """
    pos = np.asarray(pos, np.float64)
    x, y = pos[..., 0, None], pos[..., 1, None]

    def cover(c: np.ndarray) -> np.ndarray:
        return np.clip(np.minimum(_EDGES + 1, c + HALF) - np.maximum(_EDGES, c - HALF), 0, 1)

    def halo(c: np.ndarray) -> np.ndarray:
        return np.exp(-((_CENTRES - c) ** 2) / (2 * 15.0**2))

    frame = np.empty((*pos.shape[:-1], SIZE, SIZE, 3), np.uint8)
    frame[..., 0] = np.rint(255 * cover(y)[..., :, None] * cover(x)[..., None, :])
    frame[..., 1] = np.rint(200 * halo(y)[..., :, None] * halo(x)[..., None, :])
    frame[..., 2] = 40
    return frame


def position_of(frames: np.ndarray) -> np.ndarray:
    """The square's centre ``[..., 2]`` read back from frames (centroid of the red channel)."""
    red = frames[..., 0].astype(np.float64)
    total = red.sum(axis=(-2, -1))
    return np.stack(
        [(red * _CENTRES).sum(axis=(-2, -1)) / total, (red * _CENTRES[:, None]).sum(axis=(-2, -1)) / total],
        -1,
    )


def move(pos: np.ndarray, action: np.ndarray, space: spaces.Space) -> np.ndarray:
    delta = (
        MOVES[np.asarray(action, np.int64)]
        if isinstance(space, spaces.Discrete)
        else SPEED * np.asarray(action)[..., :2]
    )
    return np.clip(pos + delta, LOW, HIGH)


BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
DISCRETE = spaces.Discrete(5)


class ToyDynamics:
    """Learned-model stand-in: reads the position from the last context frame and moves it analytically."""

    context_frames = 1
    uses_state = False

    def __init__(self, action_space: spaces.Space = BOX) -> None:
        self.action_space = action_space
        self.calls = 0

    def rollout(self, context: np.ndarray | None, actions: np.ndarray, state: Any = None) -> np.ndarray:
        self.calls += 1
        pos = position_of(context[:, -1])
        out = []
        for t in range(actions.shape[1]):
            pos = move(pos, actions[:, t], self.action_space)
            out.append(render(pos))
        return np.stack(out, axis=1)


class ToyEnv(gymnasium.Env):
    """The toy world as a real env with exact get_state/set_state (the position)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, action_space: spaces.Space = BOX) -> None:
        self.action_space = action_space
        self.observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        self.pos = np.array([32.0, 32.0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        self.pos = np.array(options.get("state", [32.0, 32.0]), np.float64)
        return render(self.pos), {}

    def step(self, action: Any):
        assert self.action_space.contains(action), action
        self.pos = move(self.pos, action, self.action_space)
        return render(self.pos), 0.0, False, False, {"pos": self.pos.copy()}

    def render(self) -> np.ndarray:
        return render(self.pos)

    def get_state(self) -> np.ndarray:
        return self.pos.copy()

    def set_state(self, state: np.ndarray) -> None:
        self.pos = np.array(state, np.float64)


class NaNDynamics:
    """Wraps a dynamics; candidates whose first action has x > 0 (or all, with ``everywhere``) predict NaN."""

    def __init__(self, inner: Any, everywhere: bool = False) -> None:
        self.inner, self.everywhere = inner, everywhere
        self.action_space, self.context_frames, self.uses_state = inner.action_space, 1, False

    def rollout(self, context: np.ndarray | None, actions: np.ndarray, state: Any = None) -> np.ndarray:
        frames = self.inner.rollout(context, actions, state).astype(np.float32)
        bad = np.ones(len(actions), bool) if self.everywhere else actions[:, 0, 0] > 0
        frames[bad] = np.nan
        return frames


START, GOAL = np.array([16.0, 16.0]), np.array([44.0, 40.0])


def toy_context(pos: np.ndarray = START) -> np.ndarray:
    return render(pos)[None]


# -------------------------------------------------------------------------------------------------- costs


def test_pixel_sse_and_cosine_on_known_inputs():
    goal = np.zeros((4, 4, 3), np.uint8)
    frames = np.zeros((2, 3, 4, 4, 3), np.uint8)
    frames[0, 1, 0, 0, 0] = 255  # one saturated value: squared error 1 in [0, 1] units
    frames[1, :, :, :, :] = 51  # 0.2 everywhere: 48 values * 0.04
    sse = pixel_sse(frames, goal)
    np.testing.assert_allclose(sse, [[0, 1, 0], [1.92, 1.92, 1.92]], rtol=1e-12)
    # Float frames on the 0-255 scale give the same numbers.
    np.testing.assert_allclose(pixel_sse(frames.astype(np.float32), goal), sse, rtol=1e-6)
    # VP2: summed over the trajectory.
    np.testing.assert_allclose(VP2_COST(frames, goal), [1.0, 5.76])
    np.testing.assert_allclose(GoalCost("mse", "mean")(frames, goal), [1 / 3, 1.92])
    np.testing.assert_allclose(GoalCost("mse", "best")(frames, goal), [0.0, 1.92])
    np.testing.assert_allclose(GoalCost("mse", "last")(frames, goal), [0.0, 1.92])

    goal = np.full((2, 2, 3), 10, np.uint8)
    frames = np.zeros((1, 3, 2, 2, 3), np.uint8)
    frames[0, 0] = 200  # parallel to the goal: cosine 1
    frames[0, 1, 0, 0, 0] = 7  # one non-zero value out of 12: cosine 1 / sqrt(12)
    # frames[0, 2] stays all zero: no direction, similarity 0
    np.testing.assert_allclose(rgb_cosine(frames, goal), [[1.0, 1 / np.sqrt(12), 0.0]], rtol=1e-12)
    np.testing.assert_allclose(ADAWORLD_COST(frames, goal), [-1.0])  # best step = the parallel frame
    assert rgb_cosine(np.zeros((1, 1, 2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8))[0, 0] == 1.0


def test_costs_turn_every_non_finite_value_into_inf():
    np.testing.assert_array_equal(
        sanitize_costs([1.0, np.nan, -np.inf, np.inf]), [1.0, np.inf, np.inf, np.inf]
    )
    goal = np.zeros((2, 2, 3), np.uint8)
    frames = np.ones((3, 2, 2, 2, 3), np.float32)
    frames[1, 0, 0, 0, 0] = np.nan
    frames[2, 1] = np.inf
    for cost in (VP2_COST, ADAWORLD_COST, GoalCost("mse", "best"), GoalCost("cosine", "last")):
        costs = cost(frames, goal)
        assert np.isfinite(costs[0]) and np.isposinf(costs[1:]).all(), (cost, costs)
    with pytest.raises(ValueError, match="frames must have shape"):
        VP2_COST(np.zeros((2, 4, 4, 3), np.uint8), goal)
    with pytest.raises(ValueError, match="metric"):
        GoalCost("psnr")


def test_correlated_noise_follows_the_vp2_recursion():
    rng = np.random.default_rng(0)
    noise = correlated_noise(rng, (20000, 6, 2), np.array([1.0, 0.0]), beta=0.5)
    assert np.all(noise[..., 1] == 0)  # a zero std dimension never moves (the push gripper)
    x = noise[..., 0]
    # n_t = 0.5 n_(t-1) + 0.5 w_t: lag-1 correlation 0.5 * std(n_(t-1)) / std(n_t) > 0; variance shrinks from 1.
    assert abs(x[:, 0].std() - 1.0) < 0.03
    assert abs(x[:, 5].std() - np.sqrt(1 / 3)) < 0.03
    assert np.corrcoef(x[:, 4], x[:, 5])[0, 1] > 0.4
    white = correlated_noise(np.random.default_rng(0), (20000, 2, 1), 1.0, beta=0.0)
    assert abs(np.corrcoef(white[:, 0, 0], white[:, 1, 0])[0, 1]) < 0.03


# ------------------------------------------------------------------------------------------------ planners


def distance_to_goal(frames: np.ndarray) -> np.ndarray:
    return np.linalg.norm(position_of(frames) - GOAL, axis=-1)


@pytest.mark.parametrize("oracle", [False, True], ids=["learned", "simulator"])
def test_mppi_reaches_the_goal_in_closed_loop(oracle):
    goal = render(GOAL)
    dynamics = SimulatorDynamics(ToyEnv, workers=0) if oracle else ToyDynamics()
    planner = MPPIPlanner(dynamics, samples=64, horizon=6, seed=0)
    episode = run_mpc_episode(ToyEnv(), planner, None, goal, max_steps=11, state=START)
    assert episode.frames.shape == (12, SIZE, SIZE, 3) and episode.actions.shape == (11, 2)
    assert np.all(np.abs(episode.actions) <= 1)
    assert episode.planned.all() and len(episode.replan_seconds) == 11  # VP2: replan every step
    assert all(s > 0 for s in episode.replan_seconds) and episode.seconds_per_replan > 0
    # Success as VP2 scores it: the best state of the episode. MPPI's sampling noise then keeps it jittering
    # around the goal by a few pixels (half a unit of action), so the end is only required to stay close.
    distance = distance_to_goal(episode.frames)
    assert distance[0] > 35 and distance.min() < 1.5 and distance[-1] < 5, distance


def test_cem_box_reaches_the_goal_and_returns_its_best_sample():
    dynamics, goal = ToyDynamics(), render(GOAL)
    planner = CEMPlanner(dynamics, VP2_COST, samples=60, horizon=8, elites=6, iterations=3, execute=2, seed=0)
    episode = run_mpc_episode(ToyEnv(), planner, None, goal, max_steps=12, state=START)
    assert episode.planned.tolist() == [True, False] * 6  # execute 2, then replan
    assert distance_to_goal(episode.frames)[-1] < 2.0
    # return_best: the plan is a sampled candidate, so its cost is the best cost seen.
    plan = planner.plan(toy_context(), goal)
    frames = dynamics.rollout(toy_context()[None], plan[None])
    assert VP2_COST(frames, goal)[0] == pytest.approx(planner.last_info["best_cost"])


def test_discrete_cem_reaches_the_goal_with_a_subset_of_actions():
    goal_pos = np.array([44.0, 38.0])  # 5 moves right and 4 down on the 6-pixel grid from (14, 14)
    dynamics = ToyDynamics(DISCRETE)
    planner = CEMPlanner(dynamics, samples=60, horizon=12, elites=8, allowed_actions=[2, 1, 4, 3], seed=0)
    assert planner.execute == 5 and planner.iterations == 2 and planner.cost is ADAWORLD_COST
    episode = run_mpc_episode(
        ToyEnv(DISCRETE), planner, None, render(goal_pos), max_steps=20, state=[14.0, 14.0]
    )
    assert set(episode.actions.tolist()) <= {1, 2, 3, 4}  # never "stay" (0): not allowed
    assert episode.actions.dtype == np.int64
    distances = np.linalg.norm(position_of(episode.frames) - goal_pos, axis=-1)
    assert distances.min() < 0.5, distances  # AdaWorld counts the best step of the episode


def test_discrete_cem_updates_probabilities_from_elites_with_smoothing():
    planner = CEMPlanner(ToyDynamics(DISCRETE), samples=4, horizon=2, elites=2, smoothing=0.2, seed=0)
    probs = np.full((2, 5), 0.2)
    elites = np.array([[2, 4], [2, 0]])
    new = planner._update_discrete(probs, elites)
    np.testing.assert_allclose(new[0], 0.8 * np.array([0, 0, 1, 0, 0]) + 0.2 * probs[0])
    np.testing.assert_allclose(new[1], 0.8 * np.array([0.5, 0, 0, 0, 0.5]) + 0.2 * probs[1])
    np.testing.assert_allclose(new.sum(axis=1), 1.0)


def test_planners_are_deterministic_under_a_seed():
    goal = render(GOAL)
    for make in (
        lambda seed: MPPIPlanner(ToyDynamics(), samples=32, horizon=5, seed=seed),
        lambda seed: CEMPlanner(ToyDynamics(), samples=32, horizon=5, elites=4, seed=seed),
        lambda seed: CEMPlanner(ToyDynamics(DISCRETE), samples=32, horizon=5, elites=4, seed=seed),
    ):
        plans = []
        for seed in (3, 3, 4):
            planner = make(seed)
            plans.append(np.stack([planner.plan(toy_context(), goal), planner.plan(toy_context(), goal)]))
        np.testing.assert_array_equal(plans[0], plans[1])
        assert not np.array_equal(plans[0], plans[2])
        # reset(seed) restarts the same stream and forgets the warm start and timings.
        planner.reset(seed=3)
        assert planner.replan_seconds == []
        np.testing.assert_array_equal(planner.plan(toy_context(), goal), plans[0][0])


def test_mppi_defaults_follow_vp2():
    from adaworld_gym.plan import make_planner

    box4 = spaces.Box(-1, 1, (4,), np.float32)
    # Any other 4-D box keeps every dimension; VP2's push planners freeze the gripper.
    np.testing.assert_array_equal(MPPIPlanner(ToyDynamics(box4)).init_std, [0.5, 0.5, 0.5, 0.5])
    planner = make_planner("mppi", ToyDynamics(box4))
    assert (planner.samples, planner.horizon, planner.gamma, planner.beta, planner.execute) == (
        200,
        10,
        0.05,
        0.5,
        1,
    )
    np.testing.assert_array_equal(planner.init_std, PUSH_INIT_STD)
    np.testing.assert_array_equal(make_planner("cem", ToyDynamics(box4)).init_std, PUSH_INIT_STD)
    plan = planner.plan(toy_context(), render(GOAL))
    assert plan.shape == (10, 4) and plan.dtype == np.float32
    assert np.all(plan[:, 3] == 0) and np.all(plan[:, 2] != 0)  # the gripper entry is never perturbed
    with pytest.raises(TypeError, match="Box"):
        MPPIPlanner(ToyDynamics(DISCRETE))


class BlindDynamics(ToyDynamics):
    """Every candidate predicts the same frames, as a camera that cannot see what the actions move."""

    def rollout(self, context: np.ndarray | None, actions: np.ndarray, state: Any = None) -> np.ndarray:
        return np.repeat(context[:, -1:], actions.shape[1], axis=1)


def test_mppi_reports_when_its_candidates_cannot_be_told_apart():
    seeing = MPPIPlanner(ToyDynamics(), samples=32, horizon=4, seed=0)
    seeing.plan(toy_context(), render(GOAL))
    assert seeing.last_info["cost_spread"] > 0 and 1 <= seeing.last_info["effective_samples"] < 32
    blind = MPPIPlanner(BlindDynamics(), samples=32, horizon=4, seed=0)
    blind.plan(toy_context(), render(GOAL))
    assert blind.last_info["cost_spread"] == 0
    assert blind.last_info["effective_samples"] == pytest.approx(32)  # uniform weights: the plan is the noise


def test_non_finite_predictions_are_never_chosen():
    goal = render(GOAL)  # to the right: x > 0 would be preferred, but those candidates predict NaN
    for planner in (
        MPPIPlanner(NaNDynamics(ToyDynamics()), samples=64, horizon=4, seed=0),
        CEMPlanner(NaNDynamics(ToyDynamics()), VP2_COST, samples=64, horizon=4, elites=8, seed=0),
    ):
        plan = planner.plan(toy_context(), goal)
        assert np.all(np.isfinite(plan))
        assert plan[0, 0] <= 0  # a weighted mean / best sample of candidates with x <= 0 only
        assert planner.last_info["nonfinite"] > 0 and np.isfinite(planner.last_info["best_cost"])
        assert not planner.last_info["fallback"]

    # A cost that says -inf is not a great candidate either: it is non-finite, so it is dropped.
    def cost(frames, g):
        costs = VP2_COST(frames, g)
        costs[: len(costs) // 2] = -np.inf
        return costs

    planner = CEMPlanner(ToyDynamics(), cost, samples=16, horizon=3, elites=4, iterations=1, seed=0)
    planner.plan(toy_context(), goal)
    assert np.isfinite(planner.last_info["best_cost"]) and planner.last_info["nonfinite"] == 8


def test_all_non_finite_falls_back_to_the_shifted_previous_plan_and_warns():
    goal = render(GOAL)
    for planner in (
        MPPIPlanner(ToyDynamics(), samples=16, horizon=4, seed=0),
        CEMPlanner(ToyDynamics(), samples=16, horizon=4, elites=4, execute=1, seed=0),
        CEMPlanner(ToyDynamics(DISCRETE), samples=16, horizon=4, elites=4, execute=1, seed=0),
    ):
        first = planner.plan(toy_context(), goal)
        broken = NaNDynamics(planner.dynamics, everywhere=True)
        with pytest.warns(RuntimeWarning, match="non-finite"):
            second = planner.plan(toy_context(), goal, dynamics=broken)
        np.testing.assert_array_equal(second, np.concatenate([first[1:], first[-1:]]))  # VP2's shift
        assert planner.last_info["fallback"] and planner.last_info["nonfinite"] == 16 * planner.iterations
        if isinstance(planner, MPPIPlanner):  # no spread to measure: not counted as a blind replan
            assert np.isnan(planner.last_info["cost_spread"])
        fresh = type(planner)(broken, samples=16, horizon=4, seed=0)
        with pytest.warns(RuntimeWarning, match="default action"):
            third = fresh.plan(toy_context(), goal)
        assert np.all(third == fresh.default_action)


def test_plan_arguments_are_checked():
    planner = MPPIPlanner(ToyDynamics(), samples=8, horizon=3)
    with pytest.raises(ValueError, match="context"):
        planner.plan(None, render(GOAL))  # a learned model cannot plan without frames
    with pytest.raises(ValueError, match="goal"):
        planner.plan(toy_context(), np.zeros((64, 64)))
    with pytest.raises(ValueError, match="action space"):
        planner.plan(toy_context(), render(GOAL), dynamics=ToyDynamics(spaces.Box(-1, 1, (3,), np.float32)))
    with pytest.raises(TypeError, match="not a Dynamics"):
        MPPIPlanner(object())
    with pytest.raises(ValueError, match="execute"):
        CEMPlanner(ToyDynamics(), horizon=3, execute=4)
    with pytest.raises(ValueError, match="finite gamma"):
        MPPIPlanner(ToyDynamics(), gamma=float("inf"))  # would weigh the best candidate with -inf * 0 = NaN
    assert isinstance(ToyDynamics(), Dynamics)


# ------------------------------------------------------------------------------------------------ dynamics


@pytest.fixture(scope="module")
def bundles():
    from adaworld_gym.models.bundle import tiny_random_bundle

    return {kind: tiny_random_bundle(kind) for kind in ("continuous", "discrete", "latent")}


def test_world_model_dynamics_shapes_and_determinism(bundles):
    bundle = bundles["continuous"]
    context = np.broadcast_to(bundle.initial_frames[0], (5, *bundle.initial_frames[0].shape))
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 3, 2)).astype(np.float32)
    actions[1] = actions[0]
    first = WorldModelDynamics(bundle, steps=1, generator_seed=7)
    frames = first.rollout(context, actions)
    assert frames.shape == (5, 3, 64, 64, 3) and frames.dtype == np.uint8
    assert first.action_space == bundle.action_space and first.context_frames == 2 and not first.uses_state
    # Same seed, same call sequence: same frames, whatever the chunking (up to batched-arithmetic rounding).
    again = WorldModelDynamics(bundle, steps=1, generator_seed=7, chunk_size=2)
    assert np.abs(again.rollout(context, actions).astype(int) - frames).max() <= 1
    # Common noise: equal actions give equal frames; the actions matter.
    np.testing.assert_array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], frames[2])
    # The next call draws new noise; reseed restarts the sequence.
    assert not np.array_equal(first.rollout(context, actions), frames)
    first.reseed(7)
    np.testing.assert_array_equal(first.rollout(context, actions), frames)
    with pytest.raises(ValueError, match="context"):
        first.rollout(None, actions)
    with pytest.raises(ValueError, match="out of range"):
        first.rollout(context, actions * 3)


def test_world_model_dynamics_discrete_and_latent_actions(bundles):
    context = np.broadcast_to(bundles["discrete"].initial_frames[0], (4, 2, 64, 64, 3))
    discrete = WorldModelDynamics(bundles["discrete"], generator_seed=0)
    frames = discrete.rollout(context, np.array([[0, 1], [1, 0], [2, 3], [3, 3]]))
    assert frames.shape == (4, 2, 64, 64, 3) and frames.dtype == np.uint8
    latent = WorldModelDynamics(bundles["latent"], generator_seed=0)  # LatentPassthrough: plan z directly
    assert latent.action_space.shape == (32,)
    assert latent.rollout(context[:2], np.zeros((2, 1, 32), np.float32)).shape == (2, 1, 64, 64, 3)
    # Any bundle can be planned in its latent space, bypassing its adapter.
    bypass = WorldModelDynamics(bundles["discrete"], latent_bound=2.0)
    assert bypass.action_space == spaces.Box(-2.0, 2.0, (32,), np.float32)
    with pytest.raises(ValueError, match="integers"):
        discrete.rollout(context, np.zeros((4, 2, 1), np.float32))


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_world_model_dynamics_with_a_motion_adapter_steps_frame_by_frame(kind):
    import copy

    import torch

    from adaworld_gym.models.bundle import tiny_random_bundle

    moving = tiny_random_bundle(kind, motion=True)
    context = np.broadcast_to(moving.initial_frames[0], (3, 2, 64, 64, 3))
    actions = np.stack([moving.action_space.sample() for _ in range(6)]).reshape(3, 2, -1)
    actions = actions[..., 0] if kind == "discrete" else actions
    frames = WorldModelDynamics(moving, steps=1, generator_seed=3).rollout(context, actions)
    assert frames.shape == (3, 2, 64, 64, 3)
    # With the motion term silenced the frame-by-frame loop equals the batched rollout of the same adapter.
    silent = copy.deepcopy(moving)
    with torch.no_grad():
        layer = silent.adapter.motion if kind == "discrete" else silent.adapter.net[0]
        if kind == "discrete":
            layer.weight.zero_()
        else:
            layer.weight[:, 2:] = 0.0
    plain = copy.deepcopy(silent)
    plain.adapter.motion_dim = 0  # the same weights read as an adapter without motion: the batched path
    if kind == "discrete":
        plain.adapter.motion = None
    else:
        plain.adapter.forward = lambda a, m=None, net=silent.adapter: net(a, None)
    quiet = WorldModelDynamics(silent, steps=1, generator_seed=3).rollout(context, actions)
    batched = WorldModelDynamics(plain, steps=1, generator_seed=3).rollout(context, actions)
    assert np.abs(quiet.astype(int) - batched).max() <= 1
    assert not np.array_equal(frames[:, 1], quiet[:, 1])  # the motion term changes the second frame


def test_planners_drive_a_world_model_deterministically(bundles):
    bundle = bundles["discrete"]
    context, goal = bundle.initial_frames[0], bundle.initial_frames[1, -1]

    def plan() -> np.ndarray:
        dynamics = WorldModelDynamics(bundle, generator_seed=1)
        planner = CEMPlanner(dynamics, samples=6, horizon=3, elites=2, execute=1, seed=0)
        return np.stack([planner.plan(context, goal), planner.plan(context, goal)])

    first = plan()
    assert first.shape == (2, 3) and set(first.ravel().tolist()) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(first, plan())
    mppi = MPPIPlanner(WorldModelDynamics(bundles["continuous"]), samples=6, horizon=2, seed=0)
    plan_box = mppi.plan(context, goal)
    assert plan_box.shape == (2, 2) and np.all(np.abs(plan_box) <= 1)


def test_mpc_feeds_a_world_model_the_most_recent_frames(bundles):
    class Recording(WorldModelDynamics):
        def rollout(self, context, actions, state=None):
            self.contexts.append(np.array(context[0]))
            return super().rollout(context, actions, state)

    dynamics = Recording(bundles["continuous"])  # Box(-1, 1, (2,)) like the toy env; k = 2 history frames
    dynamics.contexts = []
    planner = MPPIPlanner(dynamics, samples=3, horizon=2, seed=0)
    episode = run_mpc_episode(
        ToyEnv(), planner, None, render(GOAL), max_steps=3, state=START, record_states=True
    )
    assert [len(c) for c in dynamics.contexts] == [1, 2, 2]  # the reset frame alone, then a sliding window
    np.testing.assert_array_equal(dynamics.contexts[0][0], episode.frames[0])
    np.testing.assert_array_equal(dynamics.contexts[2], episode.frames[1:3])
    np.testing.assert_allclose(episode.states[-1], move_all(START, episode.actions[None])[0])


def test_make_dynamics_needs_exactly_one_source(bundles):
    with pytest.raises(ValueError, match="no dynamics"):
        make_dynamics()
    with pytest.raises(ValueError, match="not both"):
        make_dynamics(bundles["continuous"], ToyEnv)
    assert isinstance(make_dynamics(bundles["continuous"], steps=2), WorldModelDynamics)
    with make_dynamics(env_factory=ToyEnv, workers=0) as simulator:
        assert isinstance(simulator, SimulatorDynamics) and simulator.uses_state
        with pytest.raises(ValueError, match="state"):
            simulator.rollout(None, np.zeros((1, 1, 2), np.float32))


def test_simulator_dynamics_workers_match_in_process_and_report_errors():
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 3, 2)).astype(np.float32)
    state = np.array([20.0, 30.0])
    with SimulatorDynamics(ToyEnv, workers=0) as local:
        expected = local.rollout(None, actions, state=state)
    np.testing.assert_allclose(position_of(expected[:, -1]), move_all(state, actions), atol=0.01)
    with SimulatorDynamics(ToyEnv, workers=2) as pool:
        assert pool.action_space == BOX
        np.testing.assert_array_equal(pool.rollout(None, actions, state=state), expected)
        with pytest.raises(RuntimeError, match="simulator worker 0 failed"):
            pool.rollout(None, actions[:1], state="not a state")
        np.testing.assert_array_equal(pool.rollout(None, actions, state=state), expected)  # still usable
        with pytest.raises(ValueError, match="state cannot be sent"):  # used to close the whole pool
            pool.rollout(None, actions[:1], state=lambda: state)
        np.testing.assert_array_equal(pool.rollout(None, actions, state=state), expected)
        processes = list(pool._procs)
    assert not any(p.is_alive() for p in processes)


def test_a_dead_simulator_worker_closes_the_pool_with_a_clear_error():
    actions = np.zeros((4, 2, 2), np.float32)
    state = np.array([20.0, 30.0])
    with SimulatorDynamics(ToyEnv, workers=2) as pool:
        pool._procs[1].kill()
        pool._procs[1].join()
        with pytest.raises(RuntimeError, match="worker 1 died.*pool is closed"):
            pool.rollout(None, actions, state=state)
        with pytest.raises(RuntimeError, match="closed"):  # never a stale reply from worker 0
            pool.rollout(None, actions[:1], state=state)


def test_an_interrupted_simulator_rollout_closes_the_pool(monkeypatch):
    actions = np.zeros((4, 2, 2), np.float32)
    state = np.array([20.0, 30.0])
    with SimulatorDynamics(ToyEnv, workers=2) as pool:
        receive = pool._receive

        def interrupted(i):  # Ctrl-C while waiting for worker 0: worker 1's reply stays in its pipe
            raise KeyboardInterrupt

        monkeypatch.setattr(pool, "_receive", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pool.rollout(None, actions, state=state)
        monkeypatch.setattr(pool, "_receive", receive)
        with pytest.raises(RuntimeError, match="closed"):  # never that stale reply as the next answer
            pool.rollout(None, actions[:1], state=state)


class SlowEnv(ToyEnv):
    def step(self, action: Any):
        time.sleep(3)
        return super().step(action)


def test_an_interrupted_rollout_does_not_wait_for_busy_workers(monkeypatch):
    """Ctrl-C mid-rollout waited up to 10 s per worker, one after another, for answers nobody would read."""
    with SimulatorDynamics(SlowEnv, workers=2) as pool:

        def interrupted(i):
            raise KeyboardInterrupt

        monkeypatch.setattr(pool, "_receive", interrupted)
        processes = list(pool._procs)
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            pool.rollout(None, np.zeros((2, 2, 2), np.float32), state=np.array([20.0, 30.0]))
        assert time.monotonic() - start < 2.5  # each worker is 3-6 s from done
        assert not any(p.is_alive() for p in processes)


def test_simulator_dynamics_names_discrete_actions_out_of_range_and_odd_render_sizes():
    class BigRender(ToyEnv):
        def step(self, action: Any):
            return render(self.pos), 0.0, True, False, {}  # every candidate ends at once

        def render(self) -> np.ndarray:
            return np.zeros((2 * SIZE, 2 * SIZE, 3), np.uint8)

    with SimulatorDynamics(functools.partial(ToyEnv, DISCRETE), workers=0) as oracle:
        for bad in (5, -1):
            with pytest.raises(ValueError, match=r"discrete actions must lie in \[0, 5\)"):
                oracle.rollout(None, np.array([[1, bad]]), state=np.array([20.0, 30.0]))
    with SimulatorDynamics(functools.partial(BigRender, DISCRETE), workers=0) as oracle:
        with pytest.raises(ValueError, match=r"render\(\) gives \(128, 128, 3\) frames .* \(64, 64, 3\)"):
            oracle.rollout(None, np.array([[1, 2]]), state=np.array([20.0, 30.0]))


class NoStateEnv(ToyEnv):
    get_state = None  # type: ignore[assignment]


def test_simulator_dynamics_needs_a_restorable_env():
    with pytest.raises(TypeError, match="get_state/set_state"):
        SimulatorDynamics(NoStateEnv, workers=0)
    planner = MPPIPlanner(ToyDynamics(), samples=4, horizon=2)
    with SimulatorDynamics(ToyEnv, workers=0) as oracle, pytest.raises(TypeError, match="get_state"):
        run_mpc_episode(NoStateEnv(), planner, oracle, render(GOAL), max_steps=2)


def test_simulator_dynamics_with_discrete_actions_holds_frames_after_termination():
    class Ending(ToyEnv):
        """Terminates when the square reaches the right edge; the returned frame then shows a fresh start
        (as Procgen's does), which the oracle must not show."""

        def step(self, action: Any):
            frame, reward, _, truncated, info = super().step(action)
            if self.pos[0] >= HIGH:
                self.pos = np.array([32.0, 32.0])
                return render(self.pos), reward, True, truncated, info
            return frame, reward, False, truncated, info

    with SimulatorDynamics(functools.partial(Ending, DISCRETE), workers=0) as oracle:
        assert oracle.action_space == DISCRETE
        frames = oracle.rollout(None, np.array([[2, 2, 2, 4], [4, 4, 1, 1]]), state=np.array([44.0, 20.0]))
    positions = position_of(frames)
    np.testing.assert_allclose(
        positions[0], [[50, 20], [50, 20], [50, 20], [50, 20]], atol=0.01
    )  # ended at step 2
    np.testing.assert_allclose(positions[1], [[44, 26], [44, 32], [38, 32], [32, 32]], atol=0.01)


def move_all(state: np.ndarray, actions: np.ndarray) -> np.ndarray:
    pos = np.repeat(state[None], len(actions), axis=0)
    for t in range(actions.shape[1]):
        pos = move(pos, actions[:, t], BOX)
    return pos


def test_simulator_dynamics_with_robosuite_push_equals_stepping_the_env():
    from adaworld_gym.sims.push import RobosuitePushEnv

    actions = np.array(
        [[[1.0, 0.0, -0.5, 0.0], [0.3, -1.0, -1.0, 1.0]], [[-0.2, 0.7, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]],
        np.float32,
    )
    # The worker builds its env while this process builds the reference one (seconds each). The pool is started
    # from a thread because the reference env's GL context belongs to the thread that creates it: this one.
    pools: list[Any] = []
    starter = threading.Thread(target=lambda: pools.append(SimulatorDynamics(RobosuitePushEnv, workers=1)))
    starter.start()
    env = RobosuitePushEnv()
    starter.join()
    try:
        assert pools, "the simulator worker failed to start"
        oracle = pools[0]
        env.reset(seed=3)
        state = env.get_state()
        frames = oracle.rollout(None, actions, state=state)
        assert oracle.action_space == env.action_space
        assert frames.shape == (2, 2, 64, 64, 3) and frames.dtype == np.uint8
        for candidate, sequence in zip(frames, actions, strict=True):
            env.set_state(state)
            for frame, action in zip(candidate, sequence, strict=True):
                np.testing.assert_array_equal(frame, env.step(action)[0])
        assert not np.array_equal(frames[0, -1], frames[1, -1])
    finally:
        for pool in pools:
            pool.close()
        env.close()


def test_a_planner_seed_makes_an_episode_independent_of_the_ones_before(bundles):
    dynamics = WorldModelDynamics(bundles["continuous"], generator_seed=0)
    planner = MPPIPlanner(dynamics, samples=3, horizon=2, seed=0)

    def episode(**kwargs):
        return run_mpc_episode(
            ToyEnv(), planner, None, render(GOAL), max_steps=2, state=START, **kwargs
        ).actions

    first = episode(planner_seed=5)
    episode()  # another episode moves both random streams on
    np.testing.assert_array_equal(episode(planner_seed=5), first)
