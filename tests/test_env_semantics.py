"""The envs against Gymnasium 1.x and SB3 semantics (tiny bundles, CPU)."""

from __future__ import annotations

import copy
import pickle

import gymnasium
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

import adaworld_gym  # noqa: F401  (registers the ids)
from adaworld_gym.envs import GoalWorldModelEnv, SB3VecEnvAdapter, WorldModelEnv, WorldModelVectorEnv
from adaworld_gym.models.bundle import AdaWorldBundle, tiny_random_bundle

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle() -> AdaWorldBundle:
    return tiny_random_bundle("discrete")


def test_vector_reset_mask_resets_only_the_masked_rows(bundle):
    venv = WorldModelVectorEnv(bundle, num_envs=3, denoise_steps=1, max_episode_steps=1)
    venv.reset(seed=0)
    stepped = venv.step(np.zeros(3, np.int64))[0]  # every row truncated: autoreset on the next step
    mask = np.array([False, True, False])
    options = {"reset_mask": mask}
    obs, info = venv.reset(seed=10, options=options)
    assert info == {} and list(options) == ["reset_mask"]  # the caller's dict is left for vector wrappers
    np.testing.assert_array_equal(obs[[0, 2]], stepped[[0, 2]])  # unmasked rows keep their frames
    np.testing.assert_array_equal(obs[1], WorldModelEnv(bundle).reset(seed=11)[0])  # row i gets seed + i
    # Row 1 runs its new episode; rows 0 and 2 still autoreset (reward 0, not done).
    _, _, terminated, truncated, _ = venv.step(np.zeros(3, np.int64))
    assert truncated.tolist() == [False, True, False] and not terminated.any() and venv._core.elapsed[1] == 1
    for bad, error in [
        ([True, False, True], TypeError),
        (np.array([1, 0, 1]), TypeError),
        (np.array([True, False]), ValueError),
        (np.zeros(3, bool), ValueError),
    ]:
        with pytest.raises(error, match="reset_mask"):
            venv.reset(options={"reset_mask": bad})

    # Gymnasium's vector RecordEpisodeStatistics sees the mask too and restarts only that row's statistics.
    stats = gymnasium.wrappers.vector.RecordEpisodeStatistics(
        WorldModelVectorEnv(bundle, num_envs=2, denoise_steps=1, max_episode_steps=3)
    )
    stats.reset(seed=0)
    stats.step(np.zeros(2, np.int64))
    stats.reset(options={"reset_mask": np.array([True, False])})
    assert stats.episode_lengths.tolist() == [0, 1]


def test_a_rejected_vector_step_resets_no_row(bundle):
    venv = WorldModelVectorEnv(bundle, num_envs=2, denoise_steps=1, max_episode_steps=1)
    venv.reset(seed=0)
    venv.step(np.zeros(2, np.int64))  # both truncated
    venv.reset(options={"reset_mask": np.array([True, False])})  # row 1 still waits for its autoreset
    frames, rngs = venv._core.windows.copy(), [r.bit_generator.state for r in venv._rngs]
    with pytest.raises(ValueError, match="out of range"):
        venv.step(np.array([9, 0]))
    np.testing.assert_array_equal(venv._core.windows, frames)
    assert [r.bit_generator.state for r in venv._rngs] == rngs and venv._autoreset.tolist() == [False, True]
    # The valid retry does the autoreset the rejected call must not have done: row 1's new first frame.
    obs, rewards, *_ = venv.step(np.array([0, 0]))
    np.testing.assert_array_equal(obs[1], venv._core.windows[1, -1])
    assert rewards[1] == 0.0 and venv._core.elapsed[1] == 0


def test_sb3_adapter_matches_dummy_vec_env_with_contiguous_observations(bundle):
    def make() -> WorldModelEnv:
        return WorldModelEnv(bundle, denoise_steps=1, max_episode_steps=2)

    dummy = DummyVecEnv([make])
    ours = SB3VecEnvAdapter(WorldModelVectorEnv(bundle, num_envs=1, denoise_steps=1, max_episode_steps=2))
    assert dummy.seed(5) == ours.seed(5)
    obs = ours.reset()
    np.testing.assert_array_equal(obs, dummy.reset())
    for t in range(4):
        action = np.array([t % 4])
        want, got = dummy.step(action), ours.step(action)
        assert got[0].flags.c_contiguous and got[0].dtype == np.uint8 and got[0].shape == (1, 64, 64, 3)
        np.testing.assert_array_equal(got[0], want[0])  # after a done: the new episode's first frame
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])
        if want[2][0]:
            assert got[3][0]["TimeLimit.truncated"] is want[3][0]["TimeLimit.truncated"]
            terminal = got[3][0]["terminal_observation"]
            np.testing.assert_array_equal(terminal, want[3][0]["terminal_observation"])
            assert not np.shares_memory(terminal, got[0])


