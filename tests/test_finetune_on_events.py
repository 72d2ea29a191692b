"""scripts/finetune_on_events.py: the oversampled transition set."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from adaworld_gym.data.episodes import Episode

_spec = importlib.util.spec_from_file_location(
    "finetune_on_events", Path(__file__).parents[1] / "scripts" / "finetune_on_events.py"
)
finetune_on_events = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(finetune_on_events)


def _episode(rewards):
    n = len(rewards)
    frames = np.zeros((n + 1, 64, 64, 3), np.uint8)
    return Episode(frames, actions=np.zeros(n, np.int64), rewards=np.array(rewards, np.float32),
                   action_space={"type": "discrete", "n": 15})  # fmt: skip


def test_events_are_repeated_to_the_asked_share_and_everything_else_kept_once():
    episodes = [_episode([0, 0, 1, 0, 0, 0, 0, 0]), _episode([0] * 9 + [-1])]
    windows, counts = finetune_on_events.event_windows(episodes, event_share=0.5)
    assert counts["events"] == 2 and counts["transitions"] == 18
    rows = [tuple(r) for r in windows.index]
    assert set(rows) == {(0, t) for t in range(8)} | {(1, t) for t in range(10)}
    # The added copies make half the set: 2 events x r repeats = 0.5 * (18 + 2r), so r = 9, no fewer or more.
    assert counts["repeats"] == 9 and len(rows) == 18 + 2 * 9
    assert rows.count((0, 2)) == rows.count((1, 9)) == 1 + 9 and rows.count((0, 3)) == 1


def test_episodes_without_events_are_refused():
    with pytest.raises(SystemExit, match="no rewarded"):
        finetune_on_events.event_windows([_episode([0, 0, 0])], event_share=0.25)
