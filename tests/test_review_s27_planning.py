"""Review (session 27) of the planners, the simulator oracle, the MPC loop and the planning benchmarks: each test
reproduces a bug found there."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_planning import GOAL, START, ToyDynamics, ToyEnv, position_of, render, toy_context
from test_planning_edge_cases import EDGE, Level, frame_at

from adaworld_gym.planning import CEMPlanner, MPPIPlanner, SimulatorDynamics, run_mpc_episode

pytestmark = pytest.mark.usefixtures("one_thread")


class _OneBuffer:
    """Mixin: every observation and render is written into one array that is handed out each time (gymnasium
    allows it; a caller that keeps a frame must copy it)."""

    def _out(self, frame: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_buffer"):
            self._buffer = np.empty_like(frame)
        self._buffer[...] = frame
        return self._buffer

    def reset(self, **kwargs):
        frame, info = super().reset(**kwargs)
        return self._out(frame), info

    def step(self, action):
        frame, *rest = super().step(action)
        return (self._out(frame), *rest)

    def render(self):
        return self._out(super().render())


class OneBufferLevel(_OneBuffer, Level):
    pass


class OneBufferToyEnv(_OneBuffer, ToyEnv):
    pass


def test_plan_refuses_a_negative_or_fractional_executed_count():
    planner = MPPIPlanner(ToyDynamics(), samples=8, horizon=4, seed=0)
    goal = render(GOAL)
    first = planner.plan(toy_context(), goal)
    # -1 silently dropped the warm start; 2.7 was truncated to 2.
    for bad in (-1, 2.7):
        with pytest.raises(ValueError, match="executed must be an int >= 0"):
            planner.plan(toy_context(), goal, executed=bad)
    # Valid counts still work: 0 warm-starts from the unshifted plan, a numpy integer is an int.
    seen = []
    planner._optimise = lambda dynamics, context, goal, state, previous: (seen.append(previous), (None, {}))[
        1
    ]
    with pytest.warns(RuntimeWarning, match="previous plan"):
        planner.plan(toy_context(), goal, executed=0)
    np.testing.assert_array_equal(seen[-1], first)
    with pytest.warns(RuntimeWarning):
        planner.plan(toy_context(), goal, executed=np.int64(1))
    np.testing.assert_array_equal(seen[-1][:-1], first[1:])


def test_discrete_cem_refuses_fractional_actions():
    from test_planning import DISCRETE

    dynamics = ToyDynamics(DISCRETE)
    # [1.5, 2.7] became actions [1, 2] and 2.9 became 2, without a word.
    with pytest.raises(ValueError, match="allowed_actions must be integers"):
        CEMPlanner(dynamics, allowed_actions=[1.5, 2.7])
    for bad in (2.9, True, [2]):
        with pytest.raises(ValueError, match="default_action"):
            CEMPlanner(dynamics, default_action=bad)
    assert (
        CEMPlanner(dynamics, allowed_actions=np.array([3, 1]), default_action=np.int64(2)).default_action == 2
    )
    assert CEMPlanner(dynamics, default_action=np.array(4)).default_action == 4


def test_the_oracle_holds_the_frame_before_termination_even_if_the_env_reuses_its_buffer():
    actions = np.array([[0, 2, 2, 0], [2, 0, 0, 0]])  # from EDGE - 4: completes on step 3 / never
    with SimulatorDynamics(OneBufferLevel, workers=0) as oracle:
        frames = oracle.rollout(None, actions, state=EDGE - 4)
        # From EDGE - 2: completes at once / walks left / completes at once.
        at_once = oracle.rollout(None, np.array([[2, 0], [1, 1], [2, 0]]), state=EDGE - 2)
    # Ends on its third step: the frame before it is held, not the next try's that the env wrote over it.
    expected = np.stack([frame_at(EDGE - 4), frame_at(EDGE - 2), frame_at(EDGE - 2), frame_at(EDGE - 2)])
    np.testing.assert_array_equal(frames[0], expected)
    np.testing.assert_array_equal(frames[1], np.stack([frame_at(EDGE - 2)] * 4))
    # Ends at once: the start frame is held for it, even after another candidate stepped the env.
    np.testing.assert_array_equal(at_once[0], np.stack([frame_at(EDGE - 2)] * 2))
    np.testing.assert_array_equal(at_once[1], np.stack([frame_at(EDGE - 4), frame_at(EDGE - 6)]))
    np.testing.assert_array_equal(at_once[2], np.stack([frame_at(EDGE - 2)] * 2))


def test_mpc_records_every_frame_even_if_the_env_reuses_its_buffer():
    def episode(env):
        planner = MPPIPlanner(ToyDynamics(), samples=16, horizon=4, seed=0)
        return run_mpc_episode(env, planner, None, render(GOAL), max_steps=4, state=START)

    reused, plain = episode(OneBufferToyEnv()), episode(ToyEnv())
    # Every recorded frame was the latest observation (the square's final position, five times).
    np.testing.assert_array_equal(reused.frames, plain.frames)
    np.testing.assert_allclose(position_of(reused.frames[0]), START)
    assert len({tuple(np.round(p, 3)) for p in position_of(reused.frames)}) == 5


def test_procgen_planning_refuses_negative_scene_and_seed_counts(tmp_path, monkeypatch):
    import benchmarks.procgen_planning as procgen_planning

    def no_search(*args, **kwargs):
        raise AssertionError("the scene search must not start")

    monkeypatch.setattr(procgen_planning, "find_scenes", no_search)
    # --scenes -1 reached find_scenes(n=-1), which kept every reachable level of max_candidates tried.
    for flag in ("--scenes", "--seeds"):
        args = procgen_planning.parse_args(
            ["--preset", "smoke", flag, "-1", "--games", "maze", "--out", str(tmp_path / "out")]
        )
        with pytest.raises(SystemExit, match="must be >= 0"):
            procgen_planning.main(args)


def test_pool_planning_names_a_results_file_of_another_benchmark(tmp_path):
    from benchmarks.pool_planning import main

    vp2 = {"success": {"oracle": 0.2}, "per_task": {}, "meta": {"seed": 0, "complete": True, "preset": "cpu"}}
    path = tmp_path / "vp2.json"
    path.write_text(json.dumps(vp2))
    # This failed with a bare KeyError: 'game_list'.
    with pytest.raises(SystemExit, match=r"vp2\.json: not a results\.json of benchmarks\.procgen_planning"):
        main([str(path), "--out", str(tmp_path / "out")])
