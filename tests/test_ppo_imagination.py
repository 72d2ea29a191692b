"""agents/ppo_imagination.py on a tiny random bundle: the results file has the documented shape."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from adaworld_gym.models.adapters import ActionCodebook
from adaworld_gym.models.bundle import tiny_random_bundle
from adaworld_gym.sims.procgen import NUM_ACTIONS
from agents import ppo_imagination


def _procgen_bundle(tmp_path, game, meta):
    bundle = tiny_random_bundle("discrete", reward_head=True)
    bundle = replace(bundle, adapter=ActionCodebook(NUM_ACTIONS, bundle.adapter.latent_dim), meta=meta)
    bundle.save_pretrained(tmp_path / "bundles" / f"procgen-{game}")
    return tmp_path / "bundles"


def test_smoke_run_writes_results_and_records_skipped_games(tmp_path):
    bundles = _procgen_bundle(tmp_path, "coinrun", {"labelled_transitions": 32})
    out = tmp_path / "out"
    argv = ["--preset", "smoke", "--games", "coinrun", "chaser", "--seeds", "0", "--bundles", str(bundles)]
    results = ppo_imagination.main(
        [*argv, "--imagination-steps", "96", "--denoise-steps", "2", "--out", str(out)]
    )

    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["ppo"].keys() == {"coinrun"}
    assert "chaser" in on_disk["skipped"]
    row = on_disk["ppo"]["coinrun"]
    for key in ("imagination", "real", "random"):
        assert np.isfinite(row[key])
    assert row["seeds"] == 1 and row["real_frames"] == 32 and row["real_frames_seen"] >= 32
    assert row["imagination_frames"] == on_disk["settings"]["imagination_steps"] == 96  # the preset's is 64
    assert on_disk["settings"]["denoise_steps"] == 2  # the preset's is 1
    assert on_disk["vector_speedup_n16"] == pytest.approx(results["vector_speedup_n16"])
    assert on_disk["vector_speedup_n16"] > 0
    # the speed figure and the game times name the machine and thread count they were measured with
    assert on_disk["threads"] == 1 and on_disk["machine"]["cpu"] and on_disk["machine"]["cpu_count"] >= 1
    assert "coinrun" in (out / "results.md").read_text()
    runs = {d.name: d for d in (out / "tb" / "coinrun").iterdir()}  # tensorboard logs of both PPO runs
    assert {"imagination_seed0_1", "real_seed0_1"} <= runs.keys()
    imagined = EventAccumulator(str(runs["imagination_seed0_1"]))
    imagined.Reload()
    assert "rollout/ep_rew_mean" in imagined.Tags()["scalars"]  # imagined episodes end at the horizon


def test_bundle_without_real_frame_count_is_rejected(tmp_path):
    bundles = _procgen_bundle(tmp_path, "coinrun", {})
    argv = ["--preset", "smoke", "--games", "coinrun", "--seeds", "0", "--bundles", str(bundles)]
    with pytest.raises(SystemExit, match="labelled_transitions"):  # before any game or speed measurement
        ppo_imagination.main([*argv, "--out", str(tmp_path / "out")])


@pytest.mark.parametrize(
    "flag, value",
    [("--denoise-steps", "9"), ("--denoise-steps", "-1"), ("--imagination-steps", "-5"), ("--horizon", "-2")],
)
def test_out_of_range_budgets_are_refused(tmp_path, flag, value):
    argv = ["--preset", "smoke", "--games", "coinrun", "--bundles", str(tmp_path), flag, value]
    with pytest.raises(SystemExit, match=flag):
        ppo_imagination.main([*argv, "--out", str(tmp_path / "out")])


def test_real_starts_are_windows_of_the_adaptation_episodes(tmp_path):
    bundles = _procgen_bundle(tmp_path, "coinrun", {"labelled_transitions": 30, "seed": 3})
    from adaworld_gym.models.bundle import AdaWorldBundle

    bundle = AdaWorldBundle.from_pretrained(bundles / "procgen-coinrun")
    contexts, real_frames = ppo_imagination.real_start_contexts("coinrun", bundle, tmp_path / "starts")
    k = bundle.world_model.config.num_history
    assert contexts.dtype == np.uint8 and contexts.shape[1:] == (k, 64, 64, 3)
    episodes = ppo_imagination.read_episodes(tmp_path / "starts" / "procgen-coinrun")
    assert real_frames == sum(e.num_transitions for e in episodes)
    assert len(contexts) == sum(len(e.frames) - k + 1 for e in episodes)
    first = episodes[0].frames
    np.testing.assert_array_equal(contexts[0], first[:k])  # consecutive frames, oldest first
    np.testing.assert_array_equal(contexts[1], first[1 : k + 1])
    again, _ = ppo_imagination.real_start_contexts("coinrun", bundle, tmp_path / "starts_again")
    np.testing.assert_array_equal(again, contexts)  # the bundle's seed fixes the collection


def test_smoke_run_with_real_starts_gives_the_real_agent_every_collected_frame(tmp_path):
    bundles = _procgen_bundle(tmp_path, "coinrun", {"labelled_transitions": 30, "seed": 0})
    out = tmp_path / "out"
    argv = ["--preset", "smoke", "--games", "coinrun", "--seeds", "0", "--bundles", str(bundles)]
    results = ppo_imagination.main([*argv, "--starts", "real", "--horizon", "5", "--out", str(out)])
    row = results["ppo"]["coinrun"]
    collected = sum(
        e.num_transitions for e in ppo_imagination.read_episodes(out / "starts" / "procgen-coinrun")
    )
    assert row["real_frames"] == collected > 30 and row["real_frames_seen"] >= collected
    assert row["start_contexts"] > 16  # the tiny bundle ships 16 one-frame starts
    assert results["settings"]["starts"] == "real" and results["settings"]["horizon"] == 5


def test_episode_windows_and_start_data_needing_real_starts(tmp_path):
    from adaworld_gym.data.episodes import Episode

    frames = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((1, 64, 64, 3), np.uint8)
    short = Episode(frames[:2], actions=np.zeros(1, np.int64))
    windows, transitions = ppo_imagination.episode_windows(
        [Episode(frames, actions=np.zeros(5, np.int64)), short], 3
    )
    np.testing.assert_array_equal(windows[:, :, 0, 0, 0], [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]])
    assert transitions == 6  # the short episode adds its transition but no window
    with pytest.raises(ValueError, match="3 frames"):
        ppo_imagination.episode_windows([short], 3)
    # A Procgen episode ending in a termination holds the next try's first frame last: no window reaches it.
    died = Episode(
        frames, actions=np.zeros(5, np.int64), terminations=np.eye(5, dtype=bool)[4],
        meta={"terminal_frame_is_reset": True},
    )  # fmt: skip
    windows, transitions = ppo_imagination.episode_windows([died], 3)
    np.testing.assert_array_equal(windows[:, :, 0, 0, 0], [[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    assert transitions == 5
    argv = [
        "--preset",
        "smoke",
        "--games",
        "coinrun",
        "--bundles",
        str(tmp_path),
        "--start-data",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit, match="--starts real"):
        ppo_imagination.main([*argv, "--out", str(tmp_path / "out")])


def test_provenance_names_the_start_episodes_not_just_their_path(tmp_path):
    from synthetic_data import grid_episodes

    bundles = _procgen_bundle(tmp_path, "coinrun", {"labelled_transitions": 32})
    p = replace(ppo_imagination.PRESETS["smoke"], starts="real", start_data=str(tmp_path / "data" / "{game}"))
    grid_episodes(tmp_path / "data" / "coinrun", episodes=2, seed=0)
    first = ppo_imagination.game_provenance("coinrun", bundles / "procgen-coinrun", p, [0])
    assert first == ppo_imagination.game_provenance("coinrun", bundles / "procgen-coinrun", p, [0])
    shutil.rmtree(tmp_path / "data" / "coinrun")
    grid_episodes(tmp_path / "data" / "coinrun", episodes=2, seed=1)  # recollected under the same path
    again = ppo_imagination.game_provenance("coinrun", bundles / "procgen-coinrun", p, [0])
    assert again["settings"] == first["settings"] and again["start_data"] != first["start_data"]


def test_bundles_must_be_a_folder_of_game_bundles(tmp_path):
    from adaworld_gym.models.bundle import tiny_random_bundle
    from agents.ppo_imagination import check_bundles_folder

    with pytest.raises(SystemExit, match=r"--bundles .*nowhere: not found"):
        check_bundles_folder(tmp_path / "nowhere")
    tiny_random_bundle("discrete").save_pretrained(tmp_path / "run" / "bundle")  # an adapt output
    for given in (tmp_path / "run", tmp_path / "run" / "bundle"):
        with pytest.raises(
            SystemExit, match=r"is one bundle; it takes a folder of them, one per game, named procgen-<game>"
        ):
            check_bundles_folder(given)
    check_bundles_folder(tmp_path)  # a folder of them (here: none yet) is fine
