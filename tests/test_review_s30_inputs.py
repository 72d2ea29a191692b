"""Bad inputs found by session 30's review: each is refused naming the problem, not deep in numpy or torch."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import save_tiny_models

from adaworld_gym.cli import main as cli_main
from adaworld_gym.data.episodes import UMASK
from adaworld_gym.envs.world_model_env import GoalWorldModelEnv, goal_reward
from adaworld_gym.models.bundle import tiny_random_bundle
from adaworld_gym.planning.dynamics import WorldModelDynamics
from adaworld_gym.planning.planners import CEMPlanner, MPPIPlanner

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def box_dynamics():
    return WorldModelDynamics(tiny_random_bundle("continuous"), steps=1)


def test_planners_refuse_goals_with_nan_or_pixels_off_the_0_255_scale(box_dynamics):
    planner = MPPIPlanner(box_dynamics, samples=4, horizon=2)
    context = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="goal contains NaN or inf"):
        planner.plan(context, np.full((64, 64, 3), np.nan))
    with pytest.raises(ValueError, match=r"goal pixels must lie in \[0, 255\], got -1000"):
        planner.plan(context, np.zeros((64, 64, 3), np.int64) - 1000)
    assert planner.plan(context, np.full((64, 64, 3), 255.0)).shape == (2, 2)  # in range: planned


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


def test_cem_over_discrete_actions_refuses_an_init_std():
    dynamics = WorldModelDynamics(tiny_random_bundle("discrete"), steps=1)
    with pytest.raises(ValueError, match="init_std applies to Box action spaces"):
        CEMPlanner(dynamics, samples=4, elites=2, horizon=2, init_std=0.5)


def test_goal_rewards_check_their_images():
    frame = np.zeros((2, 64, 64, 3), np.uint8)
    np.testing.assert_array_equal(goal_reward(frame, frame[0]), [0.0, 0.0])  # one goal for a batch broadcasts
    with pytest.raises(ValueError, match="desired_goal contains NaN"):
        goal_reward(frame, np.full((64, 64, 3), np.nan))
    with pytest.raises(ValueError, match=r"achieved_goal pixels must lie in \[0, 255\]"):
        goal_reward(frame.astype(np.int64) + 1000, frame)
    with pytest.raises(ValueError, match=r"\(2, 64, 64, 3\) and desired_goal \(32, 64, 3\) do not match"):
        goal_reward(frame, np.zeros((32, 64, 3), np.uint8))
    env = GoalWorldModelEnv(tiny_random_bundle("discrete"), denoise_steps=1)
    with pytest.raises(ValueError, match="must be images"):
        env.compute_reward(np.zeros((64, 64)), np.zeros((64, 64)), {})


def test_huge_latent_actions_are_blamed_on_z_not_the_weights():
    model = tiny_random_bundle("latent").world_model
    with pytest.raises(FloatingPointError, match="from z values up to 1e\\+30: .* scale z down"):
        model.predict_next(np.zeros((1, 1, 64, 64, 3), np.uint8), np.full((1, 32), 1e30, np.float32))


def test_cli_adapt_checks_its_settings_before_collecting_and_compose_names_a_non_npy_file(tmp_path, capsys):
    wm_dir, lam_dir, _ = save_tiny_models(tmp_path)
    argv = ["adapt", "--model", str(wm_dir), "--lam", str(lam_dir)]
    argv += ["--env", "AdaWorld/Procgen-coinrun-v0", "--out", str(tmp_path / "run")]
    cases = (
        (["--steps", "-1"], "argument --steps: expected an integer >= 0"),
        (["--lr", "nan"], "argument --lr: expected a positive number"),
    )
    for extra, message in cases:  # refused by the parser, under the flag's name
        with pytest.raises(SystemExit) as stop:
            cli_main([*argv, *extra])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing collected

    text = tmp_path / "latent.npy"
    text.write_text("0.1 0.2\n")
    assert cli_main(["compose", str(text), "--out", str(tmp_path / "z.npy")]) == 2
    assert "not a .npy file" in capsys.readouterr().err


def test_training_refuses_an_out_that_holds_a_model_a_bundle_or_data(tmp_path, capsys):
    from synthetic_data import grid_episodes

    _, _, bundle = save_tiny_models(tmp_path)
    bundle.save_pretrained(tmp_path / "bundle")
    data = grid_episodes(tmp_path / "data")
    lam = ["--lam", str(tmp_path / "lam")]
    cases = [
        (["train-lam", "--data", str(data), "--out", str(tmp_path / "lam")], "holds a saved model"),
        (["train-wm", *lam, "--data", str(data), "--out", str(tmp_path / "bundle")], "holds a bundle"),
        (["train-lam", "--data", str(data), "--out", str(data)], "holds episode data"),
        (["train-lam", "--data", str(data), "--out", str(tmp_path / "data")], "holds episode data (subsets"),
    ]
    for argv, message in cases:
        assert cli_main(argv) == 2 and message in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "lam").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]

    # adapt: an OUT/bundle that a save would refuse is refused before collecting and finetuning.
    (tmp_path / "run" / "bundle").mkdir(parents=True)
    (tmp_path / "run" / "bundle" / "mine.txt").write_text("x")
    argv = ["adapt", "--model", str(tmp_path / "wm"), *lam, "--env", "AdaWorld/Procgen-coinrun-v0"]
    assert cli_main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "run/bundle: it holds other files" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["bundle"]


def test_bundle_paths_name_what_is_there_and_resumed_runs_say_so(tmp_path, capsys):
    from adaworld_gym.models.bundle import AdaWorldBundle
    from adaworld_gym.training.lam import train_lam

    with pytest.raises(FileNotFoundError, match="bundle directory not found"):
        AdaWorldBundle.from_pretrained(tmp_path / "nope")
    tiny_random_bundle("discrete").save_pretrained(
        tmp_path / "run" / "bundle"
    )  # as `adaworld adapt` leaves it
    with pytest.raises(FileNotFoundError, match=r"is an adapt run: its bundle is .*run/bundle\)"):
        AdaWorldBundle.from_pretrained(tmp_path / "run")

    frames = np.random.default_rng(0).integers(0, 256, (4, 2, 32, 32, 3), np.uint8)
    clips = [{"history": f[:1], "history_len": 1, "next": f[1], "subset": 0} for f in frames]
    kw = dict(model_overrides={"image_size": 32, "patch_size": 8}, batch_size=2)
    train_lam(clips, tmp_path / "lam", "tiny", max_steps=1, progress=False, **kw)
    capsys.readouterr()
    train_lam(clips, tmp_path / "lam", "tiny", max_steps=2, progress=True, **kw)
    err = capsys.readouterr().err
    assert "resuming from " in err and "step-000000001 (step 1)" in err
    # Checkpoints are readable by others, as every other file written (mkdtemp made them 0700).
    checkpoint = next((tmp_path / "lam" / "checkpoints").glob("step-*"))
    assert checkpoint.stat().st_mode & 0o055 == 0o055 & ~UMASK


def test_a_bundle_path_with_a_tilde_is_expanded(tmp_path, monkeypatch):
    # gymnasium.make(..., bundle="~/x") from Python: no shell expands the "~" there.
    from adaworld_gym.models.bundle import AdaWorldBundle, tiny_random_bundle

    monkeypatch.setenv("HOME", str(tmp_path))
    tiny_random_bundle("discrete").save_pretrained(tmp_path / "b")
    assert AdaWorldBundle.from_pretrained("~/b").adapter is not None
