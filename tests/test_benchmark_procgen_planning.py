"""benchmarks.procgen_planning: scenes are really reachable, the oracle solves them, results have the promised
shape, missing bundles are skipped (not invented), and a seed fixes everything but the timings."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from adaworld_gym.planning import (
    ADAWORLD_COST,
    ADAWORLD_TIEBREAK_COST,
    PROCGEN_MOVE_ACTIONS,
    CEMPlanner,
    SimulatorDynamics,
    procgen_success,
    run_mpc_episode,
)
from benchmarks import procgen_planning
from benchmarks._common import check_bundle_kind
from benchmarks.procgen_planning import (
    MODELS,
    Args,
    find_scenes,
    finished_models,
    main,
    make_env,
    markdown_table,
    tiny_procgen_bundle,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SEARCH = dict(max_candidates=6, bfs_budget=300, rollouts=8)


@pytest.fixture(scope="module")
def maze_scene():
    (scene,), stats = find_scenes("maze", 1, seed=0, **SEARCH)
    return scene, stats


def test_found_scene_is_reachable_and_its_goal_is_the_frame_before_completion(maze_scene):
    scene, stats = maze_scene
    assert stats["found"] == 1 and stats["tried"] == stats["rejected"] + 1 <= SEARCH["max_candidates"]
    assert 2 <= len(scene.reaching_actions) <= 20 and set(scene.reaching_actions) <= set(PROCGEN_MOVE_ACTIONS)
    env = make_env("maze")
    try:
        frame, _ = env.reset(seed=scene.reset_seed, options={"level": scene.level, "state": scene.init_state})
        np.testing.assert_array_equal(frame, scene.start_frame)
        for i, action in enumerate(scene.reaching_actions):
            before = frame
            frame, _, terminated, _, info = env.step(action)
            assert terminated == (i == len(scene.reaching_actions) - 1)
        assert procgen_success(env, info)
        np.testing.assert_array_equal(before, scene.goal_image)
        assert not np.array_equal(scene.goal_image, scene.start_frame)
    finally:
        env.close()
    # The same seed finds the same scene.
    (again,), _ = find_scenes("maze", 1, seed=0, **SEARCH)
    assert (again.level, again.reaching_actions) == (scene.level, scene.reaching_actions)
    np.testing.assert_array_equal(again.init_state, scene.init_state)
    np.testing.assert_array_equal(again.goal_image, scene.goal_image)


def _oracle_episode(scene, cost, seed):
    env = make_env("maze")
    with SimulatorDynamics(lambda: make_env("maze"), workers=0) as oracle:
        planner = CEMPlanner(
            oracle, cost, allowed_actions=PROCGEN_MOVE_ACTIONS, seed=seed
        )  # 100 x 15, top 10
        episode = run_mpc_episode(
            env,
            planner,
            None,
            scene.goal_image,
            max_steps=20,
            replan_every=5,
            state=scene.init_state,
            reset_options={"level": scene.level},
            success_fn=procgen_success,
        )
    env.close()
    return episode


def test_oracle_with_the_papers_planner_completes_a_found_scene(maze_scene):
    scene, _ = maze_scene
    # The tie-break completes a short scene at once; the paper's plain score may wander off the goal frame
    # (a tie), but one of a few planner seeds completes it.
    episode = _oracle_episode(scene, ADAWORLD_TIEBREAK_COST, seed=0)
    assert episode.succeeded and len(episode.actions) <= len(scene.reaching_actions) + 2
    assert any(_oracle_episode(scene, ADAWORLD_COST, seed).succeeded for seed in range(3))


def test_smoke_run_writes_results_and_gifs(tmp_path):
    out = tmp_path / "out"
    returned = main(Args(preset="smoke", games="maze", out=out))
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert {"maze", "average", "n_scenes", "meta"} == set(results)
    assert results["n_scenes"] == {"maze": 1} and results["meta"]["complete"]
    maze = results["maze"]
    for key in ("success", "seconds_per_replan", "skipped", "per_episode"):
        assert set(maze[key]) == set(MODELS)
    assert maze["n_episodes"] == 1 and maze["scene_search"]["found"] == 1
    assert maze["scenes"][0]["reaching_steps"] >= 2
    for name in MODELS:
        assert maze["skipped"][name] is None
        assert maze["success"][name] in (0.0, 1.0)
        (episode,) = maze["per_episode"][name]
        assert episode["replans"] == -(-episode["steps"] // 5)  # a replan before every 5 executed steps
        assert set(episode["actions"]) <= set(PROCGEN_MOVE_ACTIONS)
        assert results["average"]["success"][name] == maze["success"][name]
    for name in ("oracle", "adaworld", "adaworld_zero_shot", "action_agnostic"):
        assert maze["seconds_per_replan"][name] > 0
    table = (out / "results.md").read_text()
    assert "| model | maze | avg |" in table and all(f"| {name} |" in table for name in MODELS)
    # goal | real for the oracle and random moves; goal | real | imagined for the learned models.
    for name, panels in (("oracle", 2), ("random", 2), ("adaworld", 3), ("action_agnostic", 3)):
        gif = iio.imread(out / f"maze_{name}_scene000_seed0.gif")
        assert gif.shape[2] == (64 * panels + 2 * (panels - 1)) * 3, name
    # Snapshots written while a later game has not been searched yet still make a table.
    partial = {**results, "heist": {**maze, "scene_search": None}}
    partial["meta"] = {**results["meta"], "game_list": ["maze", "heist"]}
    assert "scenes kept / test levels tried: maze 1/" in markdown_table(partial)


def test_models_without_a_bundle_are_skipped_with_a_reason(tmp_path, no_shipped_bundle):
    tiny_procgen_bundle(seed=0).save_pretrained(tmp_path / "tuned" / "procgen-maze")
    args = Args(preset="cpu", games="maze", scenes=1, models="random", out=tmp_path / "out")
    args.adaworld = str(tmp_path / "tuned")
    maze = main(args)["maze"]
    assert "not selected" in maze["skipped"]["oracle"] and "not selected" in maze["skipped"]["adaworld"]
    zero_shot = maze["skipped"]["adaworld_zero_shot"]  # defaults to the shipped bundle, absent here
    assert "--adaworld-zero-shot" in zero_shot and str(no_shipped_bundle) in zero_shot
    assert "--action-agnostic" in maze["skipped"]["action_agnostic"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    for name in ("oracle", "adaworld", "adaworld_zero_shot", "action_agnostic"):
        assert saved["maze"]["success"][name] is None and saved["maze"]["per_episode"][name] is None
        assert saved["average"]["success"][name] is None
    assert saved["maze"]["skipped"]["random"] is None and saved["maze"]["success"]["random"] in (0.0, 1.0)
    assert "Skipped:" in (tmp_path / "out" / "results.md").read_text()


def test_a_bundle_folder_given_for_a_model_that_runs_must_hold_that_games_bundle(tmp_path):
    from benchmarks.procgen_planning import bundle_dirs

    args = Args(preset="cpu", games="maze,heist", adaworld=str(tmp_path / "mine"))
    tiny_procgen_bundle(seed=0).save_pretrained(tmp_path / "mine" / "procgen-maze")
    with pytest.raises(SystemExit, match="--adaworld .*: no bundle for heist at .*procgen-heist"):
        bundle_dirs(args, ["maze", "heist"], tmp_path, models=["adaworld"])
    paths, skipped = bundle_dirs(args, ["maze", "heist"], tmp_path, models=["random"])  # not run: noted
    assert "no bundle at" in skipped["heist"]["adaworld"] and paths["maze"]["adaworld"].endswith(
        "procgen-maze"
    )

    other = tiny_procgen_bundle(seed=0)
    other.meta = {**other.meta, "env_id": "AdaWorld/Procgen-coinrun-v0"}
    other.save_pretrained(tmp_path / "mine" / "procgen-heist")
    with pytest.raises(
        SystemExit, match="adapted to AdaWorld/Procgen-coinrun-v0, not AdaWorld/Procgen-heist-v0"
    ):
        bundle_dirs(args, ["maze", "heist"], tmp_path, models=["random"])


def test_an_adapted_twin_is_recognised_by_what_it_was_pretrained_as():
    # adaworld adapt turns action conditioning on in the twin; the bundle records what it was pretrained as.
    adapted_twin = tiny_procgen_bundle(seed=0)
    adapted_twin.meta["pretrained_action_agnostic"] = True
    check_bundle_kind("action_agnostic", "twin", adapted_twin)
    with pytest.raises(SystemExit, match="expected a latent-action-conditioned world model"):
        check_bundle_kind("adaworld", "twin", adapted_twin)
    check_bundle_kind("adaworld", "ours", tiny_procgen_bundle(seed=0))


def test_bundles_of_the_wrong_kind_are_refused(tmp_path):
    tiny_procgen_bundle(seed=0, action_agnostic=True).save_pretrained(tmp_path / "twin" / "procgen-maze")
    with pytest.raises(SystemExit, match="latent-action-conditioned"):
        main(Args(preset="smoke", games="maze", adaworld=str(tmp_path / "twin"), out=tmp_path / "out"))
    with pytest.raises(SystemExit, match="unknown"):
        main(Args(preset="smoke", games="maze,pong", out=tmp_path / "out"))


def test_a_seed_fixes_everything_but_the_timings(tmp_path):
    runs = [
        main(
            Args(
                preset="smoke",
                games="maze",
                models="oracle,adaworld,random",
                seed=1,
                out=tmp_path / f"out{i}",
            )
        )
        for i in range(2)
    ]

    def fixed(run):
        return {
            name: [{k: v for k, v in e.items() if k != "seconds_per_replan"} for e in rows or []]
            for name, rows in run["maze"]["per_episode"].items()
        }

    assert fixed(runs[0]) == fixed(runs[1]) and runs[0]["maze"]["scenes"] == runs[1]["maze"]["scenes"]
    assert len(fixed(runs[0])["adaworld"]) == 1


def test_finished_episodes_are_taken_over_not_run_again(tmp_path, monkeypatch):
    # oracle and random stand for any model: they are the cheap ones, and the bookkeeping is the same for all.
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    main(Args(preset="smoke", games="maze", models="oracle", out=first))
    calls: list[str] = []
    evaluate = procgen_planning.evaluate_model
    monkeypatch.setattr(procgen_planning, "evaluate_model", lambda n, *a: calls.append(n) or evaluate(n, *a))

    merged = main(Args(preset="smoke", games="maze", models="oracle,random", out=second, reuse=[first]))
    assert calls == ["random"]  # the oracle was taken over, random had not run yet
    earlier = json.loads((first / "results.json").read_text())
    assert merged["maze"]["per_episode"]["oracle"] == earlier["maze"]["per_episode"]["oracle"]
    assert merged["meta"]["reused"] == {"maze": {"oracle": str(first)}}
    assert (
        merged["meta"]["model_minutes"]["maze"]["oracle"]
        == earlier["meta"]["model_minutes"]["maze"]["oracle"]
    )
    assert (second / "maze_oracle_scene000_seed0.gif").is_file()
    assert f"taken over: oracle from `{first}`" in (second / "results.md").read_text()

    # Episodes played on other scenes are not taken over.
    earlier["maze"]["scenes"][0]["level"] += 1
    (first / "results.json").write_text(json.dumps(earlier))
    calls.clear()
    main(Args(preset="smoke", games="maze", models="oracle", out=third, reuse=[first]))
    assert calls == ["oracle"]


def test_only_the_same_protocol_and_bundle_count_as_finished(tmp_path, capsys):
    protocol = {"preset": "cpu", "seed": 0, "scenes": 2, "cost": "adaworld"}
    rows = [{"scene": 0, "success": True}, {"scene": 1, "success": False}]
    scenes = [{"level": 9001}, {"level": 9002}]
    bundles = {"maze": {"adaworld": "A/procgen-maze"}, "heist": {"adaworld": "A/procgen-heist"}}
    per_episode = {"oracle": rows, "adaworld": rows, "random": rows[:1]}
    earlier = {
        "maze": {"n_episodes": 2, "scenes": scenes, "per_episode": per_episode},
        "heist": {"n_episodes": 2, "scenes": scenes, "per_episode": {"oracle": None}},
        "meta": {
            **protocol,
            "bundles": bundles,
            "model_minutes": {"maze": {"oracle": 3.0}},
            "reused": {"maze": {"adaworld": "elsewhere"}},
        },
    }
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    found = finished_models(tmp_path, protocol, bundles)
    # random's run is unfinished; a model the earlier run took over keeps the place where it ran.
    assert found == {
        "maze": {"oracle": (rows, scenes, 3.0, str(tmp_path)), "adaworld": (rows, scenes, None, "elsewhere")}
    }
    other_bundle = {**bundles, "maze": {"adaworld": "B/procgen-maze"}}
    capsys.readouterr()
    assert set(finished_models(tmp_path, protocol, other_bundle)["maze"]) == {"oracle"}
    assert "[maze/adaworld] finished in" in capsys.readouterr().out  # not taken over, and it says so
    assert finished_models(tmp_path, {**protocol, "seed": 1}, bundles) == {}
    assert finished_models(tmp_path / "missing", protocol, bundles) == {}
    (tmp_path / "results.json").write_text("{not json")
    assert finished_models(tmp_path, protocol, bundles) == {}


def _fake_scenes(game, n, seed, *args):
    blank = np.zeros((64, 64, 3), np.uint8)
    scene = procgen_planning.Scene(game, 9000, 1, np.zeros(1, np.uint8), blank, blank, (1, 2))
    return [scene], {"tried": 1, "rejected": 0, "found": 1, "seconds": 0.0}


def _fake_rows(name, game, scenes, p, args, bundle=None):
    return [{"scene": 0, "level": 9000, "planner_seed": 0, "success": True, "steps": 2, "actions": [1, 2],
             "seconds_per_replan": 0.1, "replans": 1}]  # fmt: skip


def test_snapshots_keep_every_finished_model_taken_over(tmp_path, monkeypatch):
    # Resumed with one more game in front: the snapshot written after it must still hold maze's earlier
    # episodes, which it is about to replace on disk.
    monkeypatch.setattr(procgen_planning, "find_scenes", _fake_scenes)
    monkeypatch.setattr(procgen_planning, "evaluate_model", _fake_rows)
    main(Args(preset="smoke", games="maze", models="random", out=tmp_path))
    snapshots: list[dict] = []
    write = procgen_planning.write_results
    monkeypatch.setattr(
        procgen_planning,
        "write_results",
        lambda out, r: snapshots.append(json.loads(json.dumps(r))) or write(out, r),
    )
    main(Args(preset="smoke", games="heist,maze", models="random", out=tmp_path))
    assert snapshots and all(s["maze"]["per_episode"]["random"] is not None for s in snapshots)
    assert snapshots[-1]["meta"]["reused"] == {"maze": {"random": str(tmp_path)}}


def test_a_reuse_directory_that_cannot_contribute_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(procgen_planning, "find_scenes", _fake_scenes)
    monkeypatch.setattr(procgen_planning, "evaluate_model", _fake_rows)
    first = tmp_path / "first"
    main(Args(preset="smoke", games="maze", models="random", out=first))
    with pytest.raises(SystemExit, match=r"--reuse .*seed 0 there, 1 now"):
        main(Args(preset="smoke", seed=1, games="maze", models="random", out=tmp_path / "b", reuse=[first]))
    with pytest.raises(SystemExit, match=r"--reuse .*no .*results.json"):
        main(
            Args(preset="smoke", games="maze", models="random", out=tmp_path / "c", reuse=[tmp_path / "none"])
        )
    (first / "results.json").write_text("{cut sh")
    with pytest.raises(SystemExit, match="cannot read results file"):
        main(Args(preset="smoke", games="maze", models="random", out=first))


def test_a_run_on_other_models_keeps_what_the_out_directory_holds(tmp_path, monkeypatch):
    """A run with --models random into the --out of an oracle run used to write null over the oracle's episodes."""
    import json

    from benchmarks import procgen_planning as pp

    blank = np.zeros((64, 64, 3), np.uint8)

    def scenes(game, *args):
        found = {"tried": 1, "rejected": 0, "found": 1, "seconds": 0.0}
        return [pp.Scene(game, 9000, 1, np.zeros(1, np.uint8), blank, blank, (1, 2))], found

    def rows(name, *args, **kwargs):
        return [{"scene": 0, "level": 9000, "planner_seed": 0, "success": True, "steps": 2, "actions": [1, 3],
                 "seconds_per_replan": 0.1, "replans": 1}]  # fmt: skip

    monkeypatch.setattr(pp, "find_scenes", scenes)
    monkeypatch.setattr(pp, "evaluate_model", rows)
    for models in ("oracle", "random"):
        pp.main(pp.Args(preset="smoke", games="maze", models=models, out=str(tmp_path)))
    kept = json.loads((tmp_path / "results.json").read_text())["maze"]["per_episode"]
    assert kept["oracle"] is not None and kept["random"] is not None


