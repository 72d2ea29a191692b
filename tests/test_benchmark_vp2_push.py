"""benchmarks.vp2_push: the smoke preset writes results of the promised shape; missing bundles are skipped, not
invented."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from adaworld_gym.models.bundle import tiny_random_bundle
from benchmarks import vp2_push
from benchmarks.vp2_push import MODELS, Args, main, wilson

pytestmark = pytest.mark.usefixtures("one_thread")

KEYS = ("success", "mean_best_distance", "seconds_per_replan", "blind_replan_fraction")


def test_smoke_run_writes_results_and_gifs(tmp_path):
    out = tmp_path / "out"
    returned = main(Args(preset="smoke", seed=0, out=out))
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert {*KEYS, "n_tasks", "meta", "skipped", "per_task"} == set(results)
    assert results["n_tasks"] == 1 and results["meta"]["preset"] == "smoke" and results["meta"]["complete"]
    for key in KEYS:
        assert set(results[key]) == set(MODELS)
    for name in MODELS:
        assert 0.0 <= results["success"][name] <= 1.0
        (episode,) = results["per_task"][name]
        # Best over the visited states, the start included: never worse than where the task starts.
        assert 0.0 <= episode["best_distance"] <= episode["initial_distance"]
        assert results["mean_best_distance"][name] == episode["best_distance"]
        assert episode["success"] == (episode["best_distance"] < 0.05)
        assert episode["replans"] == 14  # 15 steps: one zero action, then a plan before every step
        assert 0 <= episode["blind_replans"] <= 14
        assert results["skipped"][name] is None
    # Every model starts from the same task.
    assert len({results["per_task"][name][0]["initial_distance"] for name in MODELS}) == 1
    for name in ("oracle", "adaworld", "action_agnostic"):
        assert results["seconds_per_replan"][name] > 0
    assert "random weights" in results["meta"]["bundles"]["adaworld"]
    assert results["blind_replan_fraction"]["random"] == 0  # no planner, nothing to be blind

    table = (out / "results.md").read_text()
    assert "| model | success |" in table and all(f"| {name} |" in table for name in MODELS)
    # goal | real for the oracle and random actions; goal | real | imagined for the learned models.
    for name, panels in (("oracle", 2), ("random", 2), ("adaworld", 3), ("action_agnostic", 3)):
        gif = iio.imread(out / f"{name}_task000.gif")
        assert gif.shape[1:3] == (192, (64 * panels + 2 * (panels - 1)) * 3), name


def test_models_without_a_bundle_are_skipped_with_a_reason(tmp_path, no_shipped_bundle):
    out = tmp_path / "out"
    results = main(Args(preset="cpu", tasks=1, models="random", out=out))
    saved = json.loads((out / "results.json").read_text())
    assert saved["n_tasks"] == 1
    for name in ("oracle", "adaworld", "action_agnostic"):
        assert all(saved[key][name] is None for key in KEYS)
        assert saved["per_task"][name] is None
    assert "not selected" in saved["skipped"]["oracle"]
    assert (
        "--adaworld" in saved["skipped"]["adaworld"]
        and str(no_shipped_bundle) in saved["skipped"]["adaworld"]
    )
    assert "--action-agnostic" in saved["skipped"]["action_agnostic"]
    assert 0.0 <= saved["success"]["random"] <= 1.0 and saved["skipped"]["random"] is None
    assert "skipped" in (out / "results.md").read_text()
    assert results["meta"]["complete"]


def test_the_planner_budget_can_be_set_and_is_recorded(tmp_path, no_shipped_bundle):
    results = main(Args(preset="smoke", samples=3, models="random", out=tmp_path / "out"))
    assert results["meta"]["samples"] == 3
    with pytest.raises(SystemExit, match="--samples"):
        main(Args(preset="smoke", samples=-1, out=tmp_path / "bad"))


def test_the_task_start_is_chosen_recorded_and_kept_apart(tmp_path, no_shipped_bundle):
    from adaworld_gym.sims.push import make_push_tasks, push_tasks_digest

    approach = main(Args(preset="smoke", models="random", out=tmp_path / "approach"))
    contact = main(Args(preset="smoke", models="random", task_start="contact", out=tmp_path / "contact"))
    assert contact["meta"]["task_start"] == "contact"
    assert contact["meta"]["task_digest"] == push_tasks_digest(make_push_tasks(1, 0, start="contact"))
    assert contact["meta"]["task_digest"] != approach["meta"]["task_digest"]
    assert 'make_push_tasks(1, 0, start="contact")' in (tmp_path / "contact" / "results.md").read_text()
    assert "make_push_tasks(1, 0)," in (tmp_path / "approach" / "results.md").read_text()
    # Results on the other tasks are never taken over.
    with pytest.raises(SystemExit, match="task_digest"):
        main(
            Args(
                preset="smoke",
                models="random",
                reuse=[tmp_path / "approach"],
                task_start="contact",
                out=tmp_path / "mixed",
            )
        )
    with pytest.raises(SystemExit, match="--task-start"):
        main(Args(preset="smoke", task_start="home", out=tmp_path / "bad"))


def test_bundles_of_the_wrong_kind_are_refused(tmp_path: Path):
    tiny_random_bundle("continuous", seed=0, action_size=4, action_agnostic=True).save_pretrained(
        tmp_path / "twin"
    )
    with pytest.raises(SystemExit, match="latent-action-conditioned"):
        main(Args(preset="cpu", adaworld=str(tmp_path / "twin"), out=tmp_path / "out"))
    with pytest.raises(SystemExit, match="unknown model"):
        main(Args(preset="smoke", models="oracle,mystery", out=tmp_path / "out"))


def test_finished_models_are_taken_over_not_run_again(tmp_path, monkeypatch):
    # ``random`` stands for any model here: it is the cheap one, and the bookkeeping is the same for all.
    first, second = tmp_path / "first", tmp_path / "second"
    main(Args(preset="smoke", seed=0, models="random", out=first))
    calls: list[str] = []
    evaluate = vp2_push.evaluate_model
    monkeypatch.setattr(vp2_push, "evaluate_model", lambda name, *a: calls.append(name) or evaluate(name, *a))

    results = main(Args(preset="smoke", seed=0, models="random", out=second, reuse=[first]))
    assert calls == []
    earlier = json.loads((first / "results.json").read_text())
    assert results["per_task"]["random"] == earlier["per_task"]["random"]
    assert results["success"]["random"] == earlier["success"]["random"]
    assert results["meta"]["reused"] == {"random": str(first)}
    assert results["meta"]["model_minutes"]["random"] == earlier["meta"]["model_minutes"]["random"] > 0
    assert (second / "random_task000.gif").is_file() and "taken over" in (second / "results.md").read_text()


def test_only_the_same_protocol_and_bundle_count_as_finished(tmp_path, capsys):
    protocol = {"preset": "cpu", "seed": 0, "tasks": 2, "samples": 32}
    rows = [{"task": 0, "success": True}, {"task": 1, "success": False}]
    bundles = {"adaworld": "A", "action_agnostic": "T"}
    earlier = {
        "meta": {
            **protocol,
            "bundles": bundles,
            "model_minutes": {"oracle": 3.0},
            "reused": {"adaworld": "elsewhere"},
        },
        "per_task": {"oracle": rows, "adaworld": rows, "action_agnostic": rows[:1], "random": None},
    }
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    found = vp2_push.finished_models(tmp_path, protocol, bundles)
    # The twin's run is unfinished; a model the earlier run took over keeps the place where it ran.
    assert found == {"oracle": (rows, 3.0, str(tmp_path)), "adaworld": (rows, None, "elsewhere")}
    capsys.readouterr()
    assert set(vp2_push.finished_models(tmp_path, protocol, {**bundles, "adaworld": "B"})) == {"oracle"}
    assert "[adaworld] finished in" in capsys.readouterr().out  # not taken over, and it says so
    assert vp2_push.finished_models(tmp_path, {**protocol, "seed": 1}, bundles) == {}
    assert vp2_push.finished_models(tmp_path / "missing", protocol, bundles) == {}
    (tmp_path / "results.json").write_text("{not json")
    assert vp2_push.finished_models(tmp_path, protocol, bundles) == {}


def test_wilson_interval():
    z = 1.96
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(0, 10)[1] == pytest.approx(z**2 / (10 + z**2))  # the closed form at 0 successes
    for successes, n in ((5, 10), (3, 20), (18, 20)):
        low, high = wilson(successes, n)
        assert low < successes / n < high
        # Wilson's bounds are the rates p whose score test just fails: |phat - p| = z * sqrt(p (1 - p) / n).
        for p in (low, high):
            assert abs(successes / n - p) == pytest.approx(z * np.sqrt(p * (1 - p) / n))
