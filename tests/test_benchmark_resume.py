"""Resume and results-file integrity of the benchmark drivers: what a killed or rerun benchmark keeps, takes over
and refuses, and an --out that cannot take the results refused before the work."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import adaptation, vp2_push

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:Number of distinct clusters"),
]


def _fake_push_rows(name, env, tasks, p, args, bundle=None):
    return [
        {
            "task": i,
            "target_object": 0,
            "success": False,
            "best_distance": 0.1,
            "initial_distance": 0.2,
            "seconds_per_replan": 0.01,
            "replans": 14,
            "blind_replans": 0,
        }
        for i in range(len(tasks))
    ]


# ------------------------------------------------------------------------------------------------- vp2_push
def test_vp2_push_snapshots_keep_the_models_taken_over(tmp_path, monkeypatch, no_shipped_bundle):
    # A model finished earlier in --out must stay in every results.json written while the others run: a kill
    # after the first new model would otherwise leave a file without it.
    monkeypatch.setattr(vp2_push, "evaluate_model", _fake_push_rows)
    out = tmp_path / "out"
    vp2_push.main(vp2_push.Args(preset="smoke", seed=0, models="random", out=out))
    snapshots = []
    write = vp2_push.write_results
    monkeypatch.setattr(
        vp2_push, "write_results", lambda o, r: snapshots.append(json.loads(json.dumps(r))) or write(o, r)
    )
    vp2_push.main(vp2_push.Args(preset="smoke", seed=0, models="oracle,random", out=out))
    assert [s["meta"]["complete"] for s in snapshots] == [False, True]
    for snapshot in snapshots:
        assert snapshot["per_task"]["random"] is not None and snapshot["meta"]["reused"] == {
            "random": str(out)
        }


def test_vp2_push_run_on_other_models_keeps_a_learned_models_rows_and_bundle(tmp_path, monkeypatch):
    """A learned model not selected (--models random) had its finished rows and bundle record erased."""
    from adaworld_gym.models.bundle import tiny_random_bundle

    monkeypatch.setattr(vp2_push, "evaluate_model", _fake_push_rows)
    tiny_random_bundle("continuous", seed=0, action_size=4).save_pretrained(tmp_path / "aw")
    out = tmp_path / "out"
    first = vp2_push.main(
        vp2_push.Args(preset="smoke", models="adaworld", adaworld=str(tmp_path / "aw"), out=out)
    )
    recorded = first["meta"]["bundles"]["adaworld"]
    for adaworld in (str(tmp_path / "aw"), None):  # the flag repeated or left out
        again = vp2_push.main(vp2_push.Args(preset="smoke", models="random", adaworld=adaworld, out=out))
        assert again["per_task"]["adaworld"] == first["per_task"]["adaworld"]
        assert again["meta"]["bundles"] == {"adaworld": recorded} and again["skipped"]["adaworld"] is None
        assert again["per_task"]["random"] is not None


def test_vp2_push_reuse_that_cannot_contribute_is_refused(tmp_path):
    protocol = {k: vp2_push.PRESETS["smoke"][k] for k in vp2_push.PROTOCOL_SETTINGS}
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    meta = {**protocol, "preset": "smoke", "seed": 1, "episode_steps": vp2_push.VP2_STEPS}
    (earlier / "results.json").write_text(json.dumps({"meta": meta, "per_task": {}}))
    args = vp2_push.Args(preset="smoke", seed=0, models="random", out=tmp_path / "out")
    with pytest.raises(SystemExit, match=r"--reuse .*earlier.*seed 1 there, 0 now"):
        vp2_push.main(replace(args, reuse=[earlier]))
    with pytest.raises(SystemExit, match=r"--reuse .*missing: no .*results.json"):
        vp2_push.main(replace(args, reuse=[tmp_path / "missing"]))
    (earlier / "results.json").write_text('{"meta": {"preset"')  # cut short
    with pytest.raises(SystemExit, match=r"cannot read results file .*earlier/results.json"):
        vp2_push.main(replace(args, reuse=[earlier]))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("{")
    with pytest.raises(SystemExit, match=r"cannot read results file .*out/results.json"):
        vp2_push.main(args)


def test_vp2_push_results_on_other_tasks_are_not_merged(tmp_path, monkeypatch, no_shipped_bundle):
    # Same seed, other tasks (MuJoCo rounds differently on another kind of CPU; or a file from before the tasks
    # were fingerprinted): --reuse refuses it, saying why, and --out's finished rows are run again.
    from adaworld_gym.sims.push import make_push_tasks, push_tasks_digest

    monkeypatch.setattr(vp2_push, "evaluate_model", _fake_push_rows)
    out = tmp_path / "out"
    first = vp2_push.main(vp2_push.Args(preset="smoke", seed=0, models="random", out=out))
    n = vp2_push.PRESETS["smoke"]["tasks"]
    assert first["meta"]["task_digest"] == push_tasks_digest(make_push_tasks(n, 0))
    assert push_tasks_digest(make_push_tasks(n, 1)) != first["meta"]["task_digest"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for digest in ("0" * 64, None):
        results = json.loads((out / "results.json").read_text())
        results["meta"]["task_digest"] = digest
        (elsewhere / "results.json").write_text(json.dumps(results))
        args = vp2_push.Args(preset="smoke", seed=0, models="random", out=tmp_path / "new", reuse=[elsewhere])
        with pytest.raises(
            SystemExit, match=r"task_digest .* there, .*; the push tasks differ: .*another kind of CPU"
        ):
            vp2_push.main(args)

    # --out itself made on other tasks: nothing taken over, and the file is kept beside the new one, not lost.
    (out / "results.json").write_text((elsewhere / "results.json").read_text())
    again = vp2_push.main(vp2_push.Args(preset="smoke", seed=0, models="random", out=out))
    assert again["meta"]["reused"] == {} and again["meta"]["task_digest"] == first["meta"]["task_digest"]
    (kept,) = out.glob("results.superseded-*.json")
    assert kept.read_text() == (elsewhere / "results.json").read_text()
    assert kept.with_suffix(".md").is_file()


# ----------------------------------------------------------------------------------------------- adaptation
def _push_job(tmp: Path, run: str, eval_at=(0, 3)) -> dict:
    from benchmarks.world_model import synthetic_push_like

    if not (tmp / "data" / "push").is_dir():
        synthetic_push_like(tmp / "data", 3, 6, seed=0)
        synthetic_push_like(tmp / "data" / "push-test", 2, 6, seed=1)
    wm, _ = adaptation.smoke_model("action_agnostic", tmp / "models", "", "", 0)
    return dict(
        env="push",
        name="action_agnostic",
        seed=0,
        model=wm,
        lam=None,
        p={**adaptation.PRESETS["smoke"], "eval_at": eval_at},
        data=[str(d) if d else "" for d in adaptation.env_data(tmp / "data", "push")],
        run_dir=str(tmp / run),
        threads=1,
        progress=False,
    )


def test_adaptation_run_records_are_checked_before_any_run(tmp_path, monkeypatch):
    job = _push_job(tmp_path, "run")
    provenance = adaptation.run_provenance(job)
    run_dir = Path(job["run_dir"])
    run_dir.mkdir()
    (run_dir / "result.json").write_text('{"steps": {"0": {"psnr": 1')  # cut short
    with pytest.raises(SystemExit, match=r"cannot read run record .*run/result.json"):
        adaptation.earlier_run(run_dir, provenance)
    (run_dir / "result.json").write_text(json.dumps({"provenance": provenance, "steps": {}}))
    with pytest.raises(ValueError, match="not a finished run's record"):
        adaptation.earlier_run(run_dir, provenance)

    # In main, an unreadable record of the last run stops the benchmark before the first run starts.
    out = tmp_path / "out"
    bad = out / "runs" / "push" / "action_agnostic" / "seed1"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text("[")
    ran = []
    monkeypatch.setattr(adaptation, "run_one", lambda job: ran.append(job) or {})
    args = adaptation.Args(preset="smoke", models="action_agnostic", envs="push", out=out)
    with pytest.raises(SystemExit, match=r"cannot read run record .*seed1/result.json"):
        adaptation.main(args)
    assert ran == []


def test_adaptation_run_resumed_from_a_checkpoint_is_flagged(tmp_path, monkeypatch):
    import adaworld_gym.training.adapt as adapt_module

    whole = adaptation.run_one(_push_job(tmp_path, "whole"))
    assert whole["resumed"] is False
    loss, calls = adapt_module.window_loss, []

    def killed_at_the_second_step(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")  # the checkpoint clock saves step 1, as on SIGINT/SIGTERM
        return loss(*a, **k)

    monkeypatch.setattr(adapt_module, "window_loss", killed_at_the_second_step)
    with pytest.raises(KeyboardInterrupt):
        adaptation.run_one(_push_job(tmp_path, "resumed"))
    monkeypatch.setattr(adapt_module, "window_loss", loss)
    resumed = adaptation.run_one(_push_job(tmp_path, "resumed"))
    # Its minutes time only the last session (and adapt's batches restart at the checkpoint): say so.
    assert resumed["resumed"] is True and resumed["steps"].keys() == whole["steps"].keys()
    runs = {("push", "action_agnostic", 0): resumed, ("push", "action_agnostic", 1): whole}
    assert adaptation.aggregate(runs, ["push"], [0, 1], {})["resumed_runs"] == 1


# ------------------------------------------------------------------------------------------ ppo_imagination
def _ppo_bundles(tmp_path: Path) -> Path:
    from adaworld_gym.models.adapters import ActionCodebook
    from adaworld_gym.models.bundle import tiny_random_bundle
    from adaworld_gym.sims.procgen import NUM_ACTIONS

    for i, game in enumerate(("coinrun", "chaser")):
        bundle = tiny_random_bundle("discrete", reward_head=True, seed=i)
        bundle = replace(
            bundle,
            adapter=ActionCodebook(NUM_ACTIONS, bundle.adapter.latent_dim),
            meta={"labelled_transitions": 32},
        )
        bundle.save_pretrained(tmp_path / "bundles" / f"procgen-{game}")
    return tmp_path / "bundles"


def test_ppo_imagination_resumes_finished_games(tmp_path, monkeypatch):
    from agents import ppo_imagination

    played, kill = [], {"chaser"}

    def run_game(game, bundle, p, seeds, out):
        played.append(game)
        (out / "tb" / game).mkdir(parents=True, exist_ok=True)
        (out / "tb" / game / f"curve_{len(played)}").write_text("")  # what SB3 would have logged
        if game in kill:
            raise KeyboardInterrupt("killed")
        row = {k: 1.0 for k in ("imagination", "real", "random")}
        return {**row, **{f"{k}_std": 0.0 for k in row}, "seeds": len(seeds)}

    monkeypatch.setattr(ppo_imagination, "run_game", run_game)
    monkeypatch.setattr(ppo_imagination, "vector_speedup", lambda *a: {"speedup": 2.0})
    out = tmp_path / "out"
    argv = ["--preset", "smoke", "--games", "coinrun", "chaser", "--seeds", "0"]
    argv += ["--bundles", str(_ppo_bundles(tmp_path)), "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        ppo_imagination.main(argv)
    kept = json.loads((out / "results.json").read_text())  # written after the first game
    assert list(kept["ppo"]) == ["coinrun"] and kept["complete"] is False

    played.clear()
    kill.clear()
    results = ppo_imagination.main(argv)
    assert played == ["chaser"] and results["reused"] == ["coinrun"] and results["complete"]
    assert "finished earlier" in (out / "results.md").read_text()
    # The killed game's partial curves are gone, so its rerun's take their names; the finished game's stay.
    assert [p.name for p in (out / "tb" / "chaser").iterdir()] == ["curve_1"]
    assert [p.name for p in (out / "tb" / "coinrun").iterdir()] == ["curve_1"]
    assert results["ppo"]["coinrun"] == kept["ppo"]["coinrun"]
    assert set(results["game_minutes"]) == {"coinrun", "chaser"}
    # Other seeds into the same --out: refused before any game is played, never mixed in.
    with pytest.raises(SystemExit, match=r"procgen-coinrun.json was computed with another"):
        ppo_imagination.main([*argv, "--seeds", "0", "1"])
    (out / "games" / "procgen-chaser.json").write_text('{"provenance"')
    with pytest.raises(SystemExit, match=r"cannot read game record .*procgen-chaser.json"):
        ppo_imagination.main(argv)
    assert played == ["chaser"]


def test_ppo_imagination_checks_every_bundle_before_the_first_game(tmp_path, monkeypatch):
    """A bundle without labelled_transitions stopped the run only when its game's turn came, hours in."""
    from adaworld_gym.models.bundle import AdaWorldBundle
    from agents import ppo_imagination

    bundles = _ppo_bundles(tmp_path)
    chaser = AdaWorldBundle.from_pretrained(bundles / "procgen-chaser")
    replace(chaser, meta={}).save_pretrained(bundles / "procgen-chaser")
    monkeypatch.setattr(ppo_imagination, "run_game", lambda *a: pytest.fail("a game ran"))
    monkeypatch.setattr(ppo_imagination, "vector_speedup", lambda *a: pytest.fail("the speed was measured"))
    argv = ["--preset", "smoke", "--games", "coinrun", "chaser", "--seeds", "0", "--bundles", str(bundles)]
    with pytest.raises(SystemExit, match=r"procgen-chaser bundle: meta\['labelled_transitions'\] is missing"):
        ppo_imagination.main([*argv, "--out", str(tmp_path / "out")])


# ---------------------------------------------------------------------------------------------- world_model
def test_synthetic_push_like_refuses_a_directory_of_other_settings(tmp_path):
    from benchmarks.world_model import synthetic_push_like

    synthetic_push_like(tmp_path, episodes=2, steps=6, seed=0)
    synthetic_push_like(tmp_path, episodes=3, steps=6, seed=0)  # more of the same: fine
    with pytest.raises(ValueError, match="collected with other settings"):
        synthetic_push_like(tmp_path, episodes=3, steps=24, seed=0)


def test_world_model_speed_only_names_an_unreadable_results_file(tmp_path):
    from benchmarks import world_model

    (tmp_path / "results.json").write_text('{"meta": ')
    args = world_model.Args(preset="smoke", out=tmp_path, speed_only=True)
    with pytest.raises(SystemExit, match=r"cannot read results file .*results.json"):
        world_model.main(args)
    (tmp_path / "results.json").write_text('{"meta": {}}')
    with pytest.raises(SystemExit, match="names no scored AdaWorld model"):
        world_model.main(args)


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
