"""Tests for the robosuite push env (adaworld_gym.sims.push). One env is shared: building it takes seconds."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest

import adaworld_gym  # noqa: F401  (registers AdaWorld/RobosuitePush-v0)
from adaworld_gym.planning import VP2_COST
from adaworld_gym.sims.push import (
    CAMERA_FOVY,
    CONTACT_MOVE,
    NUM_OBJECTS,
    OBS_SIZE,
    STATE_SIZE,
    TABLE_TOP,
    RobosuitePushEnv,
    ScriptedPusher,
    make_push_tasks,
    max_object_distance,
    object_positions_from_state,
    push_success,
)

ACTIONS = np.array(
    [[1.0, 0.0, -0.5, 0.0], [0.3, -1.0, -1.0, 1.0], [-0.2, 0.7, 0.0, -1.0]],
    dtype=np.float32,
)


@pytest.fixture(scope="module")
def env() -> Iterator[RobosuitePushEnv]:
    env = RobosuitePushEnv()
    yield env
    env.close()


def rollout(env: RobosuitePushEnv, actions: np.ndarray) -> list[np.ndarray]:
    return [env.step(a)[0] for a in actions]


def test_spaces_and_reset(env: RobosuitePushEnv) -> None:
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert info["object_positions"].shape == (NUM_OBJECTS, 3)
    assert info["eef_position"].shape == (3,)
    # Objects start on the table top inside VP2's placement box, pairwise apart.
    pos = env.object_positions()
    assert np.all((pos[:, 0] >= -0.1) & (pos[:, 0] <= 0.3) & (np.abs(pos[:, 1]) <= 0.15))
    assert np.all(pos[:, 2] > 0.8)
    dists = np.linalg.norm(pos[:, None, :2] - pos[None, :, :2], axis=-1)
    assert dists[np.triu_indices(NUM_OBJECTS, 1)].min() > 0.08
    # A real image: not blank, and the render matches the observation.
    assert obs.std() > 10
    np.testing.assert_array_equal(env.render(), obs)


def test_gymnasium_check_env_and_time_limit() -> None:
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make("AdaWorld/RobosuitePush-v0")
    try:
        check_env(env.unwrapped, skip_render_check=False)
        env.reset(seed=0)
        # The registered TimeLimit truncates after VP2's 15 steps; the env itself never terminates.
        flags = [env.step(env.action_space.sample())[2:4] for _ in range(15)]
        assert flags == [(False, False)] * 14 + [(False, True)]
    finally:
        env.close()


def test_sb3_check_env(env: RobosuitePushEnv) -> None:
    from stable_baselines3.common.env_checker import check_env

    check_env(env, warn=False)


def test_same_seed_same_frames(env: RobosuitePushEnv) -> None:
    first = [env.reset(seed=123)[0], *rollout(env, ACTIONS)]
    env.reset(seed=7)  # something else in between
    rollout(env, ACTIONS[:1])
    second = [env.reset(seed=123)[0], *rollout(env, ACTIONS)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(env.reset(seed=124)[0], first[0])


def test_state_round_trip(env: RobosuitePushEnv) -> None:
    env.reset(seed=5)
    rollout(env, ACTIONS[:2])
    state = env.get_state()
    assert state.shape == (STATE_SIZE,) and state.dtype == np.float64
    frame = env.render()
    expected = rollout(env, ACTIONS)
    expected_state = env.get_state()

    env.reset(seed=99)
    env.set_state(state)
    np.testing.assert_array_equal(env.render(), frame)
    for a, b in zip(rollout(env, ACTIONS), expected, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(env.get_state(), expected_state)

    # Restoring through reset(options) works the same way.
    obs, _ = env.reset(options={"state": state})
    np.testing.assert_array_equal(obs, frame)
    np.testing.assert_array_equal(object_positions_from_state(state), env.object_positions())


def test_actions_move_the_end_effector(env: RobosuitePushEnv) -> None:
    env.reset(seed=0)
    start = env.eef_position()
    env.step(np.array([0.0, 1.0, 0.0, 0.0], np.float32))
    moved = env.eef_position() - start
    assert 0.035 < moved[1] < 0.06  # one unit action moves the goal 0.05 m
    assert np.abs(moved[[0, 2]]).max() < 0.01


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.zeros(3, np.float32), "shape"),
        (np.zeros((1, 4), np.float32), "shape"),
        (np.array([0.0, np.nan, 0.0, 0.0]), "finite"),
        (np.array([0.0, 0.0, np.inf, 0.0]), "finite"),
        (np.array([0.0, 1.5, 0.0, 0.0]), r"\[-1, 1\]"),
        (np.array(["a", "b", "c", "d"]), "numeric"),
        (np.array([1j, 0, 0, 0]), "real"),
    ],
)
def test_bad_actions_raise(env: RobosuitePushEnv, action: np.ndarray, message: str) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_bad_state_raises(env: RobosuitePushEnv) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match=str(STATE_SIZE)):
        env.set_state(np.zeros(STATE_SIZE - 1))
    with pytest.raises(ValueError, match="non-finite"):
        env.set_state(np.full(STATE_SIZE, np.nan))
    with pytest.raises(ValueError, match="shape"):
        object_positions_from_state(np.zeros((2, STATE_SIZE)))


def test_goal_reward(env: RobosuitePushEnv) -> None:
    env.reset(seed=1)
    goal = env.get_state()
    _, reward, *_ = env.step(np.zeros(4, np.float32))
    assert reward == 0.0  # no goal given
    env.reset(options={"state": goal, "goal_state": goal})
    _, reward, *_ = env.step(np.zeros(4, np.float32))
    assert -0.01 < reward <= 0.0  # objects settle by at most millimetres
    env.reset(seed=2, options={"goal_state": goal})
    _, reward, *_ = env.step(np.zeros(4, np.float32))
    assert reward == pytest.approx(-max_object_distance(env.get_state(), goal))
    assert reward < -0.05


def test_bad_reset_options_name_the_problem(env: RobosuitePushEnv) -> None:
    goal = env.reset(seed=1)[1]["object_positions"]
    with pytest.raises(ValueError, match="unknown reset options \\['goal'\\]"):  # the world-model env's key
        env.reset(options={"goal": goal})
    with pytest.raises(ValueError, match="must be a dict"):
        env.reset(options="state")
    with pytest.raises(ValueError, match="options\\['goal_state'\\]"):
        env.reset(options={"goal_state": np.zeros(3)})


def test_a_fresh_push_env_refuses_to_step_before_reset() -> None:
    """Before reset() the four objects overlap at the world origin; stepping blew them apart without a word."""
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="episode_steps"):
            RobosuitePushEnv(episode_steps=bad)
    env = RobosuitePushEnv(render_mode=None)
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(4, np.float32))
        obs, _ = env.reset(seed=0)
        assert obs.shape == (OBS_SIZE, OBS_SIZE, 3) and env.render() is None  # no render mode: no render
        state = env.get_state()
        fresh = RobosuitePushEnv()
        fresh.set_state(state)  # a restore also starts an episode (the oracle's workers never reset)
        fresh.step(np.zeros(4, np.float32))
        fresh.close()
    finally:
        env.close()


def test_osc_matches_robosuite_controller(env: RobosuitePushEnv) -> None:
    """The compiled OSC law gives robosuite 1.5's own OSC_POSITION torques (with the orientation goal fixed)."""
    import mujoco  # only after the push module has chosen the GL backend

    model, data = env._model, env._data
    robot = env._scene.robots[0]
    env.reset(seed=3)
    for action in ACTIONS:
        env.step(action)
        saved = env.get_state()
        mujoco.mj_step1(model, data)
        ours = env._osc_torques(
            data.site_xpos[env._site_id] + action[:3].astype(np.float64) * env.action_scale
        )
        robot.control(np.array([*action[:3], 1.0]), policy_step=True)  # sets robosuite's goal
        env._osc.goal_ori = env._goal_ori.copy()
        robot.control(np.array([*action[:3], 1.0]), policy_step=False)
        np.testing.assert_allclose(ours, data.ctrl[env._arm_act], rtol=0, atol=1e-9)
        assert np.abs(ours).max() > 1.0  # real torques, not a trivial zero comparison
        env.set_state(saved)


