import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from synthetic_data import run_in_fresh_interpreter

import adaworld_gym  # noqa: F401  (registers the envs)
from adaworld_gym.sims.games import ADAPTATION_GAMES, PRETRAIN_GAMES, PROCGEN_GAMES, TEST_LEVELS
from adaworld_gym.sims.procgen import ProcgenEnv


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


def test_procgen_reset_takes_a_none_state_as_no_state():
    from adaworld_gym.sims.procgen import ProcgenEnv

    env, fresh = ProcgenEnv("coinrun"), ProcgenEnv("coinrun")
    try:
        # before: TypeError from int(None) deep in the state check, for a fresh env and a used one alike
        obs, info = fresh.reset(seed=3, options={"state": None, "level": None})
        env.reset(seed=0)
        again, info2 = env.reset(seed=3, options={"state": None})
        expected, info3 = ProcgenEnv("coinrun").reset(seed=3)
        assert info == info2 == info3
        np.testing.assert_array_equal(obs, expected)
        np.testing.assert_array_equal(again, expected)
    finally:
        env.close()
        fresh.close()


@pytest.mark.usefixtures("one_thread")
def test_procgen_set_state_names_a_state_of_the_wrong_type():
    env = gymnasium.make("AdaWorld/Procgen-coinrun-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="state must be the bytes or uint8 array get_state"):
        env.unwrapped.set_state("garbage")  # was "invalid literal for int() with base 10"
    env.close()


def test_set_state_refuses_a_state_of_another_level_range_or_mode_and_leaves_the_env_as_it_was():
    test_env = ProcgenEnv("maze", levels="test")
    test_env.reset(seed=0)
    test_state = test_env.get_state()
    train = ProcgenEnv("maze", levels="train")
    _, info = train.reset(seed=0)
    frame, own = train.render(), train.get_state()
    with pytest.raises(ValueError, match=r"level 9\d{3}, outside this env's levels \[0, 9000\)"):
        train.set_state(test_state)
    assert train.level == info["level"]
    np.testing.assert_array_equal(train.render(), frame)
    np.testing.assert_array_equal(train.get_state(), own)  # untouched
    with pytest.raises(ValueError, match="outside this env's levels"):
        train.reset(seed=1, options={"state": test_state})
    train.set_state(own)  # a state of its own range still restores
    assert train.level == info["level"]

    memory = ProcgenEnv("jumper", distribution_mode="memory")
    memory.reset(seed=0)
    easy = ProcgenEnv("jumper", distribution_mode="easy")
    easy.reset(seed=0)
    with pytest.raises(ValueError, match="a state of distribution_mode 'memory', but this env plays 'easy'"):
        easy.set_state(memory.get_state())
    with pytest.raises(ValueError, match="a state of distribution_mode 'easy', but this env plays 'memory'"):
        memory.reset(options={"state": easy.get_state()})
    plain = ProcgenEnv("jumper", use_backgrounds=False)
    plain.reset(seed=0)
    with pytest.raises(
        ValueError, match="other Procgen options \\(use_backgrounds=1; this env has use_backgrounds=0"
    ):
        plain.set_state(easy.get_state())


def test_cut_damaged_or_footerless_states_are_refused_instead_of_ending_the_process():
    done = run_in_fresh_interpreter(
        """
        import numpy as np
        from adaworld_gym.sims.procgen import ProcgenEnv

        env = ProcgenEnv("coinrun")
        env.reset(seed=0)
        state = env.get_state()
        flipped = state.copy()
        flipped[len(state) // 3] ^= 1
        bad = {
            "half": state[: len(state) // 2],
            "one byte short": state[:-1],
            "cut inside": np.concatenate([state[:100], state[101:]]),
            "padded": np.concatenate([state, np.zeros(10, np.uint8)]),
            "flipped": flipped,
            "footerless": np.frombuffer(env._env.callmethod("get_state")[0], np.uint8),
        }
        for name, value in bad.items():
            try:
                env.set_state(value)
                print(name, "ACCEPTED")
            except ValueError as e:
                print(name, "REFUSED", e)
        env.set_state(state)
        env.step(4)
        print("STILL RUNNING")
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]  # before: fassert 'offset + size <= length'
    lines = dict(line.split(" REFUSED ", 1) for line in done.stdout.splitlines() if " REFUSED " in line)
    assert set(lines) == {"half", "one byte short", "cut inside", "padded", "flipped", "footerless"}
    assert "truncated or padded" in lines["cut inside"] and "CRC32" in lines["flipped"]
    assert "not a state from ProcgenEnv.get_state" in lines["footerless"]
    assert "STILL RUNNING" in done.stdout


def test_a_time_out_after_a_restore_is_still_a_truncation():
    env = ProcgenEnv("maze")  # standing still in maze ends only at its 500-step time-out
    env.reset(seed=0)
    for _ in range(450):
        env.step(4)
    state = env.get_state()
    for restore in ("set_state", "reset"):
        other = ProcgenEnv("maze")
        other.reset(seed=5)
        if restore == "set_state":
            other.set_state(state)
        else:
            other.reset(seed=5, options={"state": state})
        np.testing.assert_array_equal(other.get_state(), state)
        ends = [other.step(4)[2:4] for _ in range(50)]
        assert ends[-1] == (False, True), restore  # before: terminated=True, 50 steps "after the restore"
        assert not any(any(e) for e in ends[:-1])
