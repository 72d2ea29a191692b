"""benchmarks.push_reach: what VP2's first-replan candidates reach from each task start, in the simulator."""

from __future__ import annotations

import json

import pytest

from benchmarks.push_reach import MOVED, Args, main


def test_push_reach_scores_candidates_and_the_demo_per_start(tmp_path):
    out = tmp_path / "reach"
    results = main(Args(tasks=1, candidates=3, horizon=4, seed=0, out=out))
    assert json.loads((out / "results.json").read_text())["meta"]["starts"] == ["approach", "contact"]
    assert "| contact |" in (out / "results.md").read_text()
    digests = results["meta"]["task_digests"]
    assert digests["approach"] != digests["contact"]
    for start in ("approach", "contact"):
        (row,) = results[start]["per_task"]
        # Reaching the goal from more than 0.08 m away is moving an object closer.
        assert 0.0 <= row["reached"] <= row["moved_closer"] <= 1.0
        assert 0 <= row["demo_rank"] <= 3
        assert row["max_progress_m"] >= row["cheapest_progress_m"]
    # From the contact start the demo's own next actions push its object: progress within 4 steps.
    assert results["contact"]["per_task"][0]["demo_progress_m"] >= MOVED
    # Same demo entered earlier: the distance to the goal at the start is the same object layout's.
    assert results["contact"]["start_distance"] == pytest.approx(
        results["approach"]["start_distance"], abs=0.02
    )


def test_push_reach_refuses_an_unknown_start(tmp_path):
    with pytest.raises(SystemExit, match="--starts"):
        main(Args(tasks=1, starts="home", out=tmp_path / "x"))