def test_scripted_pusher_actions(env: RobosuitePushEnv) -> None:
    env.reset(seed=0)
    pusher = ScriptedPusher(0, np.random.default_rng(0))
    action = pusher.act(env)
    assert action.shape == (4,) and action.dtype == np.float32
    assert np.all(np.abs(action) <= 1.0)
    assert pusher.target_xy is not None and np.all(np.abs(pusher.target_xy) <= 0.35)
    with pytest.raises(ValueError, match="target_object"):
        ScriptedPusher(NUM_OBJECTS, np.random.default_rng(0))


def test_scripted_pusher_retargets_after_reaching_its_target(env: RobosuitePushEnv) -> None:
    env.reset(seed=3)
    pusher = ScriptedPusher(1, np.random.default_rng(3), retarget=True)
    pushed = set()
    for _ in range(30):
        pushed.add(pusher.target_object)
        env.step(pusher.act(env))
    assert len(pushed) >= 2  # moved on to the next object instead of resting at the first target


def test_push_collector_redraws_episodes_where_an_object_falls(
    env: RobosuitePushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adaworld_gym.data import collect

    monkeypatch.setattr(collect, "_PUSH_ENV", env)
    # An episode whose attempt 0 pushes an object off. Which one does depends on the CPU: MuJoCo's contacts round
    # differently with AVX2 and AVX-512 (episode 2 of run seed 0 on an AMX Xeon, episode 1 on an AVX2 EPYC).
    candidates = [(run_seed, index) for run_seed in range(4) for index in range(8)]
    for run_seed, index in candidates:
        seed = collect.episode_seed(run_seed, "push", index)
        frames, actions, on_table = collect._push_attempt(env, index, seed, 0, 30)
        if not on_table:
            break
    assert not on_table, f"no first attempt among {len(candidates)} episodes pushed an object off the table"
    assert frames.shape == (31, OBS_SIZE, OBS_SIZE, 3) and actions.shape == (30, 4)
    _, episode = collect._push_episode((index, seed, 30))
    assert episode.meta["attempt"] >= 1 and episode.seed == seed
    assert np.all(env.object_positions()[:, 2] > TABLE_TOP[2])  # the kept attempt ended on the table
    again, _, _ = collect._push_attempt(env, index, seed, episode.meta["attempt"], 30)
    np.testing.assert_array_equal(again, episode.frames)  # (seed, attempt) replays the episode


def gripper_pixel(env: RobosuitePushEnv) -> tuple[float, float]:
    """Where the grip site projects in the 64x64 frame (column, row from the top), by the pinhole model."""
    cam = env._camera_id
    offset = env.eef_position() - env._data.cam_xpos[cam]
    x, y, z = (
        env._data.cam_xmat[cam].reshape(3, 3).T @ offset
    )  # camera frame: x right, y up, looking along -z
    focal = 0.5 * OBS_SIZE / np.tan(np.deg2rad(CAMERA_FOVY) / 2)
    return OBS_SIZE / 2 + focal * x / -z, OBS_SIZE / 2 - focal * y / -z


def test_make_push_tasks_deterministic(env: RobosuitePushEnv) -> None:
    tasks = make_push_tasks(2, seed=11, env=env)
    again = make_push_tasks(2, seed=11, env=env)
    assert [t.target_object for t in tasks] == [0, 1]
    for a, b in zip(tasks, again, strict=True):
        np.testing.assert_array_equal(a.init_state, b.init_state)
        np.testing.assert_array_equal(a.goal_state, b.goal_state)
        np.testing.assert_array_equal(a.goal_image, b.goal_image)
    for task in tasks:
        assert task.goal_image.shape == (64, 64, 3) and task.goal_image.dtype == np.uint8
        assert push_success(task.goal_state, task.goal_state)
        assert not push_success(task.init_state, task.goal_state)
        assert max_object_distance(task.init_state, task.goal_state) > 0.08
        # Tasks start mid-demo with the gripper well in view (at home it sits on the top edge, row ~4): from
        # the home pose a goal-image planner is blind.
        env.set_state(task.init_state)
        column, row = gripper_pixel(env)
        assert 0 <= column < OBS_SIZE and OBS_SIZE / 8 <= row < OBS_SIZE, (column, row)
        # The goal image is what the env shows in the goal state, and the demo's actions lead there.
        env.set_state(task.goal_state)
        np.testing.assert_array_equal(env.render(), task.goal_image)
        env.set_state(task.init_state)
        for action in task.demo_actions:
            env.step(action)
        np.testing.assert_array_equal(env.get_state(), task.goal_state)


def test_contact_tasks_start_where_the_pusher_meets_its_object(env: RobosuitePushEnv) -> None:
    approach = make_push_tasks(2, seed=11, env=env)
    contact = make_push_tasks(2, seed=11, env=env, start="contact")
    for a, c in zip(approach, contact, strict=True):
        # The same demo (layout, target, goal), entered later: its actions from the contact start still lead
        # exactly to the goal, and the target object has not yet moved there but moves on the next action.
        assert c.target_object == a.target_object
        np.testing.assert_array_equal(c.goal_state, a.goal_state)
        np.testing.assert_array_equal(c.goal_image, a.goal_image)
        assert 0 < len(c.demo_actions) < len(a.demo_actions)
        np.testing.assert_array_equal(c.demo_actions, a.demo_actions[-len(c.demo_actions) :])
        assert max_object_distance(c.init_state, c.goal_state) > 0.08
        first = object_positions_from_state(a.init_state)[a.target_object]
        assert (
            np.linalg.norm(object_positions_from_state(c.init_state)[c.target_object] - first) <= CONTACT_MOVE
        )
        env.set_state(c.init_state)
        env.step(c.demo_actions[0])
        assert np.linalg.norm(env.object_positions()[c.target_object] - first) > CONTACT_MOVE
        for action in c.demo_actions[1:]:
            env.step(action)
        np.testing.assert_array_equal(env.get_state(), c.goal_state)
    with pytest.raises(ValueError, match="start must be one of"):
        make_push_tasks(1, seed=0, env=env, start="home")


def test_vp2_cost_prefers_the_demo_at_the_benchmark_horizon(env: RobosuitePushEnv) -> None:
    """The cpu preset's horizon must be long enough for the VP2 cost to tell pushing from hiding the arm.

    Measured on make_push_tasks(3, seed=0): summed over 5 frames, lifting the arm out of view costs as little
    as the demo or less (the object only starts to move in frames 5-7), so at horizon 5 even the simulator
    oracle prefers to hide the arm; over 10 frames the demo costs 14-42% less than lifting.
    """
    from benchmarks.vp2_push import PRESETS

    horizon = PRESETS["cpu"]["horizon"]
    task = make_push_tasks(1, seed=0, env=env)[0]
    plans = {
        "demo": task.demo_actions,
        "still": np.zeros((horizon, 4), np.float32),
        "lift": np.tile(np.float32([0, 0, 1, 0]), (horizon, 1)),
    }
    costs = {}
    for name, plan in plans.items():
        plan = np.concatenate([plan, np.zeros((max(horizon - len(plan), 0), 4), np.float32)])[:horizon]
        env.set_state(task.init_state)
        frames = np.stack([env.step(action)[0] for action in plan])
        costs[name] = VP2_COST(frames[None], task.goal_image)[0]
    assert costs["demo"] < min(costs["still"], costs["lift"]), costs


def test_stepping_a_closed_push_env_names_the_problem() -> None:
    env = RobosuitePushEnv()
    env.reset(seed=0)
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.step(np.zeros(4, np.float32))


def test_reset_and_render_of_a_closed_push_env_name_the_problem() -> None:
    env = RobosuitePushEnv()
    env.reset(seed=0)
    env.set_state(env.get_state())  # the frame is rendered lazily, after the close
    env.close()
    env.close()  # twice is fine
    for call in (lambda: env.reset(seed=0), env.render):
        with pytest.raises(RuntimeError, match="closed"):  # was AttributeError on the freed renderer
            call()


def test_simulator_candidates_of_a_push_env_with_an_episode_limit_are_not_frozen() -> None:
    """The step count carried across the oracle's restores truncated (and froze) every later candidate."""
    import functools

    from adaworld_gym.planning import SimulatorDynamics

    make = functools.partial(RobosuitePushEnv, episode_steps=3)
    real = make()
    try:
        real.reset(seed=0)
        state = real.get_state()
        actions = np.tile(np.array([0.5, 0.0, 0.0, 0.0], np.float32), (3, 2, 1))  # 3 candidates, 2 steps
        with SimulatorDynamics(make, workers=0) as oracle:
            frames = oracle.rollout(None, actions, state)
        real.set_state(state)
        truth = np.stack([real.step(a)[0] for a in actions[0]])
        for candidate in frames:  # the same actions from the same state: the same frames, every time
            np.testing.assert_array_equal(candidate, truth)
    finally:
        real.close()
