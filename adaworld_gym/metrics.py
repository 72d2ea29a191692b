"""Image-quality metrics on uint8 frames.

PSNR is computed from the MSE pooled over the whole evaluation set (on [0, 255]): a next frame that
equals the last one has infinite per-image PSNR and would inflate a per-image mean for copy-last-frame.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_float(images: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # A flipped view (frames[..., ::-1] for BGR -> RGB, a reversed video) has negative strides, which torch
    # cannot wrap: such arrays are copied.
    x = torch.as_tensor(np.ascontiguousarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dtype != torch.uint8:
        raise ValueError(f"metrics take uint8 images, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"no images to compare (shape {tuple(x.shape)})")
    return x.to(dtype)


def mse_pooled(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Mean squared error on [0, 255] over every pixel of every image."""
    p, t = _as_float(pred), _as_float(target)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch: prediction {tuple(p.shape)} vs target {tuple(t.shape)}")
    return float(((p - t) ** 2).mean())


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of an MSE on [0, 255]; an MSE of 0 (identical images) gives a finite 148.13 dB (MSE floored
    at 1e-10), not infinity, so means and JSON files stay finite."""
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def psnr_pooled(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB from the pooled MSE of uint8 images ``[..., H, W, 3]``."""
    return psnr_from_mse(mse_pooled(pred, target))


SSIM_WINDOW = 11


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004, 11x11 Gaussian window, per channel) of uint8 images ``[N, H, W, 3]``."""
    p, t = _as_float(pred), _as_float(target)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch: prediction {tuple(p.shape)} vs target {tuple(t.shape)}")
    # The window is valid-only (no padding, as Wang et al.): smaller images or other channel counts reached
    # conv2d and failed there with a RuntimeError about kernel sizes or groups.
    if p.ndim < 3 or p.shape[-1] != 3 or min(p.shape[-3:-1]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim takes RGB images [..., H, W, 3] with H, W >= {SSIM_WINDOW}, got shape {tuple(p.shape)}"
        )
    p = p.reshape(-1, *p.shape[-3:]).permute(0, 3, 1, 2)
    t = t.reshape(-1, *t.shape[-3:]).permute(0, 3, 1, 2)
    window = _gaussian_window(SSIM_WINDOW).float()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for start in range(0, len(p), 256):  # chunks keep memory flat on large evaluation sets
        x, y = p[start : start + 256], t[start : start + 256]
        # Variances as E[x^2] - E[x]^2 cancel badly in float32 on bright, flat frames (8.8e-4 off in SSIM);
        # they do not change when each image's channel mean is taken off first, which keeps the terms small.
        # (float64 would be exact too, but its depthwise convolutions are ~40x slower on a CPU.)
        cx, cy = x.mean(dim=(2, 3), keepdim=True), y.mean(dim=(2, 3), keepdim=True)
        x, y = x - cx, y - cy
        mu_xc, mu_yc = F.conv2d(x, window, groups=3), F.conv2d(y, window, groups=3)
        var_x = F.conv2d(x * x, window, groups=3) - mu_xc**2
        var_y = F.conv2d(y * y, window, groups=3) - mu_yc**2
        cov = F.conv2d(x * y, window, groups=3) - mu_xc * mu_yc
        mu_x, mu_y = mu_xc + cx, mu_yc + cy
        s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        values.append(s.mean(dim=(1, 2, 3)))
    return float(torch.cat(values).mean())
