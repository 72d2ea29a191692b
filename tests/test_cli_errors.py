"""The user-facing commands: bad paths, counts, seeds, settings and interrupts fail at once with one clear line,
before any work; what they write goes beside the model it belongs to, never into the installed package."""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_data import save_tiny_models

from adaworld_gym.data.episodes import Episode, EpisodeStore

pytestmark = pytest.mark.usefixtures("one_thread")
SCRIPTS = Path(__file__).parents[1] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    from adaworld_gym.models.bundle import tiny_random_bundle

    path = tmp_path_factory.mktemp("bundle") / "discrete"
    tiny_random_bundle("discrete").save_pretrained(path)
    return path


def _fails(cli_main, capsys, argv, message):
    assert cli_main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------- output paths
def test_gif_and_png_outputs_refuse_other_suffixes_before_any_work(cli_main, capsys, tmp_path, bundle_dir):
    # Before: a GIF (or PNG) was written under the .mp4 (.jpg) name; now nothing loads, runs or is written.
    nowhere = tmp_path / "no-model"
    argv = ["transfer", "--source", "s.awe", "--target", "t.png", "--lam", nowhere, "--model", nowhere]
    _fails(cli_main, capsys, [*argv, "--out", tmp_path / "t.mp4"], "only .gif files are written, got '.mp4'")
    _fails(cli_main, capsys, ["plan", "--model", nowhere, "--out", tmp_path / "p.mp4"], "only .gif files")
    _fails(
        cli_main, capsys, ["plot", "--lam", nowhere, "--data", nowhere, "--out", tmp_path / "p.jpg"], ".png"
    )
    play = ["play", "--env", "AdaWorld/WorldModel-v0", "--bundle", bundle_dir, "--headless", "--steps", "2"]
    _fails(cli_main, capsys, [*play, "--record", tmp_path / "run.mp4"], "only .gif files are written")
    assert not list(tmp_path.iterdir())


def test_a_bad_record_path_fails_before_the_session_is_played(tmp_path, monkeypatch):
    import adaworld_gym.play as play_module

    def no_env(*args, **kwargs):
        raise AssertionError("the env was made before the --record path was checked")

    monkeypatch.setattr(play_module, "make_env", no_env)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file is a file, not a directory"):
        play_module.play("AdaWorld/WorldModel-v0", headless=True, record=tmp_path / "file" / "run.gif")
    with pytest.raises(ValueError, match="is a directory"):
        play_module.play("AdaWorld/WorldModel-v0", headless=True, record=tmp_path)


def test_out_paths_of_the_wrong_kind_are_named(cli_main, capsys, tmp_path, data_dir):
    afile = tmp_path / "afile"
    afile.write_text("x")
    episode = data_dir / "procgen-maze" / "ep_000000.awe"
    _fails(cli_main, capsys, ["encode", episode, "--out", tmp_path], "is a directory")
    _fails(
        cli_main, capsys, ["encode", episode, "--out", afile / "z.npy"], "afile is a file, not a directory"
    )
    _fails(cli_main, capsys, ["demo", "--out", afile], "is a file, not a directory")
    # .npy is what they write, whatever the name: a video named as --out was overwritten by an array.
    _fails(cli_main, capsys, ["encode", episode, "--out", tmp_path / "video.gif"], "only .npy files")
    _fails(cli_main, capsys, ["compose", episode, "--out", tmp_path / "z.txt"], "only .npy files")
    reward = ["train-reward", "--data", data_dir, "--max-steps", "1", "--out", afile]
    _fails(cli_main, capsys, reward, "is a file, not a directory")
    assert afile.read_text() == "x"


def test_train_reward_refuses_a_lam_the_bundle_cannot_take_before_training(
    cli_main, capsys, tmp_path, data_dir, bundle_dir
):
    from adaworld_gym.models import LatentActionModel, lam_preset

    LatentActionModel(**{**lam_preset("tiny"), "latent_dim": 8}).save_pretrained(tmp_path / "lam8")
    argv = ["train-reward", "--data", data_dir, "--lam", tmp_path / "lam8", "--bundle", bundle_dir]
    _fails(cli_main, capsys, [*argv, "--out", tmp_path / "run"], "has latent_dim 8, the bundle's adapter 32")
    assert not (tmp_path / "run").exists()


