import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import adaworld_gym  # noqa: F401  (registers the envs)
from adaworld_gym.sims.games import ADAPTATION_GAMES, PRETRAIN_GAMES, PROCGEN_GAMES, TEST_LEVELS


def test_all_sixteen_games_are_registered():
    assert len(PROCGEN_GAMES) == 16
    for game in PROCGEN_GAMES:
        assert f"AdaWorld/Procgen-{game}-v0" in gymnasium.registry


def test_split_keeps_planning_games_in_pretraining():
    assert len(ADAPTATION_GAMES) >= 4
    assert {"heist", "jumper", "maze", "caveflyer"} <= set(PRETRAIN_GAMES)
    assert not set(ADAPTATION_GAMES) & set(PRETRAIN_GAMES)


@pytest.mark.parametrize("game", ["heist", "coinrun"])
def test_checkers_pass(game):
    env = gymnasium.make(f"AdaWorld/Procgen-{game}-v0")
    check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(env.unwrapped)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gymnasium.spaces.Discrete(15)


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for a in actions:
        frames.append(env.step(a)[0])
    return np.stack(frames)


def test_same_seed_same_frames():
    actions = np.random.default_rng(0).integers(0, 15, 40)
    a = _rollout(gymnasium.make("AdaWorld/Procgen-bigfish-v0"), 7, actions)
    b = _rollout(gymnasium.make("AdaWorld/Procgen-bigfish-v0"), 7, actions)
    c = _rollout(gymnasium.make("AdaWorld/Procgen-bigfish-v0"), 8, actions)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_state_round_trip_is_exact():
    env = gymnasium.make("AdaWorld/Procgen-starpilot-v0").unwrapped
    env.reset(seed=3)
    for a in range(10):
        env.step(a)
    state, frame = env.get_state(), env.render().copy()
    first = [env.step(a % 15)[0] for a in range(30)]
    env.set_state(state)
    np.testing.assert_array_equal(env.render(), frame)
    second = [env.step(a % 15)[0] for a in range(30)]
    np.testing.assert_array_equal(np.stack(first), np.stack(second))


def test_level_ranges():
    env = gymnasium.make("AdaWorld/Procgen-maze-v0", levels="test", distribution_mode="hard").unwrapped
    for seed in range(5):
        _, info = env.reset(seed=seed)
        assert TEST_LEVELS[0] <= info["level"] < TEST_LEVELS[1]
    _, info = env.reset(options={"level": 9042})
    assert info["level"] == 9042
    with pytest.raises(ValueError, match=r"levels \[9000, 10000\)"):  # a training level in a test env
        env.reset(options={"level": 42})


def test_restores_check_the_game_and_report_the_restored_level():
    coinrun = gymnasium.make("AdaWorld/Procgen-coinrun-v0").unwrapped
    _, first = coinrun.reset(seed=0)
    state = coinrun.get_state()
    _, other = coinrun.reset(seed=3)
    assert other["level"] != first["level"]
    coinrun.set_state(state)
    assert coinrun.step(4)[4]["level"] == first["level"]  # the restored level, not the one reset drew
    _, info = coinrun.reset(seed=3, options={"state": state})
    assert info["level"] == first["level"]
    maze = gymnasium.make("AdaWorld/Procgen-maze-v0").unwrapped
    maze.reset(seed=0)
    with pytest.raises(
        ValueError, match="not a state of Procgen maze"
    ):  # Procgen itself would kill the process
        maze.set_state(state)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"game": "pong"}, "unknown Procgen game"),
        ({"game": "maze", "distribution_mode": "nightmare"}, "distribution_mode"),
        ({"game": "maze", "levels": (5, 2)}, "levels"),
    ],
)
def test_bad_construction(kwargs, match):
    from adaworld_gym.sims.procgen import ProcgenEnv

    with pytest.raises(ValueError, match=match):
        ProcgenEnv(**kwargs)


def test_unknown_game_id_fails_clearly():
    with pytest.raises(gymnasium.error.Error):
        gymnasium.make("AdaWorld/Procgen-pong-v0")


@pytest.mark.parametrize(
    "action, match",
    [
        (15, "out of range"),
        (-1, "out of range"),
        (1.5, "integer"),
        (np.array([1, 2]), "single"),
        (float("nan"), "integer"),
    ],
)
def test_bad_actions(action, match):
    env = gymnasium.make("AdaWorld/Procgen-heist-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_step_before_reset():
    env = gymnasium.make("AdaWorld/Procgen-heist-v0").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_modes_procgen_lacks_for_a_game_are_refused_before_it_kills_the_process():
    from adaworld_gym.sims.procgen import ProcgenEnv

    with pytest.raises(ValueError, match="no 'extreme' mode for bigfish"):
        ProcgenEnv("bigfish", distribution_mode="extreme")
    with pytest.raises(ValueError, match="no 'memory' mode for coinrun"):
        ProcgenEnv("coinrun", distribution_mode="memory")
    with pytest.raises(ValueError, match="unknown distribution_mode 'exploration'"):
        ProcgenEnv("coinrun", distribution_mode="exploration")
    assert ProcgenEnv("jumper", distribution_mode="memory").timeout == 2000


def test_a_timed_out_episode_is_truncated_and_a_death_terminated():
    from adaworld_gym.sims.procgen import ProcgenEnv

    maze = ProcgenEnv("maze")  # no way to die: standing still ends only at Procgen's 500-step limit
    maze.reset(seed=0)
    ends = [maze.step(4)[2:4] for _ in range(maze.timeout)]
    assert ends[-1] == (False, True) and not any(any(e) for e in ends[:-1])
    chaser = ProcgenEnv("chaser")  # standing still, the chaser is caught long before its time limit
    chaser.reset(seed=0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = chaser.step(4)
        steps += 1
    assert terminated and not truncated and steps < chaser.timeout and not info["level_complete"]


def test_editing_an_observation_does_not_change_the_render():
    env = gymnasium.make("AdaWorld/Procgen-heist-v0").unwrapped
    obs, _ = env.reset(seed=0)
    frame = env.render()
    obs[:] = 0
    np.testing.assert_array_equal(env.render(), frame)
    obs = env.step(4)[0]
    frame = env.render()
    obs[:] = 0
    np.testing.assert_array_equal(env.render(), frame)