def test_a_run_on_other_models_keeps_a_learned_models_episodes_and_bundle(tmp_path, monkeypatch, capsys):
    """Without its bundle flag, a learned model not selected lost its episodes; with another bundle given, the run
    said it would run the model again and then did not."""
    monkeypatch.setattr(procgen_planning, "find_scenes", _fake_scenes)
    monkeypatch.setattr(procgen_planning, "evaluate_model", _fake_rows)
    for name in ("mine", "other"):
        tiny_procgen_bundle(seed=len(name)).save_pretrained(tmp_path / name / "procgen-maze")
    out = tmp_path / "out"
    first = main(
        Args(preset="smoke", games="maze", models="adaworld", adaworld=str(tmp_path / "mine"), out=out)
    )
    recorded = first["meta"]["bundles"]["maze"]["adaworld"]
    for adaworld in (None, str(tmp_path / "mine"), str(tmp_path / "other")):
        capsys.readouterr()
        again = main(Args(preset="smoke", games="maze", models="random", adaworld=adaworld, out=out))
        assert again["maze"]["per_episode"]["adaworld"] == first["maze"]["per_episode"]["adaworld"], adaworld
        assert again["meta"]["bundles"]["maze"].get("adaworld") == recorded
        assert "running it again" not in capsys.readouterr().out


def test_procgen_planning_refuses_negative_scene_and_seed_counts(tmp_path, monkeypatch):
    import benchmarks.procgen_planning as procgen_planning

    def no_search(*args, **kwargs):
        raise AssertionError("the scene search must not start")

    monkeypatch.setattr(procgen_planning, "find_scenes", no_search)
    # --scenes -1 reached find_scenes(n=-1), which kept every reachable level of max_candidates tried.
    for flag in ("--scenes", "--seeds"):
        argv = ["--preset", "smoke", flag, "-1", "--games", "maze", "--out", str(tmp_path / "out")]
        with pytest.raises(SystemExit) as parsed:  # the parser refuses it
            procgen_planning.parse_args(argv)
        assert parsed.value.code == 2
        args = procgen_planning.parse_args([*argv[:2], *argv[4:]])
        setattr(args, flag[2:], -1)  # and main, called from Python
        with pytest.raises(SystemExit, match="must be >= 0"):
            procgen_planning.main(args)
