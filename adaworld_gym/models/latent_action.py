"""Latent action model (LAM): an autoencoder over frame pairs whose bottleneck is "the action".

AdaWorld (ICML 2025), section 1 of ``reference/adaworld.md``. The encoder is a spatio-temporal transformer over
the patches of (f_t, f_{t+1}) with one learnable action token per frame; the action token of f_{t+1} becomes
the latent action. The decoder sees only f_t plus the latent action and must reconstruct f_{t+1}, so the
bottleneck (a KL term by default) forces the latent to carry what changed, not the next frame itself.

Regularisers, all on the same architecture (``regularizer=``):

- ``"kl"``: beta-VAE, as in AdaWorld. Reparameterised sample in training, the mean at inference.
- ``"vq"``: Genie-style vector quantisation (8 codes by default), straight-through gradients, codebook +
  0.25 commitment loss, codes unused for ``dead_code_steps`` training steps are re-initialised from the
  current batch's encodings.
- ``"sparse"``: L1 on z plus VICReg-style variance and covariance terms over the batch
  ("Latent Action World Models In The Wild").
- ``"none"``: unconstrained deterministic z (an ablation; expect it to leak the next frame).

Images enter the public helpers (:meth:`LatentActionModel.encode`, :meth:`LatentActionModel.decode`) as uint8
``[B, H, W, 3]`` numpy arrays (or tensors); ``forward`` takes float tensors ``[B, 3, H, W]`` in [0, 1].
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from adaworld_gym.models.loading import CheckedLoadingMixin

REGULARIZERS: tuple[str, ...] = ("kl", "vq", "sparse", "none")

# Named model configurations. `tiny` is for tests (seconds); `small` trains on a 2-core CPU in about an hour;
# `base` is for one GPU. Training throughput (batch 32, AdamW, CPU seconds of one thread, AMX CPU):
#   tiny  0.10M params: fp32 ~1450 samples/s, bf16 ~1100 (too small for bf16 to pay off)
#   small 1.49M params: fp32 ~60 samples/s,   bf16 ~110  (patch 16 / width 256 / depth 4: 68; width 192: 54)
# Patch 8 (64 tokens per frame) is kept for small: patch 16 at 64 px leaves only 16 tokens per frame.
# What the trained presets share: 8x8 patches, the class defaults' heads, and the shifting decoder.
_FULL: dict[str, Any] = dict(image_size=64, patch_size=8, mlp_ratio=4.0, warp=True)
_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        image_size=64,
        patch_size=16,
        width=32,
        encoder_depth=1,
        decoder_depth=1,
        num_heads=2,
        mlp_ratio=2.0,
        pixel_channels=8,
        pixel_layers=2,
    ),
    "small": dict(_FULL, width=128, encoder_depth=3, decoder_depth=3, num_heads=4),
    "base": dict(_FULL, width=512, encoder_depth=8, decoder_depth=8, num_heads=8),
}
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def lam_preset(name: str) -> dict[str, Any]:
    """Model keyword arguments of a named preset (``tiny``, ``small``, ``base``), ready for ``LatentActionModel(**kw)``."""
    if name not in _PRESETS:
        raise ValueError(f"unknown LAM preset {name!r}; known presets: {', '.join(PRESETS)}")
    return {**_PRESETS[name], "preset": name}


@dataclass
class LatentActionOutput(BaseOutput):
    """What :meth:`LatentActionModel.forward` returns.

    Attributes:
        recon: predicted f_{t+1}, float ``[B, 3, H, W]`` in [0, 1].
        mu: the latent action ``[B, D]`` ("the action"): the posterior mean for ``kl``, the quantised code
            vector for ``vq``, the deterministic encoding for ``sparse``/``none``.
        z: the latent the decoder actually saw (a sample in ``kl`` training, else equal to ``mu``).
        loss: scalar training loss.
        losses: the individual loss terms (detached), e.g. ``{"mse", "kl"}``.
        codes: code indices ``[B]`` for ``vq``, else None.
    """

    # Defaults are None only so that BaseOutput can be rebuilt from a dict (accelerate does that when it
    # casts outputs back to fp32); forward() always fills recon, mu, z, loss and losses.
    recon: torch.Tensor = None  # type: ignore[assignment]
    mu: torch.Tensor = None  # type: ignore[assignment]
    z: torch.Tensor = None  # type: ignore[assignment]
    loss: torch.Tensor = None  # type: ignore[assignment]
    losses: dict[str, torch.Tensor] = None  # type: ignore[assignment]
    codes: torch.Tensor | None = None


class _Attention(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, L, C]
        n, length, c = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = _attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, c))


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if q.device.type == "cpu" and q.dtype != torch.float32:
        # PyTorch's CPU flash-attention kernel is ~5x slower in bf16 than fp32 (measured, backward pass);
        # plain bf16 matmuls with an fp32 softmax are fast on AMX CPUs.
        weights = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        return weights.float().softmax(dim=-1).to(v.dtype) @ v
    return F.scaled_dot_product_attention(q, k, v)


@functools.lru_cache(maxsize=8)
def _bilinear_upsampling_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """``[n_out, n_in]`` matrix U with ``U @ x @ U.T`` equal to ``F.interpolate(x, mode="bilinear")``."""
    # Cached for the process: built outside inference mode, or training after an inference_mode call would fail.
    with torch.inference_mode(False), torch.no_grad():
        eye = torch.eye(n_in, device=device).unsqueeze(1)
        return F.interpolate(eye, size=n_out, mode="linear", align_corners=False).squeeze(1).T.contiguous()


class _Mlp(nn.Sequential):
    def __init__(self, width: int, mlp_ratio: float) -> None:
        hidden = int(width * mlp_ratio)
        super().__init__(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class _SpatialBlock(nn.Module):
    """Pre-LN transformer block over the tokens of one frame."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(width), _Attention(width, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(width), _Mlp(width, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, L, C]
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _SpaceTimeBlock(nn.Module):
    """Spatial attention (within a frame), then temporal attention (same token, across frames), then MLP."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_s, self.attn_s = nn.LayerNorm(width), _Attention(width, num_heads)
        self.norm_t, self.attn_t = nn.LayerNorm(width), _Attention(width, num_heads)
        self.norm_m, self.mlp = nn.LayerNorm(width), _Mlp(width, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, L, C]
        b, t, length, c = x.shape
        s = x.reshape(b * t, length, c)
        s = s + self.attn_s(self.norm_s(s))
        tm = s.view(b, t, length, c).transpose(1, 2).reshape(b * length, t, c)
        tm = tm + self.attn_t(self.norm_t(tm))
        x = tm.view(b, length, t, c).transpose(1, 2)
        return x + self.mlp(self.norm_m(x))


class LatentActionModel(CheckedLoadingMixin, ModelMixin, ConfigMixin):
    """Latent action autoencoder over frame pairs (see the module docstring).

    Args:
        image_size: square frame size in pixels.
        patch_size: patch side; ``image_size`` must be divisible by it.
        in_channels: image channels (3).
        latent_dim: size of the latent action (32 in AdaWorld).
        width, encoder_depth, decoder_depth, num_heads, mlp_ratio: transformer sizes.
        regularizer: one of ``kl``, ``vq``, ``sparse``, ``none``.
        beta: KL weight for ``kl`` (AdaWorld: 2e-4).
        num_codes, commitment, dead_code_steps: ``vq`` settings.
        sparse_l1, sparse_var, sparse_cov: ``sparse`` term weights.
        residual: add f_t's logits to the decoder head before the sigmoid, so copying f_t is free and the
            decoder (and the latent) only has to model what changes. A small model cannot reproduce
            textured frames through a ``width``-wide token otherwise; AdaWorld's 500M-param decoder can.
        difference_input: also embed f_{t+1} - f_t into the tokens of f_{t+1}. At init the action token barely
            depends on the input; with the difference in hand the encoder finds the motion in ~200 steps
            instead of never (synthetic moving-square check, tiny preset).
        pixel_channels, pixel_layers: a small convolutional head at full resolution that refines the
            transformer's output from f_t's pixels, FiLM-conditioned on z. Tokens of ``width`` floats cannot
            carry an 8x8x3 patch's texture, so shifts (camera scrolls, the arm moving) need pixel-level
            convolutions; 0 channels disables it.
        film: condition every decoder block on z (scale and shift of the tokens), not only its input, so
            the decoder learns to use z before the optimiser learns to ignore it.
        warp, warp_range: the decoder also predicts, per token, a distribution over integer shifts of up to
            ``warp_range`` pixels along x and along y (upsampled bilinearly to every pixel) and replaces f_t
            by its expectation under those shifts before the residual and pixel heads, so a camera scroll or
            a moving arm is a few numbers rather than texture the tokens would have to redraw. A
            distribution rather than a regressed flow: bilinear sampling only gives gradients within a pixel
            of the current flow, and a regressed flow stalled below 1 px where the true scroll was 2-6 px.
            Starts near the identity.
        preset: name of the preset this config came from (recorded for provenance; not used otherwise).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        image_size: int = 64,
        patch_size: int = 8,
        in_channels: int = 3,
        latent_dim: int = 32,
        width: int = 128,
        encoder_depth: int = 3,
        decoder_depth: int = 3,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        regularizer: str = "kl",
        beta: float = 2e-5,
        num_codes: int = 8,
        commitment: float = 0.25,
        dead_code_steps: int = 50,
        sparse_l1: float = 1e-3,
        sparse_var: float = 1e-2,
        sparse_cov: float = 1e-2,
        residual: bool = True,
        difference_input: bool = True,
        film: bool = True,
        pixel_channels: int = 32,
        pixel_layers: int = 3,
        warp: bool = False,
        warp_range: int = 8,
        preset: str | None = None,
    ) -> None:
        super().__init__()
        _check_settings(
            positive=dict(
                image_size=image_size, patch_size=patch_size, in_channels=in_channels, latent_dim=latent_dim,
                width=width, decoder_depth=decoder_depth, num_heads=num_heads, num_codes=num_codes,
                dead_code_steps=dead_code_steps, warp_range=warp_range,
            ),
            non_negative=dict(encoder_depth=encoder_depth, pixel_channels=pixel_channels, pixel_layers=pixel_layers),
            weights=dict(
                mlp_ratio=mlp_ratio, beta=beta, commitment=commitment, sparse_l1=sparse_l1,
                sparse_var=sparse_var, sparse_cov=sparse_cov,
            ),
            flags=dict(residual=residual, difference_input=difference_input, film=film, warp=warp),
        )  # fmt: skip
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        if regularizer not in REGULARIZERS:
            raise ValueError(
                f"unknown regularizer {regularizer!r}; expected one of {', '.join(REGULARIZERS)}"
            )
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        num_patches = (image_size // patch_size) ** 2
        patch_dim = in_channels * patch_size**2

        # Encoder: both frames, one action token in front of each frame's patches.
        self.enc_patch = nn.Linear(patch_dim, width)
        if difference_input:
            self.enc_diff = nn.Linear(patch_dim, width)
        self.action_token = nn.Parameter(torch.zeros(1, 1, 1, width))
        self.enc_pos = nn.Parameter(torch.zeros(1, 1, num_patches + 1, width))
        self.enc_time = nn.Parameter(torch.zeros(1, 2, 1, width))
        self.enc_blocks = nn.ModuleList(
            [_SpaceTimeBlock(width, num_heads, mlp_ratio) for _ in range(encoder_depth)]
        )
        self.enc_norm = nn.LayerNorm(width)
        # KL needs (mu, logvar); the deterministic regularisers need one vector.
        self.to_latent = nn.Linear(width, 2 * latent_dim if regularizer == "kl" else latent_dim)
        if regularizer == "vq":
            self.codebook = nn.Embedding(num_codes, latent_dim)
            nn.init.uniform_(self.codebook.weight, -1.0 / num_codes, 1.0 / num_codes)
            # Training steps since each code was last chosen; persistent so a resumed run resets the same codes.
            self.register_buffer("code_idle_steps", torch.zeros(num_codes, dtype=torch.int64))

        # Decoder: patches of f_t only, the latent action added to every token.
        self.dec_patch = nn.Linear(patch_dim, width)
        self.dec_pos = nn.Parameter(torch.zeros(1, num_patches, width))
        self.dec_action = nn.Linear(latent_dim, width)
        self.dec_blocks = nn.ModuleList(
            [_SpatialBlock(width, num_heads, mlp_ratio) for _ in range(decoder_depth)]
        )
        self.dec_norm = nn.LayerNorm(width)
        self.dec_head = nn.Linear(width, patch_dim)

        self.apply(self._init_weights)
        if pixel_channels:
            self.pix_in = nn.Conv2d(2 * in_channels, pixel_channels, 3, padding=1)
            self.pix_convs = nn.ModuleList(
                [nn.Conv2d(pixel_channels, pixel_channels, 3, padding=1) for _ in range(pixel_layers)]
            )
            self.pix_film = nn.ModuleList(
                [nn.Linear(latent_dim, 2 * pixel_channels) for _ in range(pixel_layers)]
            )
            self.pix_out = nn.Conv2d(pixel_channels, in_channels, 3, padding=1)
            nn.init.zeros_(self.pix_out.weight)
            nn.init.zeros_(self.pix_out.bias)
        if film:  # per-block scale and shift from z; PyTorch's default init so z matters from step 0
            self.dec_film = nn.ModuleList([nn.Linear(latent_dim, 2 * width) for _ in range(decoder_depth)])
        for p in (self.action_token, self.enc_pos, self.enc_time, self.dec_pos):
            nn.init.trunc_normal_(p, std=0.02)
        if residual:  # start as an exact copy of f_t
            nn.init.zeros_(self.dec_head.weight)
        if warp:
            if not 0 < warp_range < image_size // 2:
                raise ValueError(f"warp_range must be in 1..{image_size // 2 - 1} pixels, got {warp_range}")
            self.dec_shift = nn.Linear(width, 2 * (2 * warp_range + 1))  # logits over shifts, x then y
            nn.init.zeros_(self.dec_shift.weight)
            with torch.no_grad():  # most of the mass on "no shift" (p ~ 0.9), the rest spread evenly
                self.dec_shift.bias.view(2, -1).zero_()[:, warp_range] = 5.0

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    # ----------------------------------------------------------------------------------------- core (tensors)
    def _patchify(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, N, C*p*p]
        p = self.config.patch_size
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, C*p*p] -> [B, C, H, W]
        p, c, size = self.config.patch_size, self.config.in_channels, self.config.image_size
        g = size // p
        x = x.reshape(x.shape[0], g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(x.shape[0], c, size, size)

    def _encode_raw(self, f_t: torch.Tensor, f_t1: torch.Tensor) -> torch.Tensor:
        """Output of the latent head for each pair: ``[B, 2D]`` for kl, ``[B, D]`` otherwise."""
        size = self.config.image_size
        if tuple(f_t.shape[-2:]) != (size, size) or f_t1.shape != f_t.shape:
            raise ValueError(
                f"frame pairs of shapes {tuple(f_t.shape)} and {tuple(f_t1.shape)} for a LAM of image_size "
                f"{size}: both frames [B, {self.config.in_channels}, {size}, {size}] (collect or resize the data "
                "to the model's size)"
            )
        frames = torch.stack([self._patchify(f_t), self._patchify(f_t1)], dim=1)  # [B, 2, N, P]
        x = self.enc_patch(frames)
        if self.config.difference_input:
            diff = self.enc_diff(frames[:, 1] - frames[:, 0])
            x = x + torch.stack([torch.zeros_like(diff), diff], dim=1)
        x = torch.cat([self.action_token.expand(x.shape[0], 2, 1, -1), x], dim=2)
        x = x + self.enc_pos + self.enc_time
        for block in self.enc_blocks:
            x = block(x)
        return self.to_latent(self.enc_norm(x[:, 1, 0]))  # the action token of f_{t+1}

    def _decode(self, f_t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # forward() hands over an fp32 z; a model cast to bf16 (``.to(torch.bfloat16)``) needs it in its dtype.
        z = z.to(self.dec_action.weight.dtype)
        x = self.dec_patch(self._patchify(f_t)) + self.dec_pos + self.dec_action(z).unsqueeze(1)
        for i, block in enumerate(self.dec_blocks):
            if self.config.film:
                scale, shift = self.dec_film[i](z).unsqueeze(1).chunk(2, dim=-1)
                x = x * (1 + scale) + shift
            x = block(x)
        x = self.dec_norm(x)
        base = self._warp(f_t, self.dec_shift(x)) if self.config.warp else f_t
        logits = self._unpatchify(self.dec_head(x).float())
        if self.config.residual:
            logits = logits + torch.logit(base.float(), eps=1e-3)
        if self.config.pixel_channels:
            h = self.pix_in(torch.cat([torch.sigmoid(logits).to(f_t.dtype), base.to(f_t.dtype)], dim=1))
            for conv, film in zip(self.pix_convs, self.pix_film, strict=True):
                scale, shift = film(z).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
                h = h + conv(F.silu(h * (1 + scale) + shift))
            logits = logits + self.pix_out(F.silu(h)).float()
        return torch.sigmoid(logits).to(f_t.dtype)

    def _warp(self, f_t: torch.Tensor, shift_logits: torch.Tensor) -> torch.Tensor:
        """f_t [B, C, H, W] moved by the tokens' shift distributions ``shift_logits`` [B, N, 2 * (2r + 1)].

        Output pixel (y, x) is the expectation of f_t at (y + dy, x + dx), dx and dy drawn from the
        distributions; applied separably (x, then y) with the borders replicated.
        """
        r, size = self.config.warp_range, self.config.image_size
        g, k = size // self.config.patch_size, 2 * r + 1
        probs = shift_logits.float().view(-1, g, g, 2, k).softmax(dim=-1).permute(0, 3, 4, 1, 2)
        # Bilinear upsampling as a matmul: its backward is ~3x faster than interpolate's on a CPU.
        up = _bilinear_upsampling_matrix(g, size, f_t.device)
        probs = up @ probs @ up.T  # [B, axis, shift, H, W]
        # Shifted copies are strided views (unfold); a product and a sum over the shift axis mix them.
        x = F.pad(f_t.float(), (r, r, 0, 0), mode="replicate").unfold(-1, size, 1)  # [B, C, H, shift, W]
        x = (x * probs[:, 0].transpose(1, 2).unsqueeze(1)).sum(dim=3)
        x = F.pad(x, (0, 0, r, r), mode="replicate").unfold(-2, size, 1)  # [B, C, shift, W, H]
        return (x * probs[:, 1].transpose(-1, -2).unsqueeze(1)).sum(dim=2).transpose(-1, -2)

    def _quantize(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Nearest-code quantisation with straight-through gradients; returns (q, codes, loss terms)."""
        e = e.float()  # distances and code losses in fp32 even under autocast
        if self.training:
            self._reset_dead_codes(e.detach())
        codebook = self.codebook.weight
        with torch.no_grad():
            codes = torch.cdist(e, codebook.float()).argmin(dim=1)
        q = self.codebook(codes).float()
        terms = {
            "codebook": F.mse_loss(q, e.detach()),
            "commitment": self.config.commitment * F.mse_loss(e, q.detach()),
        }
        if self.training:
            with torch.no_grad():
                self.code_idle_steps += 1
                self.code_idle_steps[codes] = 0
        return e + (q - e).detach(), codes, terms

    @torch.no_grad()
    def _reset_dead_codes(self, e: torch.Tensor) -> None:
        dead = torch.nonzero(self.code_idle_steps >= self.config.dead_code_steps).flatten()
        if dead.numel() == 0:
            return
        # Re-seat dead codes on the encodings the live codebook serves worst (deterministic, no RNG needed).
        err = torch.cdist(e, self.codebook.weight.float()).min(dim=1).values
        order = err.argsort(descending=True)
        picks = order[torch.arange(dead.numel(), device=e.device) % order.numel()]
        self.codebook.weight[dead] = e[picks].to(self.codebook.weight.dtype)
        self.code_idle_steps[dead] = 0

    def _mean_latent(self, raw: torch.Tensor) -> torch.Tensor:
        """``mu`` of the latent head's output, as :meth:`forward` gives it in eval mode, without decoding."""
        if self.config.regularizer == "kl":
            return raw.float().chunk(2, dim=1)[0]
        if self.config.regularizer == "vq":
            return self._quantize(raw)[0]
        return raw.float()

    def forward(
        self,
        f_t: torch.Tensor,
        f_t1: torch.Tensor,
        generator: torch.Generator | None = None,
        beta: float | None = None,
        noise_scale: float = 1.0,
    ) -> LatentActionOutput:
        """Encode the pair, decode f_{t+1} from f_t and the latent action, and compute the loss.

        Args:
            f_t, f_t1: float tensors ``[B, 3, H, W]`` in [0, 1].
            generator: optional generator for the KL reparameterisation noise (training only).
            beta: KL weight for this call (a trainer's warm-up); None uses ``config.beta``.
        """
        cfg = self.config
        raw = self._encode_raw(f_t, f_t1)
        losses: dict[str, torch.Tensor] = {}
        codes = None
        if cfg.regularizer == "kl":
            mu, logvar = raw.float().chunk(2, dim=1)
            logvar = logvar.clamp(-30.0, 20.0)
            if self.training:
                noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
                z = mu + noise_scale * torch.exp(0.5 * logvar) * noise
            else:
                z = mu
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
            losses["kl"] = kl
            reg = (cfg.beta if beta is None else beta) * kl
        elif cfg.regularizer == "vq":
            mu, codes, terms = self._quantize(raw)
            z = mu
            losses.update(terms)
            reg = terms["codebook"] + terms["commitment"]
        elif cfg.regularizer == "sparse":
            mu = z = raw.float()
            losses.update(_sparse_terms(z))
            reg = (
                cfg.sparse_l1 * losses["l1"] + cfg.sparse_var * losses["var"] + cfg.sparse_cov * losses["cov"]
            )
        else:
            mu = z = raw.float()
            reg = torch.zeros((), device=z.device)

        recon = self._decode(f_t, z)
        mse = F.mse_loss(recon.float(), f_t1.float())
        losses["mse"] = mse
        loss = mse + reg
        return LatentActionOutput(
            recon=recon,
            mu=mu,
            z=z,
            loss=loss,
            losses={k: v.detach() for k, v in losses.items()},
            codes=codes,
        )

    # ---------------------------------------------------------------------------- public helpers (numpy in/out)
    @torch.no_grad()
    def encode(
        self,
        f_t: np.ndarray | torch.Tensor,
        f_t1: np.ndarray | torch.Tensor | None = None,
        chunk_size: int = 256,
    ) -> np.ndarray | torch.Tensor:
        """Latent actions of frame pairs (the posterior mean for ``kl``; the code vector for ``vq``).

        Args:
            f_t: frames t as uint8 ``[B, H, W, 3]`` / ``[H, W, 3]`` (numpy or tensor) or float tensors
                ``[B, 3, H, W]`` / ``[3, H, W]`` in [0, 1]. If ``f_t1`` is None, ``f_t`` must hold the pairs
                themselves: ``[B, 2, H, W, 3]`` or ``[2, H, W, 3]`` (uint8).
            f_t1: frames t+1 in the same format as ``f_t``.
            chunk_size: largest batch sent through the network at once.

        Returns:
            ``[B, latent_dim]`` (or ``[latent_dim]`` for unbatched input): float32 numpy for numpy input,
            else a tensor on the model's device.
        """
        _check_chunk_size(chunk_size)
        if f_t1 is None:
            f_t, f_t1 = self._split_pairs(f_t)
        a, unbatched_a, as_numpy = self._to_model_images(f_t, "f_t")
        b, unbatched_b, _ = self._to_model_images(f_t1, "f_t1")
        if unbatched_a != unbatched_b:
            raise ValueError("batch size mismatch: one of f_t / f_t1 is a single frame, the other a batch")
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"batch size mismatch: f_t has {a.shape[0]} frames, f_t1 has {b.shape[0]}")
        was_training = self.training
        self.eval()
        try:
            mu = torch.cat(
                [
                    self._mean_latent(self._encode_raw(a[i : i + chunk_size], b[i : i + chunk_size]))
                    for i in range(0, max(a.shape[0], 1), chunk_size)  # an empty batch: one empty call
                ]
            )
        finally:
            self.train(was_training)
        if unbatched_a:
            mu = mu[0]
        return mu.float().cpu().numpy() if as_numpy else mu

    @torch.no_grad()
    def decode(
        self, f_t: np.ndarray | torch.Tensor, z: np.ndarray | torch.Tensor, chunk_size: int = 256
    ) -> np.ndarray | torch.Tensor:
        """Predict f_{t+1} from f_t and a latent action.

        Args:
            f_t: frames as for :meth:`encode`.
            z: latent actions ``[B, latent_dim]``, or one ``[latent_dim]`` vector applied to every frame.
            chunk_size: largest batch sent through the network at once.

        Returns:
            Predicted frames in the format of ``f_t``: uint8 ``[B, H, W, 3]`` numpy for numpy input, uint8
            channels-last tensors for uint8 tensors, float ``[B, 3, H, W]`` tensors for float tensors.
        """
        _check_chunk_size(chunk_size)
        x, unbatched, as_numpy = self._to_model_images(f_t, "f_t")
        zt = self._check_latent(z, x.shape[0], unbatched)
        channels_last_uint8 = _is_uint8(f_t)
        was_training = self.training
        self.eval()
        try:
            out = torch.cat(
                [
                    self._decode(x[i : i + chunk_size], zt[i : i + chunk_size])
                    for i in range(0, max(x.shape[0], 1), chunk_size)  # an empty batch: one empty call
                ]
            )
        finally:
            self.train(was_training)
        if channels_last_uint8:
            out = (out.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        if unbatched:
            out = out[0]
        return out.cpu().numpy() if as_numpy else out

    # ---------------------------------------------------------------------------------------- input checks
    def _split_pairs(self, pairs: np.ndarray | torch.Tensor) -> tuple[Any, Any]:
        shape = tuple(pairs.shape)
        if len(shape) == 3:
            raise ValueError(
                f"encode needs a pair of frames (f_t, f_t1) but got a single frame of shape {shape}; "
                "pass encode(f_t, f_t1) or stacked pairs [B, 2, H, W, 3]"
            )
        if len(shape) == 4 and shape[0] == 2:
            return pairs[0], pairs[1]
        if len(shape) == 5 and shape[1] == 2:
            return pairs[:, 0], pairs[:, 1]
        raise ValueError(
            f"encode(pairs) expects stacked pairs [B, 2, H, W, 3] or [2, H, W, 3], got shape {shape}; "
            "a batch of single frames is not a pair: pass encode(f_t, f_t1)"
        )

    def _to_model_images(self, images: Any, name: str) -> tuple[torch.Tensor, bool, bool]:
        """Validate images and return (float [B, 3, H, W] in [0, 1] on the model device, unbatched, was_numpy)."""
        size, channels = self.config.image_size, self.config.in_channels
        as_numpy = isinstance(images, np.ndarray)
        if not as_numpy and not isinstance(images, torch.Tensor):
            raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(images).__name__}")
        if _is_uint8(images):
            t = _from_numpy(images) if as_numpy else images
            if t.ndim not in (3, 4) or t.shape[-1] != channels:
                raise ValueError(
                    f"{name}: uint8 images must be [B, H, W, {channels}] or [H, W, {channels}], got shape "
                    f"{tuple(t.shape)}"
                )
            unbatched = t.ndim == 3
            t = t.unsqueeze(0) if unbatched else t
            t = t.permute(0, 3, 1, 2).float() / 255.0
        elif as_numpy:
            raise ValueError(
                f"{name}: numpy images must be uint8 in [0, 255], got dtype {images.dtype}; "
                "convert with (x * 255).round().astype(np.uint8) or pass a float torch tensor in [0, 1]"
            )
        elif images.is_floating_point():
            t = images
            if t.ndim not in (3, 4) or t.shape[-3] != channels:
                raise ValueError(
                    f"{name}: float tensors must be [B, {channels}, H, W] or [{channels}, H, W], got shape "
                    f"{tuple(t.shape)}"
                )
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or infinite values")
            lo, hi = float(t.min()), float(t.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{name}: float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}] "
                    "(uint8 [0, 255] images should be passed as uint8)"
                )
            unbatched = t.ndim == 3
            t = t.unsqueeze(0) if unbatched else t
        else:
            raise ValueError(f"{name}: unsupported tensor dtype {images.dtype}; use uint8 or float in [0, 1]")
        if tuple(t.shape[-2:]) != (size, size):
            raise ValueError(
                f"{name}: resolution {tuple(t.shape[-2:])} does not match the model's image_size {size}x{size}"
            )
        return t.to(device=self.device, dtype=self.dtype), unbatched, as_numpy

    def _check_latent(self, z: Any, batch: int, unbatched: bool) -> torch.Tensor:
        dim = self.config.latent_dim
        if isinstance(z, np.ndarray):
            if not np.issubdtype(z.dtype, np.floating):
                raise ValueError(f"z must be a float array, got dtype {z.dtype}")
            z = _from_numpy(z.astype(np.float32, copy=False))
        elif not isinstance(z, torch.Tensor) or not z.is_floating_point():
            raise ValueError(f"z must be a float numpy array or tensor, got {type(z).__name__}")
        if z.ndim == 0 or z.shape[-1] != dim or z.ndim > 2:
            raise ValueError(
                f"z must have shape [B, {dim}] or [{dim}] (latent_dim={dim}), got {tuple(z.shape)}"
            )
        if not torch.isfinite(z.float()).all():  # after the cast: float64 beyond float32's range becomes inf
            raise ValueError("z contains NaN or infinite values (or values beyond float32's range)")
        if z.ndim == 1:
            z = z.unsqueeze(0).expand(batch, dim)
        elif z.shape[0] != batch:
            raise ValueError(f"batch size mismatch: {batch} frames but {z.shape[0]} latent actions")
        elif unbatched:
            raise ValueError(f"a single frame takes a single latent action [{dim}], got {tuple(z.shape)}")
        return z.to(device=self.device, dtype=self.dtype)