def test_registered_world_model_ids_support_rgb_array_list(bundle, tmp_path):
    from gymnasium.envs.registration import load_env_creator

    ids = [i for i in gymnasium.registry if i.startswith("AdaWorld/WorldModel") or "GoalWorldModel" in i]
    for env_id in ids:  # gymnasium.make reads render modes from the entry point
        creator = load_env_creator(gymnasium.spec(env_id).entry_point)
        assert creator.metadata["render_modes"] == ["rgb_array", "human"], env_id
    bundle.save_pretrained(tmp_path / "b")
    env = gymnasium.make(
        "AdaWorld/WorldModel-v0", bundle=tmp_path / "b", denoise_steps=1, render_mode="rgb_array_list"
    )
    assert isinstance(env, gymnasium.wrappers.RenderCollection) and env.unwrapped.render_mode == "rgb_array"
    first, _ = env.reset(seed=0)
    last = env.step(1)[0]
    frames = env.render()
    assert len(frames) == 2
    np.testing.assert_array_equal(frames[0], first)
    np.testing.assert_array_equal(frames[1], last)


def test_a_world_model_env_with_a_window_can_be_pickled_and_copied(bundle, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    pytest.importorskip("pygame")
    env = WorldModelEnv(bundle, denoise_steps=1, render_mode="human")
    env.reset(seed=0)
    twin, thawed = copy.deepcopy(env), pickle.loads(pickle.dumps(env))
    assert env._window is not None and twin._window is None and thawed._window is None
    frame = env.step(2)[0]
    np.testing.assert_array_equal(twin.step(2)[0], frame)  # same state, same noise stream
    np.testing.assert_array_equal(thawed.step(2)[0], frame)
    assert twin._window is not None  # the copy opened its own window
    for e in (env, twin, thawed):
        e.close()


def test_procgen_env_renders_a_copy_and_refuses_pickling_clearly():
    from adaworld_gym.sims.procgen import ProcgenEnv

    env = ProcgenEnv("heist")
    obs, _ = env.reset(seed=0)
    assert not np.shares_memory(env.render(), obs)
    for copier in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match="get_state"):
            copier(env)
    env.close()


def test_procgen_env_refuses_unknown_or_malformed_reset_options():
    """A typo such as "levle" used to give a random level without a word."""
    from adaworld_gym.sims.procgen import ProcgenEnv

    env = ProcgenEnv("maze", levels="test")
    low = env.levels[0]
    with pytest.raises(ValueError, match="unknown reset options \\['levle'\\]"):
        env.reset(options={"levle": low})
    with pytest.raises(ValueError, match="must be a dict"):
        env.reset(options="level")
    with pytest.raises(ValueError, match="options\\['level'\\]"):
        env.reset(options={"level": True})  # a bool is not a level
    assert env.reset(options={"level": np.int64(low)})[1]["level"] == low
    env.close()


def test_push_env_refuses_pickling_clearly():
    from adaworld_gym.sims.push import RobosuitePushEnv

    env = RobosuitePushEnv(render_size=64)
    for copier in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match="get_state"):
            copier(env)
    env.close()


def test_envs_of_one_bundle_do_not_share_an_action_space_rng():
    # A Box adapter hands out one space object: env_b.action_space.seed() reseeded env_a's samples too.
    continuous = tiny_random_bundle("continuous")
    env_a, env_b = WorldModelEnv(continuous), WorldModelEnv(continuous)
    venv = WorldModelVectorEnv(continuous, num_envs=2)
    assert env_a.action_space == continuous.action_space == venv.single_action_space
    env_a.action_space.seed(0)
    env_b.action_space.seed(0)
    venv.single_action_space.seed(1)
    first = env_a.action_space.sample()
    np.testing.assert_array_equal(env_b.action_space.sample(), first)
    continuous.action_space.seed(2)
    # Still their own streams: both seeded 0 and drawn from once, their second samples agree.
    np.testing.assert_array_equal(env_a.action_space.sample(), env_b.action_space.sample())
    env_a.action_space.seed(0)
    np.testing.assert_array_equal(env_a.action_space.sample(), first)


def test_vector_env_render_before_reset_raises_like_the_single_env(bundle):
    venv = WorldModelVectorEnv(bundle, num_envs=2, denoise_steps=1, render_mode="rgb_array")
    with pytest.raises(RuntimeError, match="reset"):  # it returned black frames as if they were real ones
        venv.render()
    with pytest.raises(RuntimeError, match="reset"):
        WorldModelEnv(bundle, render_mode="rgb_array").render()
    obs, _ = venv.reset(seed=0)
    np.testing.assert_array_equal(np.stack(venv.render()), obs)


