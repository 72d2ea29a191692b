"""Regression tests for the session-27 review of models, metrics, transfer and GIF writing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from adaworld_gym.metrics import psnr_pooled, ssim
from adaworld_gym.models.adapters import ActionCodebook, ActionMLP, LatentPassthrough, load_adapter
from adaworld_gym.models.reward import RewardHead
from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset
from adaworld_gym.transfer import load_frames
from adaworld_gym.viz import save_gif

pytestmark = pytest.mark.usefixtures("one_thread")


def _uint8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _bf16_model(seed: int) -> DiffusionWorldModel:
    torch.manual_seed(seed)
    return DiffusionWorldModel(**world_model_preset("tiny"), num_history=2, action_dim=8).eval()


def test_a_world_model_built_under_inference_mode_samples_on_a_cpu():
    """Its tensors have no version counter: the bf16 sampling copy's cache key raised a RuntimeError."""
    hist, z = _uint8((2, 2, 64, 64, 3)), np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    reference = _bf16_model(3).predict_next(hist, z, steps=2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model = _bf16_model(3)
    assert model.config.autocast_dtype == "bfloat16"
    out = model.predict_next(hist, z, steps=2, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(out, reference)
    with torch.inference_mode():  # rewriting such weights is noticed, like any rewrite
        for p in model.unet.parameters():
            p.mul_(0.5)
    assert not np.array_equal(
        model.predict_next(hist, z, steps=2, generator=torch.Generator().manual_seed(0)), out
    )


def test_adapters_sized_with_numpy_integers_save_and_load(tmp_path):
    """A Gymnasium Discrete's n is a numpy int64: the adapter trained, then failed to save (JSON TypeError)."""
    space = spaces.Discrete(5)
    cases = [
        (ActionCodebook(space.n, np.int32(4), motion_dim=np.int64(0)), np.array([0, 4])),
        (ActionMLP(np.int64(2), np.int64(4), hidden=np.int64(6)), np.array([[0.5, -0.5]], np.float32)),
        (LatentPassthrough(np.int64(4)), np.zeros((1, 4), np.float32)),
    ]
    for i, (adapter, actions) in enumerate(cases):
        adapter.save_pretrained(tmp_path / str(i))
        loaded = load_adapter(tmp_path / str(i))
        assert loaded.action_space == adapter.action_space
        assert np.array_equal(loaded.to_latent(actions), adapter.to_latent(actions))
    assert type(ActionCodebook(space.n, 4).config()["num_actions"]) is int
    for bad in (3.0, True, "3"):
        with pytest.raises(ValueError, match="num_actions must be an integer"):
            ActionCodebook(bad, 4)


def test_metrics_take_flipped_array_views():
    """frames[..., ::-1] (BGR -> RGB) has negative strides, which torch.as_tensor refused."""
    a, b = _uint8((2, 32, 32, 3), 0), _uint8((2, 32, 32, 3), 1)
    assert psnr_pooled(a[::-1], b) == psnr_pooled(a[::-1].copy(), b)
    assert ssim(a[..., ::-1], b[..., ::-1]) == ssim(a[..., ::-1].copy(), b[..., ::-1].copy())


def test_save_gif_refuses_inputs_it_cannot_write(tmp_path):
    frames = _uint8((3, 8, 8, 3))
    out = save_gif(frames, tmp_path / "keep.gif", scale=1)
    before = out.read_bytes()
    # No frames wrote a 0-byte GIF over the old file; the others failed inside Pillow with other error types.
    bad = {
        "no frames": dict(frames=frames[:0]),
        "one channel": dict(frames=frames[..., :1]),
        "scale 0": dict(frames=frames, scale=0),
        "fractional scale": dict(frames=frames, scale=2.5),
        "fps too low for a GIF delay": dict(frames=frames, fps=1e-3),
    }
    for name, kwargs in bad.items():
        with pytest.raises(ValueError):
            save_gif(path=out, **{"scale": 1, **kwargs})
        assert out.read_bytes() == before, name
    save_gif(frames, tmp_path / "slowest.gif", fps=100 / 65535, scale=1)  # the longest delay a GIF holds


def test_load_frames_checks_the_frame_rate(tmp_path):
    video = save_gif(_uint8((6, 64, 64, 3)), tmp_path / "v.gif", fps=10, scale=1)
    assert len(load_frames(video, target_hz=5)) == 3 and len(load_frames(video, target_hz=None)) == 6
    for hz in (0, -5, float("nan"), float("inf")):  # 0: ZeroDivisionError; -5: every frame, silently
        with pytest.raises(ValueError, match="target_hz must be a positive number"):
            load_frames(video, target_hz=hz)


def test_reward_head_refuses_a_float64_latent_beyond_float32():
    """1e300 is finite in float64 but inf in float32: predict returned a NaN reward instead of an error."""
    torch.manual_seed(0)
    head = RewardHead(latent_dim=4, channels=(4, 4, 4, 4), hidden=8)
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    rewards, _, _ = head.predict(frames, frames, np.ones((1, 4)))
    assert np.isfinite(rewards).all()
    with pytest.raises(ValueError, match="beyond float32"):
        head.predict(frames, frames, np.full((1, 4), 1e300))


def test_a_config_field_of_the_wrong_type_names_the_config_file(tmp_path):
    """ "num_history": "four" failed with a bare TypeError from inside the constructor."""
    model = DiffusionWorldModel(**world_model_preset("tiny"))
    model.save_pretrained(tmp_path / "wm")
    config = tmp_path / "wm" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_history": "four"}))
    with pytest.raises(ValueError, match="config.json"):
        DiffusionWorldModel.from_pretrained(tmp_path / "wm")


def test_a_world_model_configured_with_numpy_numbers_saves_and_loads(tmp_path):
    """diffusers records constructor arguments as given; np.int64 ones failed in its JSON writer at save."""
    config = {**world_model_preset("tiny"), "num_history": np.int64(2), "sigma_data": np.float32(0.5)}
    config["block_out_channels"] = tuple(np.int64(c) for c in config["block_out_channels"])
    DiffusionWorldModel(**config).save_pretrained(tmp_path / "wm")
    loaded = DiffusionWorldModel.from_pretrained(tmp_path / "wm")
    assert loaded.config.num_history == 2 and type(loaded.config.num_history) is int
    assert list(loaded.config.block_out_channels) == [int(c) for c in config["block_out_channels"]]
