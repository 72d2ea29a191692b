"""benchmarks.adaptation: the smoke preset end to end, the results shape, skipped models and bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.adaptation import MODELS, Args, main, parse_args

torch.set_num_threads(1)  # the machine is shared: one thread is the fastest per core
# Tiny random LAMs give near-identical latents: k-means finds fewer distinct clusters than asked.
pytestmark = pytest.mark.filterwarnings("ignore:Number of distinct clusters")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptation")
    return out, main(Args(preset="smoke", seed=0, out=out))


def test_smoke_run_writes_the_results_shape(smoke):
    out, returned = smoke
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["complete"] and results["meta"]["seeds"] == [0, 1]
    envs = results["meta"]["envs"]
    assert envs == ["procgen-bossfight", "push"]
    for env in envs:
        for model in MODELS:
            per_step = results[env][model]
            assert sorted(per_step, key=int) == ["0", "2"]
            for entry in per_step.values():
                assert {"psnr", "ssim", "psnr_std", "ssim_std"} <= set(entry)
                assert len(entry["per_seed"]) == 2 and entry["psnr"] > 0 and -1 <= entry["ssim"] <= 1
                seeds = [s["psnr"] for s in entry["per_seed"]]
                assert entry["psnr"] == pytest.approx(sum(seeds) / 2)
        # Options need a LAM: the twin has none; they do not depend on the adapter, so the motion variant skips them.
        assert (
            results["options"][env]["adaworld"]["k"] == 2
            and results["options"][env]["action_agnostic"] is None
            and results["options"][env]["adaworld_motion"] is None
        )
        assert results["copy_last"][env] > 0
    assert results["skipped"] == {m: None for m in MODELS}
    average = results["average"]["psnr"]
    for model in MODELS:
        for step in ("0", "2"):
            assert average[model][step] == pytest.approx(
                (results[envs[0]][model][step]["psnr"] + results[envs[1]][model][step]["psnr"]) / 2
            )
    margins = results["average"]["margins"]
    assert margins["adaworld_minus_vq_at_800"] is None  # the smoke preset stops at 2 steps
    assert margins["adaworld_minus_action_agnostic_at_0"] == pytest.approx(
        average["adaworld"]["0"] - average["action_agnostic"]["0"]
    )
    assert results["run_minutes"] > 0
    assert returned["push"]["vq"]["2"]["psnr"] == results["push"]["vq"]["2"]["psnr"]
    assert (out / "results.md").read_text().startswith("### procgen-bossfight")
    assert (out / "psnr_vs_steps.png").stat().st_size > 0
    assert (out / "runs" / "push" / "adaworld" / "seed1" / "bundle" / "bundle.json").is_file()
    assert not (out / "runs" / "push" / "adaworld" / "seed1" / "checkpoints").exists()
    # The motion variant adapts the same pretrained model with an adapter that reads the history's motion.
    motion_bundle = out / "runs" / "procgen-bossfight" / "adaworld_motion" / "seed0" / "bundle"
    adapter = json.loads((motion_bundle / "adapter" / "config.json").read_text())
    assert adapter["config"]["motion_dim"] > 0
    assert margins["adaworld_motion_minus_action_agnostic_at_0"] == pytest.approx(
        average["adaworld_motion"]["0"] - average["action_agnostic"]["0"]
    )


def test_finished_runs_are_reused_and_models_not_given_are_skipped(smoke):
    out, first = smoke
    # Same out dir: every selected run is read back from its result.json, nothing is trained again.
    again = main(Args(preset="smoke", seed=0, out=out, models="adaworld", envs="push"))
    assert again["push"]["adaworld"] == first["push"]["adaworld"]
    # The complete file of every env and model is kept aside, not replaced by this narrower run's.
    (kept,) = out.glob("results.superseded-*.json")
    assert json.loads(kept.read_text())["meta"]["envs"] == first["meta"]["envs"] != ["push"]
    assert again["push"]["vq"] is None and again["skipped"]["vq"] == "not selected (--models)"
    assert again["average"]["psnr"]["adaworld"] is not None and again["average"]["psnr"]["vq"] is None
    assert "skipped: not selected" in (out / "results.md").read_text()
    # A finished run computed for other weights (or with no record of them) is never taken over silently.
    done = out / "runs" / "push" / "adaworld" / "seed0" / "result.json"
    result = json.loads(done.read_text())
    result["provenance"]["model"] = "another model"
    done.write_text(json.dumps(result))
    with pytest.raises(SystemExit, match="another model, LAM, data or protocol"):  # a message, no traceback
        main(Args(preset="smoke", seed=0, out=out, models="adaworld", envs="push"))


def test_bad_inputs_are_refused(tmp_path, smoke):
    out, _ = smoke
    with pytest.raises(SystemExit, match="unknown preset"):
        main(Args(preset="huge", out=tmp_path))
    with pytest.raises(SystemExit, match="unknown model"):
        main(Args(preset="smoke", models="adaworld,mystery", out=tmp_path))
    with pytest.raises(SystemExit, match="unknown env"):
        main(Args(preset="smoke", envs="procgen-heist", out=tmp_path))
    with pytest.raises(SystemExit, match="needs its LAM"):
        main(Args(preset="cpu", adaworld=str(tmp_path), models="adaworld", out=tmp_path))
    with pytest.raises(SystemExit, match="no episodes"):
        main(Args(preset="cpu", models="", data=tmp_path / "nothing", out=tmp_path))
    assert parse_args(["--preset", "smoke", "--vq-lam", "L"]).vq_lam == "L"
