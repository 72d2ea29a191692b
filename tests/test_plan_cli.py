"""``adaworld plan``: VP2 push tasks planned with the simulator oracle or an adapted bundle, GIF and summary."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

import adaworld_gym.plan as plan_module
from adaworld_gym import cli, defaults
from adaworld_gym.models.bundle import tiny_random_bundle
from adaworld_gym.planning import SimulatorDynamics
from adaworld_gym.sims.push import STATE_SIZE, SUCCESS_THRESHOLD

pytestmark = pytest.mark.usefixtures("one_thread")

SCALE, GAP = 3, 2  # save_gif's upscaling, side_by_side's gap


def panels_width(n: int) -> int:
    return (64 * n + GAP * (n - 1)) * SCALE


@pytest.fixture
def assets(tmp_path, monkeypatch):
    """An empty asset directory: no shipped bundle, whatever the installation holds."""
    path = tmp_path / "assets"
    path.mkdir()
    monkeypatch.setattr(defaults, "ASSETS", path)
    return path


def test_missing_bundles_and_bad_arguments_are_clear_errors(tmp_path, assets, capsys):
    out = tmp_path / "plan.gif"
    assert cli.main(["plan", "--model", "default", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no adapted RobosuitePush world-model bundle is shipped" in err
    assert str(assets / "bundles" / "robosuite-push") in err and "--model oracle" in err

    assert cli.main(["plan", "--model", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "bundle.json" in capsys.readouterr().err

    assert cli.main(["plan", "--env", "AdaWorld/Procgen-heist-v0", "--out", str(out)]) == 2
    assert "RobosuitePush-v0" in capsys.readouterr().err

    # A bundle adapted to another action space (Box(-1, 1, (2,))) is refused, naming the spaces.
    from adaworld_gym.models.bundle import tiny_random_bundle

    tiny_random_bundle("continuous").save_pretrained(tmp_path / "box2")
    assert cli.main(["plan", "--model", str(tmp_path / "box2"), "--out", str(out)]) == 2
    err = capsys.readouterr().err  # one line per space, not one float per dimension
    assert "action space Box(-1..1, shape (2,)), expected Box(-1..1, shape (4,))" in err
    assert "a bundle adapted to push" in err
    assert not out.exists()


def test_oracle_plans_from_the_real_state_with_the_simulator(tmp_path, monkeypatch):
    calls: list[tuple[np.ndarray, tuple[int, ...]]] = []

    class Recording(SimulatorDynamics):
        def rollout(self, context, actions, state=None):
            calls.append((np.array(state), np.shape(actions)))
            return super().rollout(context, actions, state)

    monkeypatch.setattr(plan_module, "SimulatorDynamics", Recording)
    result = plan_module.plan_push(
        tmp_path / "oracle.gif", model="oracle", task=1, samples=2, horizon=2, workers=0, progress=False
    )
    assert result.model == "oracle" and result.dynamics == "Recording"
    episode = result.result.episode
    # VP2's loop: one zero action, then 14 replans, each asking the simulator from the env's real state.
    assert episode.frames.shape == (16, 64, 64, 3) and episode.planned.tolist() == [False] + [True] * 14
    np.testing.assert_array_equal(episode.actions[0], np.zeros(4, np.float32))
    assert len(calls) == 14 and all(shape == (2, 2, 4) for _, shape in calls)
    for (state, _), real in zip(calls, episode.states[1:15], strict=True):
        assert state.shape == (STATE_SIZE,)
        np.testing.assert_array_equal(state, real)
    distances = result.result.distances
    assert len(distances) == 16 and result.best_distance == min(distances) <= distances[0]
    assert distances[0] > 0.08  # the task's demo moved an object that far
    assert result.success == (result.best_distance < SUCCESS_THRESHOLD)
    assert result.seconds_per_replan > 0
    gif = iio.imread(result.out)
    assert gif.shape[1:3] == (64 * SCALE, panels_width(2))  # goal | real
    # The right panel is the real episode (GIF palettes are lossy: compare loosely).
    real = gif[-1][::SCALE, (64 + GAP) * SCALE :: SCALE, :3].astype(int)
    assert np.abs(real - episode.frames[-1]).mean() < 8


def test_plan_can_start_a_task_at_contact(tmp_path, capsys):
    from adaworld_gym.sims.push import make_push_tasks

    result = plan_module.plan_push(
        tmp_path / "contact.gif",
        model="oracle",
        task_start="contact",
        samples=2,
        horizon=2,
        workers=0,
        steps=2,
        progress=False,
    )
    task = make_push_tasks(1, 0, start="contact")[0]
    np.testing.assert_array_equal(result.result.episode.states[0], task.init_state)
    assert cli.main(["plan", "--task-start", "home", "--out", str(tmp_path / "x.gif")]) == 2
    assert "--task-start" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--task-start"):
        plan_module.plan_push(tmp_path / "y.gif", task_start="home")


def test_default_bundle_plans_through_the_world_model(tmp_path, assets, capsys):
    tiny_random_bundle("continuous", seed=0, action_size=4).save_pretrained(
        assets / "bundles" / "robosuite-push"
    )
    out = tmp_path / "model.gif"
    argv = ["plan", "--model", "default", "--planner", "cem", "--samples", "3", "--horizon", "2"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(WorldModelDynamics)" in printed and "s per replan" in printed
    assert "best max object distance" in printed and "goal | real | imagined" in printed
    gif = iio.imread(out)
    assert gif.shape[1:3] == (64 * SCALE, panels_width(3))  # goal | real | imagined


def test_a_push_task_index_beyond_the_bound_is_refused_before_drawing_tasks(cli_main, capsys):
    # Before: --task 100000 drew 100,001 tasks one by one, about a second each.
    with pytest.raises(SystemExit) as stop:
        cli_main(["plan", "--model", "oracle", "--task", "100000", "--out", "p.gif"])
    assert stop.value.code == 2 and "a task index in 0..999" in capsys.readouterr().err
