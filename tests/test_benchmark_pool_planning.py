"""benchmarks/pool_planning.py: pooled counts over seeds and the one-sided Fisher exact test."""

import copy
import json

import pytest

from benchmarks.pool_planning import fisher_greater, main


def test_fisher_exact_one_sided_known_values():
    assert fisher_greater(3, 4, 1, 4) == pytest.approx(17 / 70)  # Fisher's tea tasting: 0.2429
    assert fisher_greater(0, 5, 5, 5) == 1.0
    assert fisher_greater(5, 5, 0, 5) == pytest.approx(1 / 252)
    assert fisher_greater(26, 128, 12, 128) == pytest.approx(0.0107, abs=1e-4)  # scipy.stats.fisher_exact


def _run(seed, successes):
    rows = {m: [{"success": s} for s in flags] for m, flags in successes.items()}
    meta = {
        "seed": seed,
        "complete": True,
        "preset": "cpu",
        "scenes": 2,
        "game_list": ["maze"],
        "bundles": {},
    }
    return {"maze": {"per_episode": rows}, "meta": meta}


def test_pools_seeds_and_refuses_what_cannot_be_pooled(tmp_path):
    a = _run(0, {"adaworld": [True, False], "random": [False, False]})
    b = _run(1, {"adaworld": [True, True], "random": [True, False]})
    paths = []
    for i, run in enumerate((a, b)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(run))
    results = main([*map(str, paths), "--out", str(tmp_path / "out")])
    assert results["games"]["maze"] == {"adaworld": [3, 4], "random": [1, 4]}
    assert results["all"]["adaworld"]["per_seed"] == {"0": [1, 2], "1": [2, 2]}
    assert results["tests"]["adaworld_vs_random"]["ratio"] == 3.0
    assert "adaworld > random | 3.00x" in (tmp_path / "out" / "results.md").read_text()
    with pytest.raises(SystemExit, match="seed 0 is given twice"):
        main([str(paths[0]), str(paths[0]), "--out", str(tmp_path / "x")])
    other = copy.deepcopy(b)
    other["meta"]["scenes"] = 4
    paths[1].write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="another protocol"):
        main([*map(str, paths), "--out", str(tmp_path / "x")])


def test_a_model_missing_from_a_game_is_left_out(tmp_path):
    run = _run(0, {"adaworld": [True], "random": [False]})
    run["heist"] = {"per_episode": {"random": [{"success": True}]}}  # no adaworld episodes on heist
    run["meta"]["game_list"] = ["maze", "heist"]
    (tmp_path / "r.json").write_text(json.dumps(run))
    results = main([str(tmp_path / "r.json"), "--out", str(tmp_path / "out")])
    assert list(results["all"]) == ["random"] and results["meta"]["left_out"][:2] == ["oracle", "adaworld"]
    assert results["games"] == {"maze": {"random": [0, 1]}, "heist": {"random": [1, 1]}}


def test_a_ratio_with_no_success_below_is_null_in_strict_json(tmp_path):
    run = _run(0, {"adaworld": [True, False], "action_agnostic": [False, False], "random": [False, False]})
    (tmp_path / "r.json").write_text(json.dumps(run))
    results = main([str(tmp_path / "r.json"), "--out", str(tmp_path / "out")])
    assert results["tests"]["adaworld_vs_random"]["ratio"] is None
    text = (tmp_path / "out" / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))  # no NaN / Infinity
    assert "adaworld > random | — |" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.usefixtures("one_thread")
def test_pool_planning_names_a_results_file_of_another_benchmark(tmp_path):
    from benchmarks.pool_planning import main

    vp2 = {"success": {"oracle": 0.2}, "per_task": {}, "meta": {"seed": 0, "complete": True, "preset": "cpu"}}
    path = tmp_path / "vp2.json"
    path.write_text(json.dumps(vp2))
    # This failed with a bare KeyError: 'game_list'.
    with pytest.raises(SystemExit, match=r"vp2\.json: not a results\.json of benchmarks\.procgen_planning"):
        main([str(path), "--out", str(tmp_path / "out")])
