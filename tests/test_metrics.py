import numpy as np
import pytest

from adaworld_gym.metrics import psnr_pooled, ssim


def test_psnr_known_value():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = np.full((2, 8, 8, 3), 10, np.uint8)
    assert psnr_pooled(a, b) == pytest.approx(10 * np.log10(255**2 / 100))


def test_psnr_is_pooled_not_averaged():
    target = np.zeros((2, 8, 8, 3), np.uint8)
    pred = target.copy()
    pred[1] = 10  # one exact image, one off by 10: pooled MSE is 50
    assert psnr_pooled(pred, target) == pytest.approx(10 * np.log10(255**2 / 50))


def test_ssim_bounds_and_order():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-5)
    noisy = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(img + rng.normal(0, 60, img.shape), 0, 255).astype(np.uint8)
    assert 1.0 > ssim(noisy, img) > ssim(noisier, img) > -1.0


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="uint8"):
        psnr_pooled(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="shape mismatch"):
        ssim(np.zeros((1, 16, 16, 3), np.uint8), np.zeros((2, 16, 16, 3), np.uint8))
