"""Session-27 review of the CLI and the benchmark scripts: arguments that were accepted but ignored or misrouted,
and bad --out paths or counts that failed only after the work (or wrote NaN results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny LAM and a tiny action-agnostic world model, with push-like held-out episodes."""
    from adaworld_gym.models import LatentActionModel, lam_preset
    from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset
    from benchmarks.world_model import synthetic_push_like

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    LatentActionModel(**lam_preset("tiny")).save_pretrained(root / "lam")
    DiffusionWorldModel(**world_model_preset("tiny"), action_agnostic=True).save_pretrained(root / "twin")
    push = synthetic_push_like(root / "val", episodes=2, steps=6, seed=0)
    return root, push


def _parser_refuses(cli_main, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err, err


# ---------------------------------------------------------------------------------------------------- CLI
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


def test_train_wm_refuses_a_negative_warmup(cli_main, capsys, tmp_path, data_dir):
    # Before: --warmup-steps -5 trained with a silently shifted learning-rate schedule.
    argv = ["train-wm", "--action-agnostic", "--data", str(data_dir), "--preset", "tiny", "--max-steps", "1"]
    _parser_refuses(
        cli_main, capsys, [*argv, "--warmup-steps", "-5", "--out", str(tmp_path / "w")], "--warmup-steps"
    )
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------------------------- benchmarks
def test_probe_writes_into_a_new_directory_and_refuses_a_directory_as_out(tmp_path, tiny_models):
    # Before: --out NEW/p.json scored every model, then failed with FileNotFoundError and lost the results.
    from benchmarks._common import parse_dataclass_args
    from benchmarks.world_model_probe import Args, probe

    root, push = tiny_models
    argv = ["--models", str(root / "twin"), "--lam", str(root / "lam"), "--envs", "push"]
    argv += ["--push-dir", str(push), "--windows", "4", "--denoise-steps", "1"]
    out = tmp_path / "new" / "deeper" / "p.json"
    results = probe(parse_dataclass_args(Args, "", [*argv, "--out", str(out)]))
    assert json.loads(out.read_text())["push"] == results["push"]
    with pytest.raises(SystemExit, match="is a directory"):
        probe(parse_dataclass_args(Args, "", [*argv, "--models", "nowhere", "--out", str(tmp_path)]))


def test_fit_writes_into_a_new_directory_and_checks_out_first(tmp_path, tiny_models):
    from benchmarks._common import parse_dataclass_args
    from benchmarks.world_model import synthetic_push_like
    from benchmarks.world_model_fit import Args, fit

    root, _ = tiny_models
    data = tmp_path / "data"
    synthetic_push_like(data, episodes=2, steps=6, seed=0)
    synthetic_push_like(data / "push-test", episodes=2, steps=6, seed=1)
    for split, seed in (("procgen-train", 2), ("procgen-test", 3)):
        (data / split).mkdir()
        synthetic_push_like(tmp_path / split, episodes=2, steps=6, seed=seed).rename(
            data / split / "procgen-maze"
        )
    argv = ["--models", str(root / "twin"), "--lam", str(root / "lam"), "--data", str(data), "--batches", "2"]
    out = tmp_path / "new" / "f.json"
    row = fit(parse_dataclass_args(Args, "", [*argv, "--threads", "1", "--out", str(out)]))
    assert json.loads(out.read_text())[str(root / "twin")] == row[str(root / "twin")]
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="is a file"):  # before any model is loaded ("nowhere" is none)
        fit(
            parse_dataclass_args(
                Args, "", ["--models", "nowhere", "--out", str(tmp_path / "file" / "f.json")]
            )
        )


@pytest.mark.parametrize("flag", ["--repeats", "--steps", "--num-envs", "--denoise-steps", "--threads"])
def test_env_speed_refuses_zero_counts(tmp_path, capsys, flag):
    # Before: --repeats 0 wrote NaN rates into results.json (not valid JSON); --steps 0 raised a
    # ZeroDivisionError after the timings.
    from benchmarks import env_speed

    with pytest.raises(SystemExit) as stop:
        env_speed.main([flag, "0", "--out", str(tmp_path / "o")])
    assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_benchmarks_refuse_an_out_that_is_a_file_before_the_work(tmp_path):
    # Before: env_speed, controllability and action_predictability made their directory only to write the
    # results, so a file there failed with FileExistsError after the whole measurement. A missing bundle / LAM
    # shows the check now comes first.
    from benchmarks import action_predictability, controllability, env_speed

    out = tmp_path / "taken"
    out.write_text("x")
    with pytest.raises(SystemExit, match="--out"):
        env_speed.main(["--bundle", str(tmp_path / "nowhere"), "--out", str(out)])
    with pytest.raises(SystemExit, match="--out"):
        controllability.main(controllability.Args(bundles=[f"a={tmp_path}"], games="maze", out=out))
    with pytest.raises(SystemExit, match="--out"):
        action_predictability.main(action_predictability.Args(lam=str(tmp_path / "nowhere"), out=out))


@pytest.mark.parametrize("name", ["agreement", "true_z", "skipped"])
def test_controllability_refuses_model_names_that_are_row_keys(tmp_path, name):
    # Before: a model named "skipped" was overwritten by the skipped list (then KeyError in the table), one named
    # "agreement" or "true_z" raised TypeError, both after the simulator and model rollouts.
    from benchmarks.controllability import Args, main

    with pytest.raises(SystemExit, match=f"the name '{name}' is taken"):
        main(Args(bundles=[f"{name}={tmp_path}"], games="maze", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_smoke_runs_keep_their_tiny_data_out_of_data_dir(tmp_path):
    """--preset smoke without --data wrote synthetic push episodes into the real data/push."""
    from benchmarks import latent_actions, world_model
    from benchmarks._common import resolve_data

    for module in (world_model, latent_actions):
        smoke = module.parse_args(["--preset", "smoke", "--out", str(tmp_path / "run")])
        assert resolve_data(smoke) == tmp_path / "run" / "data"
        assert resolve_data(module.parse_args([])) == Path("data")
        given = module.parse_args(["--preset", "smoke", "--data", str(tmp_path / "d")])
        assert resolve_data(given) == tmp_path / "d"
