"""benchmarks.controllability: the action spread measures what the actions change, and nothing else."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks._common import parse_bundles
from benchmarks.controllability import Args, action_spread, main, move_agreement
from benchmarks.procgen_planning import tiny_procgen_bundle

pytestmark = pytest.mark.usefixtures("one_thread")


def test_action_spread_is_the_mean_pairwise_rms_distance_per_step():
    frames = np.zeros((3, 2, 4, 4, 3), np.uint8)
    frames[1, 1] = 6  # candidate 1 differs from the others at step 1 only, by 6 everywhere
    # pairs (0,1), (0,2), (1,2): RMS 6, 0, 6 at step 1; nothing at step 0
    assert action_spread(frames) == pytest.approx([0.0, 4.0])
    with pytest.raises(ValueError, match="at least two actions"):
        action_spread(frames[:1])


def test_move_agreement_asks_whether_moves_differ_the_real_way_at_any_scale():
    real = np.full((1, 3, 1, 4, 4, 3), 100, np.uint8)
    real[0, 0, 0, 0], real[0, 1, 0, 1], real[0, 2, 0, 2] = 200, 200, 200  # each move lights up its own row
    assert move_agreement(real, real) == pytest.approx([1.0])
    timid = np.full_like(real, 100)
    timid[0, 0, 0, 0], timid[0, 1, 0, 1], timid[0, 2, 0, 2] = 110, 110, 110  # right rows, a tenth as bright
    assert move_agreement(timid, real) == pytest.approx([1.0])
    # Moves 0 and 1 imagined the wrong way round: pair (0, 1) reversed (-1), pairs (0, 2) and (1, 2) half right.
    assert move_agreement(real[:, [1, 0, 2]], real) == pytest.approx([0.0])
    assert move_agreement(np.full_like(real, 100), real) == pytest.approx([0.0])  # moves change nothing
    with pytest.raises(ValueError, match="differ in shape"):
        move_agreement(real[:, :2], real)


def test_models_that_ignore_the_action_have_no_spread(tmp_path):
    tiny_procgen_bundle(seed=0).save_pretrained(tmp_path / "tuned" / "procgen-maze")
    # A twin as pretrained (not adapted): its world model never reads z, so the four moves look the same.
    tiny_procgen_bundle(seed=0, action_agnostic=True).save_pretrained(tmp_path / "twin" / "procgen-maze")
    args = Args(
        bundles=[f"tuned={tmp_path / 'tuned'}", f"twin={tmp_path / 'twin'}", f"absent={tmp_path / 'none'}"],
        games="maze",
        states=2,
        horizon=2,
        out=tmp_path / "out",
    )
    results = main(args)
    maze = json.loads((tmp_path / "out" / "results.json").read_text())["maze"]
    assert maze == json.loads(json.dumps(results["maze"]))
    # RMS distances are never negative: the check is that the moves differ, in the game and in the tuned model.
    assert len(maze["real"]) == len(maze["tuned"]) == 2 and min(maze["real"] + maze["tuned"]) > 0
    assert maze["twin"] == [0.0, 0.0]
    assert set(maze["agreement"]) == {"tuned", "twin"}
    assert set(maze["true_z"]) == {"tuned"}  # the twin has no latent actions to be driven by
    assert all(-1 <= m <= 1 for m in maze["agreement"]["tuned"])
    assert -1 <= maze["true_z"]["tuned"]["lam_decoder_agreement"] <= 1
    assert "absent" in maze["skipped"] and "absent" not in maze
    assert "| maze |" in (tmp_path / "out" / "results.md").read_text()


def test_bad_bundle_arguments_are_refused():
    with pytest.raises(SystemExit, match="NAME=DIR"):
        parse_bundles(["just/a/path"])
    with pytest.raises(SystemExit, match="taken"):
        parse_bundles(["real=somewhere"])


def test_push_compares_unit_steps_of_the_end_effector(tmp_path):
    from adaworld_gym.models.bundle import tiny_random_bundle

    tiny_random_bundle("continuous", seed=0, action_size=4).save_pretrained(tmp_path / "b" / "robosuite-push")
    args = Args(bundles=[f"tiny={tmp_path / 'b'}"], games="push", states=1, horizon=1, out=tmp_path / "out")
    results = main(args)
    assert len(results["meta"]["actions"]["push"]) == 6  # +-x, +-y, +-z
    assert results["push"]["real"][0] > 0  # the arm moves differently under each step
    assert len(results["push"]["tiny"]) == 1 and results["push"]["skipped"] == {}


@pytest.mark.parametrize("name", ["agreement", "true_z", "skipped"])
def test_controllability_refuses_model_names_that_are_row_keys(tmp_path, name):
    # Before: a model named "skipped" was overwritten by the skipped list (then KeyError in the table), one named
    # "agreement" or "true_z" raised TypeError, both after the simulator and model rollouts.
    from benchmarks.controllability import Args, main

    with pytest.raises(SystemExit, match=f"the name '{name}' is taken"):
        main(Args(bundles=[f"{name}={tmp_path}"], games="maze", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
