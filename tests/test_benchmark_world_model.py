"""benchmarks.world_model: a subprocess smoke run writes results of the exact shape, plus the window sampler; its
probe and fit scripts score each model and write into a new --out (checked first); smoke data stays in the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.world_model import sample_windows, synthetic_push_like

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_writes_results(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.world_model", "--preset", "smoke", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [*cmd, "--data", str(tmp_path / "data")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # a guard against hangs: ~70 s on 2 cores beside another test worker
    )
    assert run.returncode == 0, run.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"push", "procgen", "denoise_sweep", "speed", "meta"}
    # The sweep evaluates the same windows at each denoising-step count; the headline count (1 in the smoke
    # preset) reproduces the headline figures exactly, other counts give other predictions.
    assert set(results["denoise_sweep"]) == {"1", "2"}
    assert results["denoise_sweep"]["1"]["push"] == results["push"]
    assert results["denoise_sweep"]["1"]["procgen"] == results["procgen"]
    two = results["denoise_sweep"]["2"]["push"]
    assert two["copy_last"] == results["push"]["copy_last"]
    assert two["adaworld"]["psnr_1step"] != results["push"]["adaworld"]["psnr_1step"]
    for env_name in ("push", "procgen"):
        assert set(results[env_name]) == {"adaworld", "adaworld_shuffled_z", "action_agnostic", "copy_last"}
        for metrics in results[env_name].values():
            assert set(metrics) == {"psnr_1step", "ssim_1step", "psnr_rollout"}
            assert len(metrics["psnr_rollout"]) == 20
            assert all(np.isfinite(metrics["psnr_rollout"])) and 0 <= metrics["ssim_1step"] <= 1
    for batch in ("batch_1", "batch_64"):
        assert set(results["speed"][batch]) == {"1", "2", "3", "5"}
        assert all(v > 0 for v in results["speed"][batch].values())
    assert results["meta"]["preset"] == "smoke"
    assert "PSNR@10" in (out / "results.md").read_text()
    assert "1-step PSNR, 2 denoising" in (out / "results.md").read_text()
    assert (out / "rollout_psnr.png").stat().st_size > 0

    # Trained models are reused instead of retrained.
    runs = out / "runs"
    reuse = [*cmd, "--data", str(tmp_path / "data"), "--lam", str(runs / "lam" / "model")]
    reuse += ["--adaworld-model", str(runs / "adaworld_seed0" / "model")]
    reuse += [
        "--agnostic-model",
        str(runs / "action_agnostic_seed0" / "model"),
        "--out",
        str(tmp_path / "again"),
    ]
    run = subprocess.run(reuse, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (tmp_path / "again" / "runs").exists()
    # --speed-only re-measures "speed" in place and leaves the quality figures alone.
    before = json.loads((tmp_path / "again" / "results.json").read_text())
    speed = [*cmd[:-1], str(tmp_path / "again"), "--speed-only"]
    run = subprocess.run(speed, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    after = json.loads((tmp_path / "again" / "results.json").read_text())
    assert after["push"] == before["push"] and after["procgen"] == before["procgen"]
    assert "speed_remeasured_at" in after["meta"] and all(v > 0 for v in after["speed"]["batch_64"].values())


def test_sample_windows_follow_the_episode(tmp_path):
    subset = synthetic_push_like(tmp_path, episodes=2, steps=24, seed=0)
    w = sample_windows([subset], n=6, horizon=20, history=4, rng=np.random.default_rng(0))
    assert w["history"].shape == (6, 4, 64, 64, 3) and w["frames"].shape == (6, 21, 64, 64, 3)
    # The last history frame is the first of the true sequence; slots before the episode start are zeros.
    np.testing.assert_array_equal(w["history"][:, -1], w["frames"][:, 0])
    for hist, length in zip(w["history"], w["history_len"], strict=True):
        assert 1 <= length <= 4 and not hist[: 4 - length].any()


def test_probe_scores_copy_last_and_each_model(tmp_path):
    import torch

    from adaworld_gym.models import LatentActionModel, lam_preset
    from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset
    from benchmarks._common import parse_dataclass_args
    from benchmarks.world_model_probe import Args, probe

    data = tmp_path / "data"
    synthetic_push_like(data / "push-test", episodes=2, steps=6, seed=0)
    # A pretraining game's held-out subset: push-like episodes under the name procgen-maze will do.
    (data / "procgen-test").mkdir()
    synthetic_push_like(tmp_path, episodes=2, steps=6, seed=1).rename(data / "procgen-test" / "procgen-maze")
    torch.manual_seed(0)
    DiffusionWorldModel(**world_model_preset("tiny"), action_agnostic=True).save_pretrained(tmp_path / "twin")
    lam = tmp_path / "lam"
    torch.manual_seed(0)
    LatentActionModel(**lam_preset("tiny")).save_pretrained(lam)
    argv = ["--models", str(tmp_path / "twin"), "--lam", str(lam), "--data", str(data), "--windows", "4"]
    args = parse_dataclass_args(Args, "", [*argv, "--denoise-steps", "1", "--out", str(tmp_path / "p.json")])
    results = probe(args)
    assert set(results) == {"push", "procgen"}
    for row in results.values():
        assert set(row) == {"copy_last", f"{tmp_path / 'twin'}@1"}
        assert all(np.isfinite(v) for v in row.values())
    assert json.loads((tmp_path / "p.json").read_text())["push"] == results["push"]


def test_probe_guidance_and_push_only(tmp_path):
    import torch

    from adaworld_gym.models import LatentActionModel, lam_preset
    from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset
    from benchmarks._common import parse_dataclass_args
    from benchmarks.world_model_probe import Args, probe

    push = synthetic_push_like(tmp_path / "val", episodes=2, steps=6, seed=0)
    torch.manual_seed(0)
    model = DiffusionWorldModel(**world_model_preset("tiny"))
    with torch.no_grad():  # the z projection starts at zero: give z (and so guidance) an effect
        for weight in model.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    model.save_pretrained(tmp_path / "wm")
    DiffusionWorldModel(**world_model_preset("tiny"), action_agnostic=True).save_pretrained(tmp_path / "twin")
    LatentActionModel(**lam_preset("tiny")).save_pretrained(tmp_path / "lam")
    wm, twin = str(tmp_path / "wm"), str(tmp_path / "twin")
    argv = ["--models", wm, twin, "--lam", str(tmp_path / "lam"), "--envs", "push", "--push-dir", str(push)]
    argv += [
        "--windows",
        "4",
        "--denoise-steps",
        "1",
        "--guidance",
        "1",
        "2",
        "--out",
        str(tmp_path / "p.json"),
    ]
    results = probe(parse_dataclass_args(Args, "", argv))
    assert set(results) == {"push"}  # no procgen-test data needed
    # guidance applies to the latent-conditioned model only; scale 1 keeps the plain key
    assert set(results["push"]) == {"copy_last", f"{wm}@1", f"{wm}@1/g2", f"{twin}@1"}
    assert results["push"][f"{wm}@1"] != results["push"][f"{wm}@1/g2"]
    with pytest.raises(SystemExit, match="--envs"):
        probe(parse_dataclass_args(Args, "", [*argv[:-2], "--envs", "atari"]))


def test_table_calls_only_the_models_given_on_the_command_line_given():
    from benchmarks.world_model import MODELS, SPEED_BATCHES, SPEED_STEPS, markdown_table

    row = {"psnr_1step": 20.0, "ssim_1step": 0.5, "psnr_rollout": [20.0] * 20}
    speed = {f"batch_{b}": {str(s): 1.0 for s in SPEED_STEPS} for b in SPEED_BATCHES}
    meta = dict(preset="smoke", model="tiny", seed=0, eval_1step=8, eval_rollout=4, denoise_steps=1)
    meta.update(train_steps=2, batch_size=4, adaworld_model="", agnostic_model="")
    # Models trained by the run itself have a summary with their steps too: the preset's budget, not "given".
    meta["training"] = {"adaworld": {"steps": 2}, "action_agnostic": {"steps": 2}}
    results = {env: {name: row for name in MODELS} for env in ("push", "procgen")}
    results.update(speed={"threads": 1, **speed}, meta=meta)
    table = markdown_table(results)
    assert "2 steps of 4 each" in table and "given" not in table
    meta.update(
        adaworld_model="weights/wm", training={"adaworld": {"steps": 8530}, "action_agnostic": {"steps": 2}}
    )
    table = markdown_table(results)
    assert "adaworld 8,530 steps, action_agnostic 2 steps (trained here) (unequal budgets)" in table
    meta.update(
        agnostic_model="weights/twin",
        training={"adaworld": {"steps": 8530}, "action_agnostic": {"steps": 8530}},
    )
    assert "given models: adaworld 8,530 steps, action_agnostic 8,530 steps;" in markdown_table(results)


def test_fit_scores_training_and_held_out_windows_with_the_same_draws(tmp_path):
    import torch

    from adaworld_gym.models import LatentActionModel, lam_preset
    from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset
    from benchmarks._common import parse_dataclass_args
    from benchmarks.world_model_fit import Args, fit

    data = tmp_path / "data"
    synthetic_push_like(data / "push", episodes=2, steps=6, seed=0)
    synthetic_push_like(data / "push-test", episodes=2, steps=6, seed=1)
    for split, seed in (("procgen-train", 2), ("procgen-test", 3)):
        (data / split).mkdir()
        synthetic_push_like(tmp_path / split, episodes=2, steps=6, seed=seed).rename(
            data / split / "procgen-maze"
        )
    torch.manual_seed(0)
    DiffusionWorldModel(**world_model_preset("tiny")).save_pretrained(tmp_path / "wm")
    LatentActionModel(**lam_preset("tiny")).save_pretrained(tmp_path / "lam")
    argv = ["--models", str(tmp_path / "wm"), "--lam", str(tmp_path / "lam"), "--data", str(data)]
    args = parse_dataclass_args(
        Args, "", [*argv, "--batches", "2", "--threads", "1", "--out", str(tmp_path / "f.json")]
    )
    row = fit(args)[str(tmp_path / "wm")]
    assert row == fit(args)[str(tmp_path / "wm")]  # same windows, same draws
    for name in ("push_train", "push_held_out", "procgen_train", "procgen_held_out"):
        assert np.isfinite(row[name]["loss"]) and row[name]["loss"] > 0
    assert row["push_held_out_over_train"] == row["push_held_out"]["loss"] / row["push_train"]["loss"]
    assert json.loads((tmp_path / "f.json").read_text())[str(tmp_path / "wm")] == row


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


@pytest.mark.usefixtures("one_thread")
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


@pytest.mark.usefixtures("one_thread")
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


@pytest.mark.usefixtures("one_thread")
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


def test_models_given_on_the_command_line_are_checked_before_any_training(tmp_path, tiny_models):
    """A typo in --adaworld-model surfaced only after the twin had trained (half an hour on the cpu preset)."""
    from benchmarks.world_model import Args, main

    root, _ = tiny_models
    cases = [
        (dict(adaworld_model=str(tmp_path / "nope")), "cannot load a given model: no world model found"),
        (dict(adaworld_model=str(root / "twin")), "--adaworld-model .*twin: it is action-agnostic"),
        (dict(lam=str(tmp_path / "nope")), "cannot load a given model"),
    ]
    for given, message in cases:
        with pytest.raises(SystemExit, match=message):
            main(Args(preset="smoke", out=tmp_path / "out", **given))
        assert not (tmp_path / "out").exists()  # refused before the data step and the trainings
