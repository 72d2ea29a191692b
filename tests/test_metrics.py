import numpy as np
import pytest
from synthetic_data import random_frames

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
    empty = np.zeros((0, 16, 16, 3), np.uint8)
    for metric in (psnr_pooled, ssim):
        with pytest.raises(ValueError, match="no images to compare"):
            metric(empty, empty)


def test_psnr_of_identical_images_is_the_documented_cap():
    img = np.full((2, 8, 8, 3), 77, np.uint8)
    assert psnr_pooled(img, img) == pytest.approx(10 * np.log10(255**2 / 1e-10))


def test_ssim_refuses_images_its_window_cannot_cover_with_a_value_error():
    """8x8 images and greyscale [N, H, W, 1] failed inside conv2d with a RuntimeError."""
    with pytest.raises(ValueError, match="H, W >= 11"):
        ssim(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="RGB images"):
        ssim(np.zeros((1, 16, 16, 1), np.uint8), np.zeros((1, 16, 16, 1), np.uint8))
    single = np.random.default_rng(0).integers(
        0, 256, (11, 11, 3), dtype=np.uint8
    )  # one image, no batch axis
    assert ssim(single, single) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("bright", [False, True])
def test_ssim_matches_a_float64_reference(bright):
    """Wang et al.'s SSIM: 11x11 Gaussian (sigma 1.5) window, valid region, C1/C2 for data range 255.

    Bright, nearly flat images (game backgrounds) were 8.8e-4 off when the variances were taken in float32."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    if bright:
        a = (252 - rng.integers(0, 3, (2, 64, 64, 3))).astype(np.uint8)
        b = (252 - rng.integers(0, 3, (2, 64, 64, 3))).astype(np.uint8)
    else:
        a = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
        b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    x, y = a.astype(np.float64), b.astype(np.float64)

    def blur(z):
        return gaussian_filter(z, sigma=(0, 1.5, 1.5, 0), truncate=3.5)[:, 5:-5, 5:-5]

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ref = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(b, a) == pytest.approx(ref.mean(), abs=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_metrics_take_flipped_array_views():
    """frames[..., ::-1] (BGR -> RGB) has negative strides, which torch.as_tensor refused."""
    a, b = random_frames((2, 32, 32, 3), 0), random_frames((2, 32, 32, 3), 1)
    assert psnr_pooled(a[::-1], b) == psnr_pooled(a[::-1].copy(), b)
    assert ssim(a[..., ::-1], b[..., ::-1]) == ssim(a[..., ::-1].copy(), b[..., ::-1].copy())