def test_train_reward_refuses_data_of_another_env_than_the_bundles_before_training(
    cli_main, capsys, tmp_path
):
    """A head trained on one game's rewards would pay them in another game's imagined env (own recordings, of
    no adaptable env id, are left to the user, as adapt leaves them)."""
    from dataclasses import replace

    from adaworld_gym.models.bundle import tiny_random_bundle

    bundle = tiny_random_bundle("discrete")
    replace(bundle, meta={**bundle.meta, "env_id": "AdaWorld/Procgen-coinrun-v0"}).save_pretrained(
        tmp_path / "b"
    )
    rng = np.random.default_rng(0)
    for game in ("maze", "coinrun"):
        store = EpisodeStore(tmp_path / "data" / game / f"procgen-{game}", create=True)
        frames = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
        episode = Episode(frames=frames, actions=rng.integers(0, 15, 5), env_id=f"AdaWorld/Procgen-{game}-v0")
        store.write("ep_000000", episode)
    argv = ["train-reward", "--bundle", tmp_path / "b", "--out", tmp_path / "run", "--data"]
    _fails(
        cli_main,
        capsys,
        [*argv, tmp_path / "data" / "maze"],
        "--data was recorded in AdaWorld/Procgen-maze-v0",
    )
    _fails(
        cli_main, capsys, [*argv, tmp_path / "data" / "maze", tmp_path / "data" / "coinrun"], "mixes episodes"
    )
    assert not (tmp_path / "run").exists()


def test_headless_play_records_with_a_progress_bar(bundle_dir, tmp_path, capsys):
    from adaworld_gym.play import play

    result = play("AdaWorld/WorldModel-v0", bundle_dir, headless=True, steps=3, record=tmp_path / "r.gif")
    assert result.record.read_bytes()[:6] == b"GIF89a"
    assert "3/3" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- counts
@pytest.mark.parametrize(
    "argv",
    [
        ["cluster", "--lam", "l", "--data", "d", "--k", "0"],
        ["cluster", "--lam", "l", "--data", "d", "--samples", "-5"],
        ["train-reward", "--data", "d", "--out", "o", "--max-episodes", "0"],
        ["adapt", "--model", "m", "--env", "e", "--out", "o", "--samples-per-action", "0"],
        ["adapt", "--model", "m", "--env", "e", "--out", "o", "--trajectories", "0"],
        ["adapt", "--model", "m", "--env", "e", "--out", "o", "--episode-steps", "-5"],
        ["adapt", "--model", "m", "--env", "e", "--out", "o", "--batch-size", "0"],
    ],
)
def test_zero_and_negative_counts_are_refused_by_the_parser(cli_main, capsys, argv):
    # Before: sklearn's "n_clusters" message, a silent 1-sample plot, or collect's "episodes ... must be
    # positive" after the world model loaded.
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    assert stop.value.code == 2 and "expected a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--steps", "-5", "expected an integer >= 0"),
        ("--mlp-fit-steps", "-1", "expected an integer >= 0"),
        ("--lr", "-1", "expected a positive number"),
        ("--lr", "nan", "expected a positive number"),
    ],
)
def test_adapt_numbers_are_refused_under_their_flag(cli_main, capsys, flag, value, expected):
    # Were refused later as "max_steps must be >= 0" or "need lr > 0 and 0 < pretrained_lr_scale <= 1".
    with pytest.raises(SystemExit) as stop:
        cli_main(["adapt", "--model", "m", "--env", "e", "--out", "o", flag, value])
    assert stop.value.code == 2 and f"argument {flag}: {expected}" in capsys.readouterr().err


def test_denoise_steps_are_named_in_their_own_error(tmp_path):
    from adaworld_gym.plan import plan_push

    with pytest.raises(ValueError, match="--denoise-steps must be >= 1, got 0"):
        # Small settings: if the check were missing this plans one quick step instead of a full episode.
        plan_push(
            tmp_path / "p.gif", samples=1, horizon=1, steps=1, workers=0, denoise_steps=0, progress=False
        )


def test_shares_are_checked_before_the_run_folder_is_written(cli_main, capsys, tmp_path, data_dir):
    out = tmp_path / "lam"
    argv = ["train-lam", "--data", data_dir, "--preset", "tiny", "--max-steps", "1", "--shares", "0"]
    _fails(cli_main, capsys, [*argv, "--out", out], "--shares must be finite")
    assert not out.exists()


def test_plan_without_replans_reports_no_nan_timing(cli_main, capsys, tmp_path):
    argv = ["plan", "--workers", "0", "--samples", "2", "--horizon", "2", "--steps", "1"]
    assert cli_main([*argv, "--out", str(tmp_path / "p.gif")]) == 0
    out = capsys.readouterr().out
    assert "no replans" in out and "nan" not in out


# ---------------------------------------------------------------------------------------- inputs and LAMs
def test_encode_reads_frames_at_the_lams_size(cli_main, capsys, tmp_path, data_dir):
    from adaworld_gym.models import LatentActionModel, lam_preset

    # Before: frames were always read at 64 px, so a 32 px LAM could encode nothing.
    lam = LatentActionModel(**{**lam_preset("tiny"), "image_size": 32})
    lam.save_pretrained(tmp_path / "lam32")
    out = tmp_path / "z.npy"
    episode = data_dir / "procgen-maze" / "ep_000000.awe"
    assert cli_main(["encode", str(episode), "--lam", str(tmp_path / "lam32"), "--out", str(out)]) == 0
    assert np.load(out).shape == (5, lam.config.latent_dim)