def _check_settings(
    positive: dict[str, Any], non_negative: dict[str, Any], weights: dict[str, Any], flags: dict[str, Any]
) -> None:
    """Config values of the right type and range, named when not (a string or a negative size failed deep in
    torch, and latent_dim=0 trained a model with no latent at all)."""
    for group, minimum in ((positive, 1), (non_negative, 0)):
        for name, value in group.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if weights["mlp_ratio"] <= 0:
        raise ValueError(f"mlp_ratio must be > 0, got {weights['mlp_ratio']!r}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")


def _check_chunk_size(chunk_size: Any) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    # A read-only array (np.load(mmap_mode="r"), a frozen buffer) is copied: torch.from_numpy would warn that
    # writing through the tensor is undefined; a negatively strided view is copied too (torch cannot view it).
    return torch.from_numpy(np.require(array, requirements=("C", "W")))


def _is_uint8(x: Any) -> bool:
    return (isinstance(x, np.ndarray) and x.dtype == np.uint8) or (
        isinstance(x, torch.Tensor) and x.dtype == torch.uint8
    )


def _sparse_terms(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1 sparsity plus VICReg variance (std >= 1 per dim) and covariance (decorrelated dims) over the batch."""
    l1 = z.abs().mean()
    if z.shape[0] < 2:  # batch statistics need two samples
        zero = torch.zeros((), device=z.device)
        return {"l1": l1, "var": zero, "cov": zero}
    zc = z - z.mean(dim=0)
    std = torch.sqrt(zc.var(dim=0) + 1e-4)
    var = F.relu(1.0 - std).mean()
    cov = (zc.T @ zc) / (z.shape[0] - 1)
    off_diag = cov - torch.diag(torch.diagonal(cov))
    return {"l1": l1, "var": var, "cov": off_diag.pow(2).sum() / z.shape[1]}
