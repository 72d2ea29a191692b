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
