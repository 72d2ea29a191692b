"""LatentActionModel: shapes, learning, save/load, numpy helpers and input validation (tiny CPU configs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaworld_gym.models import REGULARIZERS, LatentActionModel, lam_preset

MOVES = np.array([[0, 0], [-4, 0], [4, 0], [0, -4], [0, 4]])  # stay, up, down, left, right (pixels)


def moving_squares(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of uint8 frames [n, size, size, 3] with one coloured square moved by the action (int [n])."""
    rng = np.random.default_rng(seed)
    f_t = np.zeros((n, size, size, 3), np.uint8)
    f_t1 = np.zeros_like(f_t)
    actions = rng.integers(0, len(MOVES), n)
    side = size // 4
    for i in range(n):
        y, x = rng.integers(4, size - side - 4, 2)
        colour = rng.integers(80, 256, 3)
        dy, dx = MOVES[actions[i]]
        f_t[i, y : y + side, x : x + side] = colour
        f_t1[i, y + dy : y + dy + side, x + dx : x + dx + side] = colour
    return f_t, f_t1, actions


def tiny(regularizer: str = "kl", **kw) -> LatentActionModel:
    torch.manual_seed(0)
    return LatentActionModel(
        **{**lam_preset("tiny"), "image_size": 32, "patch_size": 8, **kw}, regularizer=regularizer
    )


def as_float(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    f_t, f_t1, _ = moving_squares(16)
    return as_float(f_t), as_float(f_t1)


def test_presets():
    for name in ("tiny", "small", "base"):
        cfg = lam_preset(name)
        assert cfg["preset"] == name and cfg["image_size"] == 64
    assert LatentActionModel(**lam_preset("tiny")).config.preset == "tiny"
    with pytest.raises(ValueError, match="unknown LAM preset"):
        lam_preset("huge")
    with pytest.raises(ValueError, match="unknown regularizer"):
        tiny("gumbel")


@pytest.mark.parametrize("regularizer", REGULARIZERS)
def test_forward_shapes(regularizer, pairs):
    model = tiny(regularizer)
    f_t, f_t1 = pairs
    out = model(f_t, f_t1)
    assert out.recon.shape == f_t1.shape
    assert 0 <= float(out.recon.detach().min()) and float(out.recon.detach().max()) <= 1
    assert out.mu.shape == out.z.shape == (16, 32)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert "mse" in out.losses
    expected = {"kl": {"kl"}, "vq": {"codebook", "commitment"}, "sparse": {"l1", "var", "cov"}, "none": set()}
    assert expected[regularizer] <= set(out.losses)
    out.loss.backward()
    if regularizer == "vq":
        assert out.codes.shape == (16,)
        torch.testing.assert_close(out.mu, model.codebook.weight[out.codes])
    model.eval()
    out_eval = model(f_t, f_t1)
    torch.testing.assert_close(out_eval.z, out_eval.mu)  # inference uses the mean, no sampling


@pytest.mark.parametrize("regularizer", REGULARIZERS)
def test_encode_gives_the_forward_mean_without_decoding(regularizer, pairs, monkeypatch):
    model = tiny(regularizer).eval()
    f_t, f_t1 = pairs
    with torch.no_grad():
        expected = model(f_t, f_t1).mu
    monkeypatch.setattr(model, "_decode", lambda *a: pytest.fail("encode ran the decoder"))
    assert torch.equal(model.encode(f_t, f_t1), expected)


def test_kl_training_samples_and_eval_is_deterministic(pairs):
    model = tiny("kl")
    f_t, f_t1 = pairs
    out = model(f_t, f_t1)
    assert not torch.allclose(out.z, out.mu)
    model.eval()
    torch.testing.assert_close(model(f_t, f_t1).recon, model(f_t, f_t1).recon)


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
def test_loss_decreases(regularizer, pairs):
    model = tiny(regularizer)
    f_t, f_t1 = pairs
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for i in range(30):
        ramp = min(1.0, (i + 1) / 20)  # the trainer's KL and posterior-noise warm-up
        out = model(f_t, f_t1, beta=model.config.beta * ramp, noise_scale=ramp)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(out.losses["mse"]))
    # The residual decoder starts as copy-last-frame (MSE 0.023 here); it must learn the moves from z.
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])


