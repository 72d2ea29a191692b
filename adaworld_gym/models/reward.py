"""Reward and termination head: what the real environment would have paid, judged from a frame change.

:class:`RewardHead` is a small CNN over a pair (previous frame, next frame) of uint8 64x64 RGB frames, optionally
conditioned on the latent action ``z`` between them. It outputs a reward (regression) and a termination logit.
Inputs are the two frames and their difference (9 channels, scaled to [-1, 1]); four stride-2 convolutions bring
64x64 down to 4x4, and an MLP over the flattened features (and ``z``) gives the two outputs.

* The reward is regressed in units of ``reward_scale`` (set by the trainer to the largest absolute reward seen),
  so the network works on targets of order one whatever the game pays.
* ``terminated`` is ``sigmoid(logit) > termination_threshold``.

It is trained by :func:`adaworld_gym.training.reward.train_reward` on real rewards and terminations, and used by
the world-model environments when a bundle carries one (``AdaWorldBundle.reward_head``).

Example::

    >>> import numpy as np
    >>> head = RewardHead(channels=(8, 8, 8, 8), hidden=16)
    >>> frames = np.zeros((2, 64, 64, 3), np.uint8)
    >>> rewards, terminated, prob = head.predict(frames, frames)
    >>> rewards.dtype, terminated.dtype, prob.shape
    (dtype('float32'), dtype('bool'), (2,))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from adaworld_gym.models.loading import CheckedLoadingMixin

__all__ = ["RewardHead"]

FrameArray = np.ndarray | torch.Tensor


class RewardHead(CheckedLoadingMixin, ModelMixin, ConfigMixin):
    """Reward regression and termination logit from (previous frame, next frame[, latent action]).

    Args:
        image_size: frame height and width; must be divisible by ``2 ** len(channels)``.
        latent_dim: dimension of the latent action input; 0 = frames only.
        channels: output channels of the stride-2 convolutions (one halving of the resolution each).
        hidden: width of the MLP after the convolutions.
        reward_scale: the network predicts ``reward / reward_scale``; :meth:`predict` returns real units.
        termination_threshold: :meth:`predict` reports ``terminated`` when the probability exceeds it.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 64,
        latent_dim: int = 0,
        channels: Sequence[int] = (32, 64, 64, 64),
        hidden: int = 128,
        reward_scale: float = 1.0,
        termination_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or image_size % (2 ** len(channels)) or image_size < 2 ** len(channels):
            raise ValueError(
                f"image_size {image_size} must be a positive multiple of 2**len(channels) = {2 ** len(channels)}"
            )
        if latent_dim < 0 or hidden < 1 or not reward_scale > 0:
            raise ValueError(
                f"need latent_dim >= 0, hidden >= 1, reward_scale > 0; got {latent_dim}, {hidden}, {reward_scale}"
            )
        if not 0.0 < termination_threshold < 1.0:
            raise ValueError(f"termination_threshold must lie in (0, 1), got {termination_threshold}")
        layers: list[nn.Module] = []
        width = 9  # previous frame, next frame, their difference
        for c in channels:
            layers += [nn.Conv2d(width, c, kernel_size=4, stride=2, padding=1), nn.SiLU()]
            width = c
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        side = image_size // 2 ** len(channels)
        self.mlp = nn.Sequential(
            nn.Linear(width * side * side + latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2)
        )

    # ------------------------------------------------------------------ network
    def forward(
        self, prev: torch.Tensor, next_frame: torch.Tensor, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled reward and termination logit, each ``[B]``.

        Args:
            prev, next_frame: uint8 ``[B, H, W, 3]`` (channels last) or float ``[B, 3, H, W]`` in [-1, 1].
            z: float ``[B, latent_dim]`` when ``latent_dim > 0``, else None.
        """
        a, b = self._image(prev), self._image(next_frame)
        dtype = self.mlp[0].weight.dtype  # fp32 unless the head was cast (.to(torch.bfloat16))
        features = self.encoder(torch.cat([a, b, b - a], dim=1).to(dtype))
        d = self.config.latent_dim
        if d:
            if z is None or z.ndim != 2 or z.shape != (features.shape[0], d):
                got = None if z is None else tuple(z.shape)
                raise ValueError(f"this reward head takes latent actions z of shape [B, {d}], got {got}")
            features = torch.cat([features, z.to(features.device, dtype)], dim=1)
        elif z is not None:
            raise ValueError("this reward head was trained without latent actions; pass z=None")
        out = self.mlp(features)
        return out[:, 0], out[:, 1]

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        size = self.config.image_size
        if x.dtype == torch.uint8:
            if x.ndim != 4 or tuple(x.shape[1:]) != (size, size, 3):
                raise ValueError(f"uint8 frames must have shape [B, {size}, {size}, 3], got {tuple(x.shape)}")
            return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ValueError(f"float frames must have shape [B, 3, {size}, {size}], got {tuple(x.shape)}")
        return x.float()

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(
        self, prev: FrameArray, next_frame: FrameArray, z: FrameArray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rewards (float32, real units), ``terminated`` (bool) and termination probabilities, each ``[B]``.

        Args:
            prev, next_frame: uint8 ``[B, H, W, 3]`` numpy arrays or tensors.
            z: float ``[B, latent_dim]`` when the head takes latent actions.
        """
        prev_t, next_t = _tensor(prev, "prev"), _tensor(next_frame, "next_frame")
        if prev_t.dtype != torch.uint8 or next_t.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8, got {prev_t.dtype} and {next_t.dtype}")
        if prev_t.shape != next_t.shape:
            raise ValueError(
                f"prev and next_frame differ in shape: {tuple(prev_t.shape)} vs {tuple(next_t.shape)}"
            )
        z_t = None
        if z is not None:
            z_t = _tensor(z, "z")
            if not z_t.is_floating_point():
                raise ValueError(f"z must be floats, got {z_t.dtype}")
            z_t = z_t.float()  # checked after the cast: float64 beyond float32's range turns into inf there
            if not torch.isfinite(z_t).all():
                raise ValueError("z contains NaN or inf (or values beyond float32's range)")
        was_training = self.training
        self.eval()
        try:
            reward, logit = self(prev_t, next_t, z_t)
        finally:
            self.train(was_training)
        prob = torch.sigmoid(logit.float())
        rewards = (reward.float() * self.config.reward_scale).cpu().numpy().astype(np.float32)
        probs = prob.cpu().numpy().astype(np.float32)
        return rewards, probs > self.config.termination_threshold, probs


def _tensor(x: FrameArray, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        # Read-only arrays (np.load(mmap_mode="r")) are copied: torch.from_numpy warns about them.
        return torch.from_numpy(np.require(x, requirements=("C", "W")))
    if isinstance(x, torch.Tensor):
        return x
    raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
