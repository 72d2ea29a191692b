"""benchmarks.imagined_events: event choice, the recall rule, and a smoke run on a tiny bundle."""

import json
from dataclasses import replace

import numpy as np
import pytest

from adaworld_gym.data.episodes import Episode
from adaworld_gym.models.adapters import ActionCodebook
from adaworld_gym.models.bundle import tiny_random_bundle
from adaworld_gym.sims.procgen import NUM_ACTIONS
from benchmarks.imagined_events import Args, choose_transitions, main, paid_events


def test_paid_events_needs_the_sign_and_half_the_reward():
    real = np.array([10.0, 10.0, 10.0, -1.0, -1.0])
    paid = np.array([5.0, 4.9, -6.0, -0.5, 0.6])
    np.testing.assert_array_equal(paid_events(paid, real), [True, False, False, True, False])


def test_events_come_with_the_real_frames_before_them():
    frames = np.arange(12, dtype=np.uint8)[:, None, None, None] * np.ones((1, 64, 64, 3), np.uint8)
    rewards = np.zeros(11, np.float32)
    rewards[[1, 5, 8]] = [1.0, 2.0, -1.0]  # the first has too little history for k=3
    episode = Episode(
        frames,
        actions=np.arange(11) % NUM_ACTIONS,
        rewards=rewards,
        action_space={"type": "discrete", "n": NUM_ACTIONS},
    )
    events, others = choose_transitions([episode], k=3, max_events=8, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(events.rewards, [2.0, -1.0])
    np.testing.assert_array_equal(events.context[:, :, 0, 0, 0], [[3, 4, 5], [6, 7, 8]])  # frames t-2..t
    np.testing.assert_array_equal(events.next_frames[:, 0, 0, 0], [6, 9])
    np.testing.assert_array_equal(events.actions, [5, 8])
    assert len(others.rewards) == 2 and not others.rewards.any()  # as many non-events as events


def test_smoke_run_writes_results_and_skips_bundles_without_heads(tmp_path):
    bundle = tiny_random_bundle("discrete", reward_head=True)
    bundle = replace(bundle, adapter=ActionCodebook(NUM_ACTIONS, bundle.adapter.latent_dim))
    bundle.save_pretrained(tmp_path / "with" / "procgen-chaser")
    replace(bundle, reward_head=None).save_pretrained(tmp_path / "without" / "procgen-chaser")
    args = Args(
        bundles=[f"head={tmp_path / 'with'}", f"nohead={tmp_path / 'without'}"],
        games="chaser",
        episodes=3,
        steps=60,
        max_events=4,
        out=tmp_path / "out",
    )
    results = main(args)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    row = on_disk["chaser"]
    assert row["skipped"] == {"nohead": "no reward head"}
    assert 1 <= row["events"] <= 4  # chaser pays for every orb, so random play meets some
    measured = row["bundles"]["head"]
    for key in ("recall", "recall_real_frames", "false_events", "false_events_real_frames"):
        assert 0.0 <= measured[key] <= 1.0
    assert measured["mean_paid"]["real_reward"] > 0
    assert results["chaser"]["events"] == row["events"]
    assert "chaser" in (tmp_path / "out" / "results.md").read_text()


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="max-events"):
        main(Args(max_events=0, out=tmp_path))