def _moving_squares(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright 8x8 square on a flat background moves 4 px in one of five directions (one is no-op)."""
    moves = np.array([[0, 0], [4, 0], [-4, 0], [0, 4], [0, -4]])
    f_t = np.ones((n, 3, 64, 64), np.float32) * rng.uniform(0.2, 0.4, (n, 3, 1, 1)).astype(np.float32)
    f_t1 = f_t.copy()
    for i, (x, y) in enumerate(rng.integers(8, 48, (n, 2))):
        dx, dy = moves[rng.integers(len(moves))]
        f_t[i, :, y : y + 8, x : x + 8] = 0.9
        f_t1[i, :, y + dy : y + dy + 8, x + dx : x + dx + 8] = 0.9
    return torch.from_numpy(f_t), torch.from_numpy(f_t1)


def test_latent_carries_the_motion(one_thread):
    """Regression: with the first architecture z collapsed to a constant even on this toy task.

    After a few hundred steps the decoder given z from the true pair must beat the decoder given the z of a
    different pair by a wide margin; were z ignored both PSNRs would be equal.
    """
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # The transformer path alone (no pixel head): that is where z used to die.
    model = LatentActionModel(**{**lam_preset("tiny"), "regularizer": "none", "pixel_channels": 0})
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4)
    for _ in range(800):
        loss = model(*_moving_squares(rng, 32)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    f_t, f_t1 = _moving_squares(rng, 256)
    model.eval()
    with torch.no_grad():
        mu = model(f_t, f_t1).mu
        own = -10 * torch.log10(F.mse_loss(model._decode(f_t, mu), f_t1))
        other = -10 * torch.log10(F.mse_loss(model._decode(f_t, mu.roll(1, dims=0)), f_t1))
    assert own > other + 1.0, (float(own), float(other))


def test_bf16_autocast_forward(pairs):
    model = tiny("kl")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*pairs)
    assert out.recon.dtype == torch.float32 and out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)


def test_warp_decoder_starts_near_a_copy_and_moves_by_the_chosen_shift(pairs, tmp_path):
    f_t, _ = pairs
    model = tiny("kl", warp=True, warp_range=8).eval()
    with torch.no_grad():
        start = model._decode(f_t, torch.randn(len(f_t), model.config.latent_dim))
        assert F.mse_loss(start, f_t) < 0.5 * F.mse_loss(f_t.roll(1, dims=-1), f_t)
        logits = torch.full((len(f_t), (32 // 8) ** 2, 2, 17), -30.0)
        logits[:, :, 0, 8 + 8] = logits[:, :, 1, 8 - 2] = 30.0  # output (y, x) shows input (y - 2, x + 8)
        moved = model._warp(f_t, logits.flatten(2))
        torch.testing.assert_close(moved[..., 2:, :24], f_t[..., :-2, 8:])
    model.save_pretrained(tmp_path)
    assert LatentActionModel.from_pretrained(tmp_path).config.warp_range == 8


def test_vq_dead_codes_are_reset(pairs):
    model = tiny("vq", dead_code_steps=3)
    f_t, f_t1 = pairs
    before = model.codebook.weight.detach().clone()
    for _ in range(4):
        model(f_t, f_t1)
    # Random init puts all encodings on very few codes; idle ones must have moved onto encodings.
    assert int(model.code_idle_steps.max()) < 3
    assert not torch.allclose(before, model.codebook.weight)


def test_same_seed_same_model(pairs):
    a, b = tiny(), tiny()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
def test_save_load_roundtrip(regularizer, pairs, tmp_path):
    model = tiny(regularizer).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = LatentActionModel.from_pretrained(tmp_path).eval()
    assert loaded.config.regularizer == regularizer and loaded.config.preset == "tiny"
    out_a, out_b = model(*pairs), loaded(*pairs)
    torch.testing.assert_close(out_a.recon, out_b.recon, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_a.mu, out_b.mu, atol=1e-5, rtol=0)


def test_from_pretrained_rejects_other_models(tmp_path):
    tiny().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["_class_name"] = "UNet2DModel"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mismatched checkpoint"):
        LatentActionModel.from_pretrained(tmp_path)


def test_encode_decode_numpy():
    model = tiny().eval()
    f_t, f_t1, _ = moving_squares(5)
    mu = model.encode(f_t, f_t1, chunk_size=2)  # chunking must not change the result
    assert isinstance(mu, np.ndarray) and mu.dtype == np.float32 and mu.shape == (5, 32)
    np.testing.assert_allclose(mu, model.encode(f_t, f_t1), atol=1e-5)
    np.testing.assert_allclose(mu, model.encode(np.stack([f_t, f_t1], axis=1)), atol=1e-5)
    assert model.encode(f_t[0], f_t1[0]).shape == (32,)
    assert model.encode(np.stack([f_t[0], f_t1[0]])).shape == (32,)

    pred = model.decode(f_t, mu, chunk_size=2)
    assert isinstance(pred, np.ndarray) and pred.dtype == np.uint8 and pred.shape == f_t.shape
    assert model.decode(f_t[0], mu[0]).shape == f_t[0].shape
    assert model.decode(f_t, mu[0]).shape == f_t.shape  # one action for every frame

    # Tensors in, tensors out; matches forward() in eval mode.
    mu_t = model.encode(as_float(f_t), as_float(f_t1))
    assert isinstance(mu_t, torch.Tensor)
    np.testing.assert_allclose(mu_t.numpy(), mu, atol=1e-5)
    recon = model.decode(as_float(f_t), mu_t)
    assert recon.shape == (5, 3, 32, 32) and recon.dtype == torch.float32
    torch.testing.assert_close(recon, model(as_float(f_t), as_float(f_t1)).recon)
    assert model.training is False


def test_helpers_keep_training_mode():
    model = tiny().train()
    f_t, f_t1, _ = moving_squares(2)
    model.encode(f_t, f_t1)
    assert model.training


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, a, b, z: m.encode(a[:, :16, :16], b[:, :16, :16]), "resolution"),
        (lambda m, a, b, z: m.encode(a.astype(np.float64), b.astype(np.float64)), "uint8"),
        (lambda m, a, b, z: m.encode(as_float(a) * 255, as_float(b) * 255), r"\[0, 1\]"),
        (lambda m, a, b, z: m.encode(a[0]), "single frame"),
        (lambda m, a, b, z: m.encode(a), "not a pair"),
        (lambda m, a, b, z: m.encode(a, b[:3]), "batch size mismatch"),
        (lambda m, a, b, z: m.encode(a[..., :1], b[..., :1]), "shape"),
        (lambda m, a, b, z: m.decode(a, z[:3]), "batch size mismatch"),
        (lambda m, a, b, z: m.decode(a, np.full_like(z, np.nan)), "NaN"),
        (lambda m, a, b, z: m.decode(a, z[:, :16]), "latent_dim"),
        (lambda m, a, b, z: m.decode(a, z.astype(np.int64)), "float"),
        (lambda m, a, b, z: m.decode(a.astype(np.float32) / 255, z), "uint8"),
        (lambda m, a, b, z: m.decode([[0]], z), "numpy array or a torch tensor"),
    ],
    ids=[
        "resolution",
        "float64-numpy",
        "float-out-of-range",
        "single-frame",
        "batch-of-single-frames",
        "batch-mismatch",
        "channels",
        "z-batch-mismatch",
        "z-nan",
        "z-dim",
        "z-dtype",
        "decode-float-numpy",
        "not-an-array",
    ],
)
def test_bad_inputs_raise(call, message):
    model = tiny()
    f_t, f_t1, _ = moving_squares(4)
    z = np.zeros((4, 32), np.float32)
    with pytest.raises(ValueError, match=message):
        call(model, f_t, f_t1, z)


def test_training_works_after_an_inference_mode_call(pairs):
    from adaworld_gym.models import latent_action

    latent_action._bilinear_upsampling_matrix.cache_clear()  # built first under inference mode, below
    model = tiny(warp=True)
    f_t, f_t1 = pairs
    with torch.inference_mode():
        model.eval()(f_t, f_t1)
    model.train()(f_t, f_t1).loss.backward()  # raised "Inference tensors cannot be saved for backward"


def test_a_float64_latent_beyond_float32_is_refused_by_decode():
    model = tiny().eval()
    with pytest.raises(ValueError, match="beyond float32's range"):
        model.decode(np.zeros((1, 32, 32, 3), np.uint8), np.full((1, 32), 1e39))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"pixel_channels": "abc"}, "pixel_channels must be an integer >= 0, got 'abc'"),
        ({"pixel_channels": -5}, "pixel_channels must be an integer >= 0, got -5"),
        ({"width": 1.5}, "width must be an integer >= 1, got 1.5"),
        ({"latent_dim": 0}, "latent_dim must be an integer >= 1, got 0"),
        ({"warp": "maybe"}, "warp must be true or false, got 'maybe'"),
        ({"beta": float("nan")}, "beta must be a finite number >= 0"),
        ({"width": 30, "num_heads": 4}, "width 30 is not divisible by num_heads 4"),
    ],
)
def test_lam_settings_of_the_wrong_type_or_range_are_named(setting, message):
    from adaworld_gym.models import LatentActionModel, lam_preset

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LatentActionModel(**{**lam_preset("tiny"), **setting})
