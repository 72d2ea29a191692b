"""The README's main job (``adaworld demo``) on the shipped defaults: every output written and sane."""

import json
import math

import imageio.v3 as iio

from adaworld_gym.demo import ENV_STEPS, run_demo


def test_demo_writes_every_output_on_the_shipped_defaults(tmp_path):
    summary = run_demo(tmp_path, seed=0)
    assert summary["lam"] == "shipped" and summary["world_model"] == "shipped"
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    for name in ("real.gif", "push_lam_reconstruction.gif", "transfer.gif", "imagined_vs_real.gif"):
        assert iio.imread(tmp_path / name).shape[0] > 1, name
    assert (tmp_path / "latent_actions.png").stat().st_size > 0
    # the shipped LAM explains the change: its reconstruction beats copying the last frame
    assert summary["lam_recon_psnr"] > summary["copy_last_psnr"]
    env = summary["gym_env"]
    assert env["env"] == "AdaWorld/WorldModel-Procgen-coinrun-v0" and 1 <= env["steps"] <= ENV_STEPS
    frames = iio.imread(tmp_path / "imagined_vs_real.gif")
    assert len(frames) == env["steps"] + 1  # the start frame, then one per step
    for key in ("psnr_vs_real_first_10", "copy_start_psnr_first_10", "vector_env_frames_per_second"):
        assert math.isfinite(env[key]) and env[key] > 0, key
    assert set(env["return"]) == {"real", "imagined"}


def test_demo_transfer_uses_the_longer_episode_and_fits_its_steps():
    """At seed 11 the first maze episode has 18 frames: the demo stopped with "fewer than steps=20"."""
    import numpy as np

    from adaworld_gym.data.episodes import Episode
    from adaworld_gym.demo import _transfer_clips

    def episode(n, value):
        return Episode(frames=np.full((n, 64, 64, 3), value, np.uint8))

    source, target = _transfer_clips([episode(18, 1), episode(61, 2)])
    assert source.shape == (21, 64, 64, 3) and (source == 2).all()
    assert target.shape == (1, 64, 64, 3) and (target == 1).all()
    source, target = _transfer_clips([episode(6, 1), episode(9, 2)])  # both short: as many steps as there are
    assert len(source) == 9 and (source == 2).all() and (target == 1).all()
    source, _ = _transfer_clips([episode(61, 1), episode(61, 2)])  # equal: the first, as at seed 0
    assert (source == 1).all()


def test_imagined_vs_real_when_the_real_game_ends_at_once(tmp_path, monkeypatch):
    import gymnasium

    from adaworld_gym import demo

    class EndsAtOnce(gymnasium.Wrapper):
        def step(self, action):
            obs, reward, _, truncated, info = self.env.step(action)
            return obs, reward, True, truncated, info

    make = gymnasium.make

    def make_real_ending(env_id, **kwargs):
        env = make(env_id, **kwargs)
        return EndsAtOnce(env) if env_id == f"AdaWorld/Procgen-{demo.ENV_GAME}-v0" else env

    monkeypatch.setattr(gymnasium, "make", make_real_ending)
    monkeypatch.setattr(demo, "_vector_env_fps", lambda env_id, seed: 1.0)
    env = demo._imagined_vs_real(tmp_path, seed=0)
    # No frames to compare: no figure (a NaN from an empty mean used to be written to summary.json)
    assert (
        env["steps"] == 0 and env["psnr_vs_real_first_10"] is None and env["copy_start_psnr_first_10"] is None
    )