def test_compose_names_empty_and_non_numeric_files(cli_main, capsys, tmp_path):
    import adaworld_gym.latent  # noqa: F401  (imported now: its imports' warnings are not under test)

    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    # Before: NumPy's "mean of empty slice" warnings, then "latent actions contain NaN or inf", no file named.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fails(cli_main, capsys, ["compose", tmp_path / "empty.npy", "--out", tmp_path / "c.npy"], "holds no")
    _fails(cli_main, capsys, ["compose", tmp_path / "text.npy", "--out", tmp_path / "c.npy"], "text.npy")
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    np.save(tmp_path / "huge.npy", np.array([1e300, 0.0]))
    for name in ("nan.npy", "huge.npy"):
        _fails(
            cli_main, capsys, ["compose", tmp_path / name, "--out", tmp_path / "c.npy"], f"{name} holds NaN"
        )
    assert not (tmp_path / "c.npy").exists()


def test_directories_and_damaged_images_as_inputs_are_named(tmp_path):
    from adaworld_gym.transfer import load_frames

    with pytest.raises(ValueError, match="is a directory"):  # before: "no such file" for a folder that exists
        load_frames(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="corrupt or not an image") as error:
        load_frames(tmp_path / "broken.png")
    assert "\n" not in str(error.value)  # imageio's advice to install plugins is left out