def test_envs_take_numpy_integer_settings(bundle):
    env = WorldModelEnv(bundle, denoise_steps=np.int64(1), max_episode_steps=np.int64(1))
    env.reset(seed=0)
    assert env.step(0)[3] is True
    venv = WorldModelVectorEnv(bundle, num_envs=2, denoise_steps=np.int32(1), max_episode_steps=np.int64(1))
    venv.reset(seed=0)
    assert venv.step(np.zeros(2, np.int64))[3].all()
    with pytest.raises(ValueError, match="denoise_steps"):
        WorldModelEnv(bundle, denoise_steps=True)


def test_sb3_adapter_tells_video_recorders_the_frame_rate(bundle):
    venv = WorldModelVectorEnv(bundle, num_envs=2, denoise_steps=1, render_mode="rgb_array")
    adapter = SB3VecEnvAdapter(venv)
    # SB3's VecVideoRecorder reads metadata["render_fps"] (default 30: videos played at twice the speed).
    assert adapter.metadata["render_fps"] == venv.metadata["render_fps"] == 15
    assert "rgb_array" in adapter.metadata["render_modes"]


def test_a_given_goal_survives_autoresets_in_every_vectoriser(bundle):
    # Gymnasium's vector envs and SB3's DummyVecEnv autoreset with a bare reset(): the single envs dropped the
    # goal there (GoalWorldModelEnv drew a random one) while WorldModelVectorEnv kept it.
    goal = np.full((64, 64, 3), 77, np.uint8)
    kwargs = {"bundle": bundle, "num_envs": 2, "denoise_steps": 1, "max_episode_steps": 1}
    goal_sync = gymnasium.make_vec("AdaWorld/GoalWorldModel-v0", vectorization_mode="sync", **kwargs)
    goal_sync.reset(seed=0, options={"goal": goal})
    plain = [
        gymnasium.make_vec("AdaWorld/WorldModel-v0", vectorization_mode=mode, **kwargs)
        for mode in ("sync", "vector_entry_point")
    ]
    for venv in plain:
        venv.reset(seed=0, options={"goal": goal} if venv is plain[0] else {"goal": np.stack([goal, goal])})
    for t in range(5):  # truncated, autoreset (reward 0), truncated, ...
        obs, rewards, *_ = goal_sync.step(np.zeros(2, np.int64))
        np.testing.assert_array_equal(obs["desired_goal"], np.stack([goal, goal]))  # was a random goal
        for venv in plain:  # the sync env's goal reward turned into the (absent) reward head's 0
            rewards = venv.step(np.zeros(2, np.int64))[1]
            assert (rewards < 0).all() if t % 2 == 0 else (rewards == 0).all(), (t, rewards)

    dummy = DummyVecEnv([lambda: WorldModelEnv(bundle, denoise_steps=1, max_episode_steps=1)])
    dummy.set_options({"goal": goal})
    dummy.reset()
    assert dummy.step(np.zeros(1, np.int64))[2].all()  # done: reset within the step, without options
    assert dummy.step(np.zeros(1, np.int64))[1][0] < 0  # the goal still pays

    # {"goal": None} clears it: the goal env draws goals again, the plain env has none.
    env = GoalWorldModelEnv(bundle, denoise_steps=1)
    env.reset(seed=0, options={"goal": goal})
    np.testing.assert_array_equal(env.reset(seed=1)[0]["desired_goal"], goal)
    drawn = env.reset(seed=1, options={"goal": None})[0]["desired_goal"]
    assert any(np.array_equal(drawn, c[-1]) for c in bundle.initial_frames)
    plain = WorldModelEnv(bundle, denoise_steps=1)
    plain.reset(seed=0, options={"goal": goal})
    plain.reset(options={"goal": None})
    assert plain._core.goals[0] is None
    venv = WorldModelVectorEnv(bundle, num_envs=2, denoise_steps=1)
    venv.reset(seed=0, options={"goal": np.stack([goal, goal])})
    venv.reset(options={"goal": None})
    assert venv._core.goals == [None, None]


def test_sb3_adapter_get_attr_gives_each_env_its_single_space(bundle):
    venv = WorldModelVectorEnv(bundle, num_envs=3, denoise_steps=1)
    adapter = SB3VecEnvAdapter(venv)
    dummy = DummyVecEnv([lambda: WorldModelEnv(bundle, denoise_steps=1)] * 3)
    for name in ("action_space", "observation_space"):  # were the batched MultiDiscrete / (3, 64, 64, 3) Box
        assert adapter.get_attr(name) == dummy.get_attr(name) == [getattr(adapter, name)] * 3
        assert adapter.get_attr(name, indices=[1]) == [getattr(adapter, name)]
    assert adapter.get_attr("render_mode") == [None] * 3


