"""Bundles from videos alone (`adaworld bundle`): k-means options or the latent itself, start frames, errors."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from synthetic_data import grid_episodes, save_tiny_models

import adaworld_gym  # noqa: F401  (registers the ids)
from adaworld_gym.cli import main as cli_main
from adaworld_gym.data.episodes import EpisodeStore
from adaworld_gym.latent import sample_latents, save_options
from adaworld_gym.latent_bundle import build_latent_bundle, start_frames
from adaworld_gym.models.bundle import AdaWorldBundle, tiny_random_bundle
from adaworld_gym.models.reward import RewardHead

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny LAM (with 3 control options), its world model, the twin, and two folders of episodes."""
    root = tmp_path_factory.mktemp("models")
    _, _, bundle = save_tiny_models(root)
    tiny_random_bundle("latent", seed=1, action_agnostic=True).world_model.save_pretrained(root / "twin")
    save_options(root / "lam", np.random.default_rng(0).normal(size=(3, bundle.lam.config.latent_dim)))
    grid_episodes(root / "a", episodes=3)
    grid_episodes(root / "b", episodes=2, seed=1)
    return root


def test_start_frames_take_the_first_frame_of_each_subset_in_turn(models):
    a, b = EpisodeStore(models / "a" / "grid"), EpisodeStore(models / "b" / "grid")
    firsts = [s.read(n).frames[0] for s, n in [(a, "ep_000000"), (b, "ep_000000"), (a, "ep_000001")]]
    frames = start_frames([models / "a", models / "b"], n=3)
    assert frames.shape == (3, 1, 64, 64, 3)
    np.testing.assert_array_equal(frames[:, 0], np.stack(firsts))
    assert len(start_frames([models / "a", models / "b"], n=99)) == 5  # every episode once
    with pytest.raises(ValueError, match="data directory not found"):
        start_frames([models / "missing"])


def test_cli_builds_an_options_bundle_and_a_latent_bundle_that_envs_step(models, tmp_path, capsys):
    common = ["bundle", "--lam", str(models / "lam"), "--model", str(models / "wm")]
    common += ["--data", str(models / "a"), str(models / "b")]
    assert cli_main([*common, "--starts", "4", "--out", str(tmp_path / "options")]) == 0
    assert "bundle saved to" in capsys.readouterr().out
    env = gymnasium.make("AdaWorld/WorldModel-v0", bundle=str(tmp_path / "options"), denoise_steps=1)
    assert env.action_space == spaces.Discrete(3)
    env.reset(seed=0)
    assert env.step(2)[0].shape == (64, 64, 3)
    assert env.unwrapped.bundle.initial_frames.shape == (4, 1, 64, 64, 3)

    assert cli_main([*common, "--actions", "latent", "--out", str(tmp_path / "latent")]) == 0
    bundle = AdaWorldBundle.from_pretrained(tmp_path / "latent")
    bound = float(bundle.action_space.high[0])
    mu = sample_latents(bundle.lam, [models / "a", models / "b"], 2000)[0]
    assert 0.98 <= np.mean(np.abs(mu) <= bound) < 1  # the 99th percentile of the data's |mu|
    assert cli_main([*common, "--actions", "latent", "--bound", "2.5", "--out", str(tmp_path / "b25")]) == 0
    assert AdaWorldBundle.from_pretrained(tmp_path / "b25").action_space.high.tolist() == [2.5] * mu.shape[1]


def test_a_reward_head_is_attached(models, tmp_path):
    head = RewardHead(latent_dim=0, channels=(4, 4, 4, 4), hidden=8)
    head.save_pretrained(tmp_path / "head")
    out = build_latent_bundle(
        models / "lam", models / "wm", [models / "a"], tmp_path / "b", reward=tmp_path / "head"
    )
    assert AdaWorldBundle.from_pretrained(out).reward_head is not None


def test_bad_requests_are_refused_clearly(models, tmp_path, capsys):
    common = [
        "bundle",
        "--lam",
        str(models / "lam"),
        "--data",
        str(models / "a"),
        "--out",
        str(tmp_path / "x"),
    ]
    cases = [
        (["--model", str(models / "wm"), "--bound", "2"], "a bound applies to actions='latent' only"),
        (["--model", str(models / "wm"), "--actions", "latent", "--bound", "0"], "bound must be a finite"),
        (["--model", str(models / "twin")], "action-agnostic"),
        (["--model", str(models / "lam")], "not a DiffusionWorldModel"),
    ]
    for extra, message in cases:
        assert cli_main([*common, *extra]) == 2
        assert message in capsys.readouterr().err
    lam_without_options = tmp_path / "lam"
    tiny_random_bundle("latent", seed=1).lam.save_pretrained(lam_without_options)
    with pytest.raises(FileNotFoundError, match="run `adaworld cluster` first"):
        build_latent_bundle(lam_without_options, models / "wm", [models / "a"], tmp_path / "y")
    # A head of another frame size, or start frames of another size than the model's: nothing is written.
    RewardHead(latent_dim=0, image_size=32, channels=(4, 4, 4, 4), hidden=8).save_pretrained(tmp_path / "h32")
    with pytest.raises(ValueError, match="image_size 32 does not match"):
        build_latent_bundle(
            models / "lam", models / "wm", [models / "a"], tmp_path / "z", reward=tmp_path / "h32"
        )
    wm32, lam32, small = save_tiny_models(tmp_path / "m32", frame_size=32)
    save_options(lam32, np.zeros((2, small.lam.config.latent_dim)))
    with pytest.raises(ValueError, match="hold 64x64 frames, the world model makes 32x32 ones"):
        build_latent_bundle(lam32, wm32, [models / "a"], tmp_path / "w")
    for name in "xyzw":
        assert not (tmp_path / name).exists()
    # The LAM's own folder as --out: refused, not swapped out for the bundle (weights and options gone).
    assert cli_main(["bundle", "--lam", str(models / "lam"), "--model", str(models / "wm"), "--data",
                     str(models / "a"), "--out", str(models / "lam")]) == 2  # fmt: skip
    assert "cannot save a bundle to" in capsys.readouterr().err
    assert (models / "lam" / "config.json").is_file() and not (models / "lam" / "bundle.json").exists()
    with pytest.raises(ValueError, match="bound must be a finite number > 0, got True"):
        build_latent_bundle(
            models / "lam", models / "wm", [models / "a"], tmp_path / "v", actions="latent", bound=True
        )


def test_one_data_directory_may_be_given_as_a_path(models, tmp_path):
    """A str was read as a sequence of its characters, which the bundle's source note then listed."""
    build_latent_bundle(models / "lam", models / "wm", str(models / "a"), tmp_path / "b")
    source = AdaWorldBundle.from_pretrained(tmp_path / "b").meta["source"]
    assert source.endswith(f"start frames from {models / 'a'}")
