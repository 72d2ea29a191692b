"""User paths through the envs and the PPO agent that a walk as an RL researcher found broken or unclear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from adaworld_gym.envs.world_model_env import WorldModelVectorEnv
from adaworld_gym.models.bundle import tiny_random_bundle
from agents import ppo_imagination

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_goal_image_serves_every_row_of_the_vector_env():
    bundle = tiny_random_bundle("discrete")
    goal = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rewards = []
    for given in (goal, np.stack([goal] * 3)):
        venv = WorldModelVectorEnv(bundle, num_envs=3, denoise_steps=1)
        venv.reset(seed=5, options={"goal": given})
        frames, reward, *_ = venv.step(np.array([0, 1, 2]))
        mse = ((frames.astype(np.float64) - goal) / 255.0) ** 2
        np.testing.assert_allclose(reward, -mse.mean(axis=(1, 2, 3)), rtol=1e-6)
        rewards.append(reward)
    np.testing.assert_array_equal(*rewards)
    with pytest.raises(ValueError, match="one entry per env"):
        WorldModelVectorEnv(bundle, num_envs=3).reset(options={"goal": np.stack([goal] * 2)})


def test_sb3_checker_passes_on_the_made_goal_env_unwrapped():
    env = gymnasium.make("AdaWorld/GoalWorldModel-v0", bundle=tiny_random_bundle("discrete"))
    try:
        sb3_check_env(env.unwrapped)  # as the README says: SB3 calls compute_reward on what it is handed
    finally:
        env.close()


def test_ppo_imagination_refuses_repeats_unknown_games_and_missing_start_data(tmp_path):
    for argv, message in [
        (["--seeds", "0", "0"], "--seeds: each at most once, got 0 0"),
        (["--games", "chaser", "chaser"], "--games: each at most once"),
        (["--games", "notagame"], "--games: unknown Procgen game 'notagame'"),
        (
            ["--games", "chaser", "--starts", "real", "--start-data", str(tmp_path / "none")],
            "no episode directory",
        ),
        (
            ["--games", "chaser", "--starts", "real", "--start-data", str(tmp_path / "{x}")],
            "only placeholder",
        ),
    ]:
        with pytest.raises(SystemExit, match=message):
            ppo_imagination.main(["--preset", "smoke", *argv, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_ppo_run_leaves_no_procgen_env_to_the_garbage_collector(tmp_path):
    # An unclosed Procgen env left to the garbage collector ended every run of the script with "Exception
    # ignored ... BufferError: memoryview has 1 exported buffer" (at exit: only a separate process shows it).
    argv = ["--preset", "smoke", "--games", "chaser", "--seeds", "0", "--imagination-steps", "32"]
    run = subprocess.run(
        [sys.executable, "-m", "agents.ppo_imagination", *argv, "--out", str(tmp_path / "out")],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "BufferError" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr[-2000:]


def test_a_shipped_id_given_another_games_bundle_warns(tmp_path):
    from adaworld_gym.envs.shipped import shipped_bundle_dir

    maze = shipped_bundle_dir("Procgen-maze")
    with pytest.warns(
        UserWarning, match="adapted to AdaWorld/Procgen-maze-v0, not AdaWorld/Procgen-coinrun-v0"
    ):
        gymnasium.make("AdaWorld/WorldModel-Procgen-coinrun-v0", bundle=maze).close()
    with pytest.warns(UserWarning, match="adapted to AdaWorld/Procgen-maze-v0"):
        gymnasium.make_vec(
            "AdaWorld/WorldModel-Procgen-coinrun-v0",
            num_envs=2,
            vectorization_mode="vector_entry_point",
            bundle=maze,
        ).close()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium.make("AdaWorld/WorldModel-Procgen-maze-v0", bundle=maze).close()  # its own game: silent