def test_compute_reward_through_gymnasium_make_is_on_the_unwrapped_env(bundle):
    # Gymnasium 1.x wrappers do not forward attributes (documented); SB3 reaches it with get_wrapper_attr.
    env = gymnasium.make("AdaWorld/GoalWorldModel-v0", bundle=bundle, denoise_steps=1)
    assert not hasattr(env, "compute_reward")
    obs, _ = env.reset(seed=0)
    obs, reward, *_ = env.step(0)
    for compute in (env.unwrapped.compute_reward, env.get_wrapper_attr("compute_reward")):
        assert compute(obs["achieved_goal"], obs["desired_goal"], {}) == pytest.approx(reward)
    dummy = DummyVecEnv([lambda: env])
    assert dummy.env_method("compute_reward", obs["achieved_goal"], obs["desired_goal"], {})[0] == reward


def test_envs_serve_the_frame_size_of_their_bundle(tmp_path):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    bundle = tiny_random_bundle("discrete", frame_size=32, reward_head=True)
    bundle.save_pretrained(tmp_path / "b32")
    env = gymnasium.make("AdaWorld/WorldModel-v0", bundle=str(tmp_path / "b32"), denoise_steps=1)
    assert env.observation_space.shape == (32, 32, 3)
    first, _ = env.reset(seed=0)
    frame = env.step(1)[0]
    assert first.shape == frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(WorldModelEnv(bundle, denoise_steps=1), warn=False)

    venv = WorldModelVectorEnv(bundle, num_envs=2, denoise_steps=1)
    assert venv.single_observation_space.shape == (32, 32, 3)
    obs, _ = venv.reset(seed=[0, 1])
    np.testing.assert_array_equal(obs[0], first)
    assert venv.step(np.array([1, 0]))[0].shape == (2, 32, 32, 3)

    goal_env = GoalWorldModelEnv(bundle, denoise_steps=1)
    obs, _ = goal_env.reset(seed=0, options={"goal": np.zeros((32, 32, 3), np.uint8)})
    assert {key: value.shape for key, value in obs.items()} == dict.fromkeys(obs, (32, 32, 3))
    # Start frames and goals of another size are refused with the size the env wants.
    with pytest.raises(ValueError, match=r"uint8 \[32, 32, 3\], got uint8 \(64, 64, 3\)"):
        goal_env.reset(options={"goal": np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"uint8 \[h, 32, 32, 3\]"):
        env.reset(options={"frames": np.zeros((1, 64, 64, 3), np.uint8)})


@pytest.mark.parametrize("seed", [[5, -1], [3, 1.5], 1.5, "ab", np.array(2.0)])
def test_a_bad_seed_in_any_row_resets_no_row(bundle, seed):
    # [5, -1] reset row 0 with seed 5, then Gymnasium's seeding refused row 1's -1: half a reset. 1.5 raised
    # "'float' object is not iterable".
    venv = WorldModelVectorEnv(bundle, num_envs=2, denoise_steps=1)
    venv.reset(seed=0)
    venv.step(np.zeros(2, np.int64))
    windows, elapsed = venv._core.windows.copy(), venv._core.elapsed.copy()
    rngs = [rng.bit_generator.state for rng in venv._rngs]
    with pytest.raises(ValueError, match="seed"):
        venv.reset(seed=seed)
    np.testing.assert_array_equal(venv._core.windows, windows)
    np.testing.assert_array_equal(venv._core.elapsed, elapsed)  # row 0 was back at step 0
    assert [rng.bit_generator.state for rng in venv._rngs] == rngs
    # Valid seeds still work as before: numpy integers, None entries, s + i.
    obs, _ = venv.reset(seed=[np.int64(4), None])
    np.testing.assert_array_equal(obs[0], venv.reset(seed=4)[0][0])


def test_sb3_adapter_refuses_a_vector_env_it_cannot_drive(bundle):
    # A SyncVectorEnv (make_vec's "sync" mode) or a wrapped WorldModelVectorEnv was accepted and failed at the
    # first reset with "... has no attribute '_core'".
    kwargs = {"bundle": bundle, "num_envs": 2, "denoise_steps": 1}
    sync = gymnasium.make_vec("AdaWorld/WorldModel-v0", vectorization_mode="sync", **kwargs)
    ours = gymnasium.make_vec("AdaWorld/WorldModel-v0", vectorization_mode="vector_entry_point", **kwargs)
    for venv in (sync, gymnasium.wrappers.vector.RecordEpisodeStatistics(ours)):
        with pytest.raises(TypeError, match="takes a WorldModelVectorEnv itself"):
            SB3VecEnvAdapter(venv)
    assert SB3VecEnvAdapter(ours).reset().shape == (2, 64, 64, 3)