# ------------------------------------------------------------------------------------------ interrupts
def test_plot_and_options_leave_no_temporary_file_when_interrupted(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from adaworld_gym.latent import plot_latents, save_options

    def interrupted(self, target, **kwargs):
        (open(target, "wb") if isinstance(target, str | os.PathLike) else target).write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    rng = np.random.default_rng(0)
    with pytest.raises(KeyboardInterrupt):
        plot_latents(rng.normal(size=(10, 4)), None, None, tmp_path / "p.png")
    assert not list(tmp_path.iterdir())
    save_options(tmp_path, np.zeros((2, 4), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latent_options.json", "latent_options.safetensors"]


def test_oracle_workers_ignore_ctrl_c(capfd):
    from adaworld_gym.plan import PUSH_ENV_ID, make_env
    from adaworld_gym.planning import SimulatorDynamics

    # A terminal's Ctrl-C reaches the workers too: before, each printed a KeyboardInterrupt traceback. Now the
    # parent alone handles it (and closes the pool); a worker goes on, even one still building its env.
    oracle = SimulatorDynamics(functools.partial(make_env, PUSH_ENV_ID), workers=1)
    try:
        worker = oracle._procs[0]
        os.kill(worker.pid, signal.SIGINT)
        env = make_env(PUSH_ENV_ID)
        env.reset(seed=0)
        frames = oracle.rollout(None, np.zeros((1, 2, 4), np.float32), state=env.unwrapped.get_state())
        env.close()
        assert frames.shape == (1, 2, 64, 64, 3) and worker.is_alive()
    finally:
        oracle.close()
    assert "Traceback" not in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------- scripts
def test_scripts_refuse_bad_arguments_in_one_line(monkeypatch, capsys, tmp_path):
    finetune = _script("finetune_on_events")
    with pytest.raises(SystemExit) as stop:  # before: "the shipped procgen-nope bundle has no reward head"
        finetune.main(["--game", "nope", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="data directory not found"):  # before: a traceback
        finetune.main(["--game", "plunder", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])

    ab = _script("ab_cpu_sampling")
    for argv in (["--threads", "0"], ["--batches", "0"]):  # before: torch's or the model's traceback
        monkeypatch.setattr(sys, "argv", ["ab_cpu_sampling.py", *argv])
        with pytest.raises(SystemExit) as stop:
            ab.main()
        assert stop.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_a_missing_optional_extra_is_one_line_not_a_traceback(cli_main, capsys, monkeypatch):
    import adaworld_gym.play as play_module

    def no_pygame(*args, **kwargs):
        raise ImportError('a pygame window (adaworld play) needs pygame: pip install "adaworld-gym[play]"')

    monkeypatch.setattr(play_module, "play", no_pygame)
    _fails(
        cli_main,
        capsys,
        ["play", "--env", "AdaWorld/Procgen-heist-v0", "--headless"],
        'pip install "adaworld-gym[play]"',
    )

    def broken(*args, **kwargs):
        raise ImportError("cannot import name 'x' from 'y'")  # a bug: the traceback is what helps

    monkeypatch.setattr(play_module, "play", broken)
    with pytest.raises(ImportError, match="cannot import name"):
        cli_main(["play", "--env", "AdaWorld/Procgen-heist-v0", "--headless"])


# ------------------------------------------------------- seeds, games, settings and outputs checked first


def _parser_refuses(cli_main, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["play", "--env", "AdaWorld/WorldModel-Procgen-coinrun-v0", "--headless", "--seed", "-1"],
        ["transfer", "--source", "s.awe", "--target", "t.png", "--seed", "-1"],
        ["demo", "--out", "o", "--seed", "-1"],
        ["train-wm", "--data", "d", "--out", "o", "--seed", "4294967296"],
        ["collect", "procgen", "--games", "coinrun", "--out", "o", "--seed", "x"],
    ],
)
def test_seeds_outside_what_numpy_and_torch_take_are_refused_by_the_parser(cli_main, capsys, argv):
    # Before: a gymnasium traceback (play), a late failure (demo), numpy's message (train-wm), -1 taken (transfer).
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    assert stop.value.code == 2 and "expected a seed, an integer in 0..2**32-1" in capsys.readouterr().err


@pytest.mark.parametrize("games", ["", ",", " , "])
def test_collect_procgen_refuses_an_empty_game_list(cli_main, capsys, tmp_path, games):
    # Before: `--games ""` (an unset shell variable) collected nothing and exited 0.
    argv = ["collect", "procgen", "--games", games, "--episodes", "1", "--steps", "2"]
    _parser_refuses(cli_main, capsys, [*argv, "--out", str(tmp_path / "d")], "no game given")
    assert not (tmp_path / "d").exists()


def test_collect_videos_takes_no_seed(cli_main, capsys, tmp_path):
    # Before: --seed was accepted and ignored (video collection draws nothing at random).
    (tmp_path / "videos").mkdir()
    argv = ["collect", "videos", str(tmp_path / "videos"), "--seed", "3", "--out", str(tmp_path / "d")]
    _parser_refuses(cli_main, capsys, argv, "unrecognized arguments: --seed")


def test_an_unknown_flag_is_reported_with_its_subcommands_usage(cli_main, capsys, tmp_path):
    """It came with the top-level usage, which lists no flag of the subcommand."""
    _parser_refuses(cli_main, capsys, ["train-reward", "--data", "d", "--out", "o", "--steps", "20"],
                    "usage: adaworld train-reward")  # fmt: skip
    _parser_refuses(cli_main, capsys, ["collect", "procgen", "--bogus"], "usage: adaworld collect procgen")


def test_train_wm_refuses_a_negative_warmup(cli_main, capsys, tmp_path, data_dir):
    # Before: --warmup-steps -5 trained with a silently shifted learning-rate schedule.
    argv = ["train-wm", "--action-agnostic", "--data", str(data_dir), "--preset", "tiny", "--max-steps", "1"]
    _parser_refuses(
        cli_main, capsys, [*argv, "--warmup-steps", "-5", "--out", str(tmp_path / "w")], "--warmup-steps"
    )
    assert not (tmp_path / "w").exists()


def test_a_lam_trained_on_frames_of_another_size_names_both(cli_main, capsys, tmp_path):
    store = EpisodeStore(tmp_path / "data" / "procgen-maze", create=True)
    rng = np.random.default_rng(0)
    store.write("ep_000000", Episode(frames=rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)))
    argv = ["train-lam", "--data", str(tmp_path / "data"), "--preset", "tiny", "--max-steps", "1"]
    code = cli_main(
        [*argv, "--set", "image_size=48", "--set", "patch_size=8", "--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "for a LAM of image_size 48" in err and "Traceback" not in err


def test_training_refuses_an_out_that_holds_a_model_a_bundle_or_data(cli_main, tmp_path, capsys):
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
    assert "run/bundle: it holds something else (no bundle.json)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["bundle"]


def test_cluster_with_a_run_directory_stores_the_options_beside_the_model(cli_main, tmp_path, data_dir):
    # Before: --lam RUN (accepted, the LAM loads from RUN/model) wrote the options to RUN/, where
    # load_options(RUN/model) (the directory of the weights) never found them.
    from adaworld_gym.latent import OPTIONS_FILE, load_options
    from adaworld_gym.models import LatentActionModel, lam_preset

    run = tmp_path / "lam-run"
    torch.manual_seed(0)
    LatentActionModel(**lam_preset("tiny")).save_pretrained(run / "model")
    argv = ["cluster", "--lam", str(run), "--data", str(data_dir), "--k", "2", "--samples", "8"]
    assert cli_main(argv) == 0
    assert load_options(run / "model").shape[0] == 2
    assert not (run / OPTIONS_FILE).exists()


def test_cluster_refuses_to_write_into_the_installed_package(cli_main, capsys):
    from adaworld_gym import defaults

    code = cli_main(["cluster", "--lam", str(defaults.ASSETS / "lam"), "--data", "unused", "--k", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "into the installed package" in err
    assert not list((defaults.ASSETS / "lam").glob("latent_options*"))
