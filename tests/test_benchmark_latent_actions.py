import json
import math
from dataclasses import replace

import numpy as np
import pytest

from adaworld_gym.data.episodes import EpisodeStore
from benchmarks.latent_actions import (
    PRESETS,
    PRETRAIN_GAMES,
    Args,
    ensure_data,
    main,
    probe_accuracy_within,
    shuffled_within_groups,
)


def test_smoke_run_writes_results(tmp_path):
    args = Args(
        preset="smoke",
        seed=0,
        seeds=1,
        out=tmp_path / "out",
        data=tmp_path / "data",
        regularizers="kl,vq",
        jobs=1,
    )
    main(args)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for reg in ("kl", "vq"):
        r = results[reg]
        for key in (
            "recon_psnr",
            "copy_psnr",
            "probe_acc_same",
            "probe_acc_cross",
            "probe_acc_within",
            "shuffled_z_psnr",
        ):
            assert isinstance(r[key], float) and math.isfinite(r[key]), key  # a NaN is a float too
        for key in ("probe_acc_same", "probe_acc_cross", "probe_acc_within"):
            assert 0.0 <= r[key] <= 1.0, key
        assert min(r["recon_psnr"], r["copy_psnr"], r["shuffled_z_psnr"]) > 0 and len(r["per_seed"]) == 1
        # one recon-minus-copy gain per held-out game
        gains = r["gain_by_game"]
        assert len(gains) >= 2 and all(isinstance(v, float) and math.isfinite(v) for v in gains.values())
    assert (
        0.0 <= results["reference"]["diff_probe_acc_within"] <= 1.0
    )  # the probe's accuracy on frame differences
    assert (tmp_path / "out" / "latents_kl.png").exists()
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| kl |" in table and f"| {next(iter(gains))} |" in table

    # Evaluation only: trained LAMs through --also, no training and no reference probe.
    kl_model = str(tmp_path / "out" / "runs" / "kl_seed0" / "model")
    only = tmp_path / "only"
    main(replace(args, regularizers="", also=kl_model, skip_reference=True, out=only))
    again = json.loads((only / "results.json").read_text())
    assert "kl" not in again and "reference" not in again
    assert again["also"][0]["recon_psnr"] == results["kl"]["recon_psnr"]  # same model, same sample
    assert f"| `{kl_model}` |" in (only / "results.md").read_text()


def test_within_group_probe_separates_informative_from_random_features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    groups = np.repeat([0, 1, 2], 100)
    # Each group encodes the label in a different feature: a per-group probe reads it, whatever the group.
    informative = rng.normal(size=(300, 4))
    informative[np.arange(300), groups] += 8.0 * (y - 1)
    noise = rng.normal(size=(300, 4))
    assert probe_accuracy_within(informative, y, groups, seed=0) > 0.9
    assert probe_accuracy_within(noise, y, groups, seed=0) < 0.55


def test_a_probe_trained_on_one_action_is_nan_not_a_crash():
    """The smoke preset's second seed drew a training half of one action: sklearn raised and the run died."""
    from benchmarks.latent_actions import probe_accuracy

    mu, y = np.random.default_rng(0).normal(size=(6, 2)), np.array([0, 0, 0, 1, 2, 1])
    train = np.array([True, True, True, False, False, False])
    assert np.isnan(probe_accuracy(mu, y, train, ~train))
    assert 0 <= probe_accuracy(mu, y, ~train | (np.arange(6) == 0), train) <= 1


def test_shuffled_z_never_keeps_a_transitions_own_latent():
    # shuffled_z_psnr decodes every transition with the z of *another* transition of its game: a fixed point
    # would hand it its own z (the old version left about one per group, and seed 5 kept a group of 3 as is).
    groups = np.repeat(np.arange(12), [1, 2, 3, 3, 5, 8, 13, 21, 50, 100, 200, 7])
    for seed in range(50):
        perm = shuffled_within_groups(groups, np.random.default_rng(seed))
        assert sorted(perm) == list(range(len(groups)))  # a permutation
        np.testing.assert_array_equal(groups[perm], groups)  # within each game
        alone = np.flatnonzero(groups == 0)  # a game with one transition has no other to take
        moved = np.setdiff1d(np.arange(len(groups)), alone)
        assert (perm[moved] != moved).all()


def test_a_hand_collected_set_with_other_settings_is_named_with_the_benchmarks_own(tmp_path):
    # The README's collection commands once made data/procgen-test at another episode length than the
    # benchmarks collect; the refusal now says what they collect and how to keep both.
    store = EpisodeStore(tmp_path / "procgen-train" / f"procgen-{PRETRAIN_GAMES[0]}", create=True)
    store.check_collection({"collector": "procgen", "steps": 200})
    p = PRESETS["cpu"]
    with pytest.raises(
        SystemExit, match=rf"other settings(.|\n)*Procgen with --steps {p['steps']}(.|\n)*--data ROOT"
    ):
        ensure_data(Args(data=tmp_path), p)
