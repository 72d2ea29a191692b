"""Latent-action-conditioned diffusion world model (AdaWorld section 2, at laptop scale).

A pixel-space diffusers ``UNet2DModel`` at 64x64 with EDM preconditioning, in the style of DIAMOND:

* input channels: the noisy next frame (3) + ``num_history`` past frames (3 each), frames scaled to [-1, 1];
  history slots older than the history length are zero-padded;
* condition: latent action ``z`` + history noise-augmentation level + history length, mapped by a small MLP
  (last layer zero-initialised) and added to the UNet's noise embedding (``class_embed_type="identity"``),
  which drives adaptive group norm (``resnet_time_scale_shift="scale_shift"``);
* sampling: diffusers ``EDMEulerScheduler`` (Karras sigmas), 1-5 Euler steps, optional classifier-free
  guidance.

Training loop contract (see :meth:`DiffusionWorldModel.training_loss`)::

    model = DiffusionWorldModel(**world_model_preset("small"), action_dim=32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    ema = diffusers.training_utils.EMAModel(model.parameters(), decay=0.999)
    for history, next_frame, z in loader:          # uint8 [B,k,64,64,3], uint8 [B,64,64,3], float [B,32]
        loss = model.training_loss(history, next_frame, z, generator=g)   # bf16 autocast inside
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.step(model.parameters())
    ema.copy_to(model.parameters())                 # sample and save with the EMA weights
    model.save_pretrained(out_dir)

``z`` is the frozen LAM's ``mu`` of (last history frame, next frame), computed under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import EDMEulerScheduler, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from adaworld_gym._checks import is_int
from adaworld_gym.models.loading import CheckedLoadingMixin
from adaworld_gym.precision import bf16_is_fast

__all__ = ["DiffusionWorldModel", "world_model_preset", "WORLD_MODEL_PRESETS"]

FrameArray = np.ndarray | torch.Tensor

# Architecture presets; everything else keeps the constructor defaults.
WORLD_MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests only: ~47K parameters.
    "tiny": {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 8},
    # 2 CPU cores, ~90 minutes of training: ~2.6M parameters.
    "small": {
        "block_out_channels": (32, 64, 128),
        "layers_per_block": 1,
        "norm_num_groups": 32,
        "predict_residual": True,
    },
    # One GPU: ~25M parameters, DIAMOND-sized.
    "base": {
        "block_out_channels": (64, 128, 256, 256),
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "predict_residual": True,
    },
}


def world_model_preset(name: str) -> dict[str, Any]:
    """Constructor kwargs of a named preset (``tiny``, ``small``, ``base``); a fresh copy each call."""
    if name not in WORLD_MODEL_PRESETS:
        raise ValueError(f"unknown world model preset {name!r}; choose one of {sorted(WORLD_MODEL_PRESETS)}")
    return dict(WORLD_MODEL_PRESETS[name])


CPU_CHUNK = 32  # rows per UNet call on a CPU (see _network)
# On a CPU, sample with a bf16 copy of the UNet rather than under autocast (see _cpu_bf16_unet), whose
# resnet blocks compute in place (see _InferenceResnetBlock2D).
CPU_BF16_COPY = True
CPU_INPLACE_RESNETS = True


class _ChannelsLastSafeGroupNorm(nn.GroupNorm):
    """GroupNorm that sidesteps PyTorch's slow CPU kernel for small channels-last bf16 maps.

    On [16, 128, 16, 16] bf16 channels-last, ``F.group_norm`` takes ~10 ms vs 0.5 ms on the same data in NCHW
    (2.5 ms with both layout conversions); at 32x32 and 64x64 the NHWC kernel is as fast as NCHW.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] * x.shape[-2] <= 256 and not x.is_contiguous():
            out = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
            return out.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class _InferenceResnetBlock2D(ResnetBlock2D):
    """diffusers' ResnetBlock2D for sampling on a CPU, computing the same values with fewer passes over memory.

    Its activations, time scale-shift and residual add run in place on tensors the block itself just made, and
    the division by ``output_scale_factor`` is skipped when it is 1: bit-identical outputs, and (at batch 16,
    where the elementwise passes outweigh the convolutions) fewer allocations and memory passes. Only for
    blocks :func:`_fusable` accepts, in eval mode without autograd.
    """

    def forward(
        self, input_tensor: torch.Tensor, temb: torch.Tensor, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        hidden = F.silu(self.norm1(input_tensor), inplace=True)
        if self.upsample is not None:
            if hidden.shape[0] >= 64:  # as diffusers: its NHWC nearest upsampling fails on large batches
                input_tensor, hidden = input_tensor.contiguous(), hidden.contiguous()
            input_tensor, hidden = self.upsample(input_tensor), self.upsample(hidden)
        elif self.downsample is not None:
            input_tensor, hidden = self.downsample(input_tensor), self.downsample(hidden)
        hidden = self.conv1(hidden)
        # temb is shared by every block: never in place.
        scale, shift = self.time_emb_proj(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        hidden = self.norm2(hidden).mul_(1 + scale).add_(shift)
        hidden = self.conv2(F.silu(hidden, inplace=True))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        if self.output_scale_factor == 1:
            return hidden.add_(input_tensor)
        return (input_tensor + hidden) / self.output_scale_factor


def _fusable(block: nn.Module) -> bool:
    """A ResnetBlock2D whose forward :class:`_InferenceResnetBlock2D` reproduces exactly."""
    return (
        type(block) is ResnetBlock2D
        and block.time_embedding_norm == "scale_shift"
        and not block.skip_time_act
        and block.time_emb_proj is not None
        and isinstance(block.nonlinearity, nn.SiLU)
        and not block.training
    )


def _check_schedule(**values: float) -> None:
    """The noise-schedule settings: a bad one (``rho`` 0, ``sigma_max`` 0) failed only when sampling, far off."""
    if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values.values()):
        raise ValueError(f"the noise settings must be finite numbers, got {values}")
    for name in ("sigma_data", "sigma_min", "rho", "p_std", "history_aug_step"):
        if values[name] <= 0:
            raise ValueError(f"{name} must be > 0, got {values[name]}")
    if values["sigma_max"] <= values["sigma_min"]:
        raise ValueError(
            f"sigma_max must be above sigma_min, got {values['sigma_max']} <= {values['sigma_min']}"
        )
    if values["history_aug_max"] < 0 or values["inference_aug_level"] < 0:
        raise ValueError("history_aug_max and inference_aug_level must be >= 0")
    if not 0 <= values["cond_drop_prob"] < 1:
        raise ValueError(f"cond_drop_prob must be in [0, 1), got {values['cond_drop_prob']}")


class DiffusionWorldModel(CheckedLoadingMixin, ModelMixin, ConfigMixin):
    """Predicts the next RGB frame (64x64 by default) from up to ``num_history`` past frames and a latent action.

    Args:
        sample_size: frame height and width in pixels.
        num_history: k, the most past frames the model sees.
        action_dim: dimension of the latent action ``z`` (the LAM's, 32).
        block_out_channels, layers_per_block, norm_num_groups, resnet_time_scale_shift: UNet2DModel layout
            (no attention layers, like DIAMOND).
        sigma_data: EDM data standard deviation (frames in [-1, 1]).
        p_mean, p_std: training ``ln(sigma) ~ N(p_mean, p_std)``. Default (-0.4, 1.2) as DIAMOND at 64x64, not
            AdaWorld's (1.2, 1.6), which suits SVD latents at 256 px sampled from sigma 700. Here sampling
            starts at ``sigma_max`` = 5; N(1.2, 1.6) would put ~40% of training above 5 and starve the low
            noise levels where the last of only 1-3 steps is taken.
        sigma_min, sigma_max, rho: Karras sampling schedule (DIAMOND: 2e-3, 5, 7).
        history_aug_max, history_aug_step: training history noise levels {0, step, ..., max}
            (AdaWorld: 0.7, 0.1).
        inference_aug_level: level passed as a condition at inference, with no noise added (AdaWorld: 0.1).
        cond_drop_prob: probability of replacing ``z`` by a learned null action in training (for CFG).
        action_agnostic: feed zeros where ``z`` goes, everywhere (same architecture: the baseline).
        predict_residual: diffuse the change from the last history frame instead of the frame itself, so
            copying is free and the network spends its capacity on what moves (off for configs saved before).
        autocast_dtype: ``"bfloat16"`` (default; 2-3x faster on CPUs with AMX), ``"float16"`` or None (fp32)
            for the UNet forward in training and sampling. Override when loading:
            ``from_pretrained(path, autocast_dtype=None)``.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 64,
        num_history: int = 4,
        action_dim: int = 32,
        block_out_channels: Sequence[int] = (32, 64, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 32,
        resnet_time_scale_shift: str = "scale_shift",
        sigma_data: float = 0.5,
        p_mean: float = -0.4,
        p_std: float = 1.2,
        sigma_min: float = 0.002,
        sigma_max: float = 5.0,
        rho: float = 7.0,
        history_aug_max: float = 0.7,
        history_aug_step: float = 0.1,
        inference_aug_level: float = 0.1,
        cond_drop_prob: float = 0.1,
        action_agnostic: bool = False,
        autocast_dtype: str | None = "bfloat16",
        predict_residual: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("action_agnostic", action_agnostic), ("predict_residual", predict_residual)):
            if not isinstance(value, bool):  # "no" is truthy: it made a model that ignored its actions
                raise ValueError(f"{name} must be True or False, got {value!r}")
        sizes = {"sample_size": sample_size, "num_history": num_history, "action_dim": action_dim}
        sizes.update(layers_per_block=layers_per_block, norm_num_groups=norm_num_groups)
        for name, value in sizes.items():
            if not is_int(value):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if num_history < 1 or action_dim < 1:
            raise ValueError(f"num_history and action_dim must be >= 1, got {num_history} and {action_dim}")
        if autocast_dtype not in (None, "bfloat16", "float16"):
            raise ValueError(f"autocast_dtype must be None, 'bfloat16' or 'float16', got {autocast_dtype!r}")
        _check_schedule(
            sigma_data=sigma_data, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, p_std=p_std,
            history_aug_max=history_aug_max, history_aug_step=history_aug_step,
            inference_aug_level=inference_aug_level, cond_drop_prob=cond_drop_prob,
        )  # fmt: skip
        channels = tuple(block_out_channels)
        if any(c % norm_num_groups for c in channels):
            raise ValueError(f"norm_num_groups {norm_num_groups} must divide every block width {channels}")
        if sample_size < 1 or sample_size % 2 ** (len(channels) - 1):
            raise ValueError(
                f"sample_size {sample_size} must be a positive multiple of {2 ** (len(channels) - 1)} "
                f"(the U-Net halves it {len(channels) - 1} times)"
            )
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=3 * (num_history + 1),
            out_channels=3,
            down_block_types=("DownBlock2D",) * len(channels),
            up_block_types=("UpBlock2D",) * len(channels),
            block_out_channels=channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            resnet_time_scale_shift=resnet_time_scale_shift,
            add_attention=False,
            class_embed_type="identity",  # our condition vector is added to the noise embedding as is
        )
        temb_dim = channels[0] * 4  # UNet2DModel's time_embed_dim
        # Condition features: z, one-hot history length, history augmentation level.
        self.cond_mlp = nn.Sequential(
            nn.Linear(action_dim + num_history + 1, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim)
        )
        # New weights start at zero: a fresh model ignores the condition (AdaWorld, adding z to SVD).
        nn.init.zeros_(self.cond_mlp[-1].weight)
        nn.init.zeros_(self.cond_mlp[-1].bias)
        self.null_action = nn.Parameter(torch.zeros(action_dim))  # stands in for z when dropped (CFG)

        # The scheduler holds the EDM preconditioning (c_in, c_skip, c_out, c_noise) for training and
        # sampling, so the two cannot drift apart. Its "epsilon" type is EDM's F-prediction (c_out > 0);
        # AdaWorld's "v-prediction" is the same parameterisation with the sign of c_out flipped.
        self.scheduler = EDMEulerScheduler(
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            sigma_data=sigma_data,
            sigma_schedule="karras",
            prediction_type="epsilon",
            rho=rho,
            final_sigmas_type="zero",
        )

    # ------------------------------------------------------------------ network
    def forward(
        self, noisy_next: torch.Tensor, sigma: torch.Tensor, history: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        """Denoised next frame D(x; sigma) in [-1, 1] scale, float32 [B,3,H,W].

        Low level: ``history`` is the prepared [B,3k,H,W] float tensor, ``cond`` the [B,temb] condition
        embedding from :meth:`condition_embedding`, ``sigma`` [B]. Use :meth:`predict_next` for frames.
        """
        sigma4 = sigma.float().view(-1, 1, 1, 1)
        raw = self._network(self.scheduler.precondition_inputs(noisy_next, sigma4), sigma, history, cond)
        return self.scheduler.precondition_outputs(noisy_next, raw, sigma4)

    def _network(
        self, scaled_noisy: torch.Tensor, sigma: torch.Tensor, history: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        """Raw UNet output F (float32) for an input already multiplied by c_in."""
        c_noise = self.scheduler.precondition_noise(sigma.float()).to(scaled_noisy.device)
        # NHWC lets oneDNN pick faster convolutions, and on a CPU a batch runs in chunks of CPU_CHUNK rows, whose
        # activations stay in cache: batch 64, 2 threads: 59 -> 88 frames/s (interleaved A/B, medians of 3).
        # Not for training on a CPU: there group norm's backward on NHWC costs 8 ms a call against 1.6 in NCHW,
        # and a small-preset step runs 1.17-1.24x faster in NCHW (docs/world_model.md, session 27).
        x = torch.cat([scaled_noisy, history], dim=1)
        if not (torch.is_grad_enabled() and x.device.type == "cpu"):
            x = x.contiguous(memory_format=torch.channels_last)
        # Inputs in the weights' dtype: a no-op for fp32 weights, needed for a model cast with .to(torch.bfloat16).
        weight_dtype = self.unet.conv_in.weight.dtype
        x, cond = x.to(weight_dtype), cond.to(weight_dtype)
        chunk = CPU_CHUNK if x.device.type == "cpu" else x.shape[0]
        unet, context = self.unet, self._autocast()
        bf16 = self._autocast_name() == "bfloat16"
        if CPU_BF16_COPY and bf16 and x.device.type == "cpu" and not torch.is_grad_enabled():
            unet, context = self._cpu_bf16_unet(), contextlib.nullcontext()
            x, cond = x.to(torch.bfloat16), cond.to(torch.bfloat16)
        outs = []
        with context:
            for i in range(0, x.shape[0], chunk):
                rows = slice(i, i + chunk)
                outs.append(unet(x[rows], c_noise[rows], class_labels=cond[rows]).sample.float())
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _cpu_bf16_unet(self) -> UNet2DModel:
        """A bf16 copy of the UNet for sampling on a CPU, re-cast whenever the weights have changed.

        Autocast re-casts every weight on every call and runs group norm in fp32 around bf16 convolutions; a
        bf16 copy does neither: predict_next at batch 1 / 16 / 64 is 1.14x / 1.16x / 1.18x faster at 2 threads
        (``scripts/ab_cpu_sampling.py``, interleaved A/B). Changes are detected from version counters and a
        sample of the values, and ``load_state_dict`` (also with ``assign=True``, which swaps in new tensors)
        is counted by a hook on the UNet, which makes a new copy; code that writes only a few weights through
        ``.data``, assigns new ``nn.Parameter`` objects or replaces a submodule of the UNet should call
        :meth:`invalidate_sampling_cache` afterwards.
        """
        cached = self.__dict__.get("_bf16_unet")
        # The hook is a module-level function counting loads on the UNet itself: a closure over the model (as
        # before) made every model, and every env holding one, unpicklable once it had sampled on a CPU.
        hooked = any(
            hook is _count_state_dict_loads for hook in self.unet._load_state_dict_post_hooks.values()
        )
        if not hooked:  # once per UNet (pickles and copies keep it)
            self.unet.register_load_state_dict_post_hook(_count_state_dict_loads)
        ident = (id(self.unet), self.unet.__dict__.get(_LOADS, 0))
        # Walking the module tree costs ~0.9 ms a call, so the tensor list is kept with the copy (replacing
        # the whole UNet is caught by its id, loading new tensors into it by the load count).
        tensors = cached["tensors"] if cached and cached["ident"] == ident else None
        if tensors is None:
            tensors = [*self.unet.parameters(), *self.unet.buffers()]
        # Tensors made under torch.inference_mode() (a model built or loaded there) have no version counter;
        # the value sample below still catches their rewrites.
        key = (ident, *((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors))
        # In-place updates bump _version, but writes through ``.data`` (diffusers' EMA swaps) do not: a strided
        # sample of every 8th tensor's values catches those (they rewrite every tensor). Both: ~0.3 ms a call.
        with torch.no_grad():
            sample = torch.stack([t.reshape(-1)[::97].float().sum() for t in tensors[::8]])
        if cached is None or cached["key"] != key or not torch.equal(cached["sample"], sample):
            # The constructor's random init is overwritten at once; forking the RNG keeps it from moving the
            # caller's global torch RNG (a PPO agent seeded before the first imagined step would otherwise
            # train differently depending on whether a world model had sampled before).
            with torch.random.fork_rng(devices=[]):
                copy = UNet2DModel.from_config(self.unet.config)
            copy.load_state_dict(self.unet.state_dict())
            # ModelMixin.to warns about fp32-only modules; this UNet has none.
            nn.Module.to(copy, torch.bfloat16)
            copy.eval()
            for module in copy.modules():
                if type(module) is nn.GroupNorm:
                    module.__class__ = _ChannelsLastSafeGroupNorm
                elif CPU_INPLACE_RESNETS and _fusable(module):
                    module.__class__ = _InferenceResnetBlock2D
            if CPU_INPLACE_RESNETS and isinstance(copy.conv_act, nn.SiLU):
                copy.conv_act.inplace = True  # applied to conv_norm_out's fresh output only
            # Kept out of nn.Module's registry: never saved, moved or trained with the model.
            cached = {"ident": ident, "tensors": tensors, "key": key, "sample": sample}
            cached["copy"] = copy.eval().requires_grad_(False)
            self.__dict__["_bf16_unet"] = cached
        return cached["copy"]

    def invalidate_sampling_cache(self) -> None:
        """Drop the CPU sampling copy of the weights; the next sample re-casts them."""
        self.__dict__.pop("_bf16_unet", None)

    def __getstate__(self) -> dict[str, Any]:
        # The CPU sampling copy is a cache (a second UNet): pickles and deep copies leave it out and rebuild it.
        state = super().__getstate__()
        state.pop("_bf16_unet", None)
        return state

    def condition_embedding(
        self, z: torch.Tensor, history_len: torch.Tensor, aug_level: torch.Tensor
    ) -> torch.Tensor:
        """Embedding [B,temb] of (z [B,d], history length [B] in 1..k, augmentation level [B])."""
        if self.config.action_agnostic:
            z = torch.zeros_like(z)
        dtype = self.cond_mlp[0].weight.dtype  # fp32 z into a model cast to bf16 would not multiply
        length = F.one_hot(history_len.long() - 1, self.config.num_history)
        return self.cond_mlp(torch.cat([z.to(dtype), length.to(dtype), aug_level.to(dtype)[:, None]], dim=1))

    @property
    def device(self) -> torch.device:
        # ModelMixin.device walks every submodule for offload hooks: ~1 ms a call, several calls per sampled frame.
        return next(self.parameters()).device

    def _autocast_name(self) -> str | None:
        """The configured autocast dtype, or None (fp32) where bf16 is emulated and slow (see ``precision``)."""
        name = self.config.autocast_dtype
        if name == "bfloat16" and not bf16_is_fast(self.device.type):
            return None
        return name

    def _autocast(self) -> contextlib.AbstractContextManager:
        name = self._autocast_name()
        if name is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=getattr(torch, name))

    # ------------------------------------------------------------------ training
    def training_loss(
        self,
        history: FrameArray,
        next_frame: FrameArray,
        z: FrameArray,
        *,
        history_len: FrameArray | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """EDM denoising loss (scalar, mean over the batch) for one batch of transitions.

        Args:
            history: [B,h,H,W,3] past frames, oldest first, h <= k; uint8 in [0, 255] or float in [-1, 1].
            next_frame: [B,H,W,3] target frame, same dtype convention.
            z: [B,action_dim] latent actions (the frozen LAM's mu of (history[:, -1], next_frame)).
            history_len: [B] number of most recent frames to keep (1..h); None draws it uniformly in 1..h
                (AdaWorld), so pass the full k frames and let the model drop the rest.
            generator: source of every random draw (history length, augmentation level, condition dropout,
                sigma, noise): one ``torch.Generator`` for the batch; None uses torch's global RNG.

        Per sample: history noise augmentation with level in {0, 0.1, ..., 0.7} given as a condition; z
        replaced by the learned null action with probability ``cond_drop_prob``; ln(sigma) ~ N(p_mean, p_std);
        loss weight (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 (EDM), i.e. unit-weight MSE on F.
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"training_loss takes one torch.Generator for the batch, got {type(generator).__name__}"
            )
        hist, _ = self._frames(history, "history", ndim=5, allow_float=True)
        target, _ = self._frames(next_frame, "next_frame", ndim=4, allow_float=True)
        batch, h = hist.shape[:2]
        if target.shape[0] != batch:
            raise ValueError(f"next_frame batch {target.shape[0]} does not match history batch {batch}")
        if self.config.predict_residual:
            target = target - hist[:, -1]  # the clean last frame: what sampling adds back
        z = self._check_z(z, batch, "z")
        dev = self.device

        if history_len is None:
            lengths = _draw(torch.randint, (batch,), generator, dev, low=1, high=h + 1)
        else:
            lengths = self._check_history_len(history_len, batch, h)
        n_levels = round(self.config.history_aug_max / self.config.history_aug_step) + 1
        aug = (
            _draw(torch.randint, (batch,), generator, dev, high=n_levels).float()
            * self.config.history_aug_step
        )
        hist = hist + aug.view(-1, 1, 1, 1, 1) * _draw(torch.randn, hist.shape, generator, dev)
        hist = self._pad_history(hist, lengths).flatten(1, 2)

        drop = _draw(torch.rand, (batch,), generator, dev) < self.config.cond_drop_prob
        z = torch.where(drop[:, None], self.null_action.expand_as(z), z)
        cond = self.condition_embedding(z, lengths, aug)

        sigma = (self.config.p_mean + self.config.p_std * _draw(torch.randn, (batch,), generator, dev)).exp()
        noisy = target + sigma.view(-1, 1, 1, 1) * _draw(torch.randn, target.shape, generator, dev)
        denoised = self(noisy, sigma, hist, cond)
        sd2 = self.config.sigma_data**2
        weight = (sigma**2 + sd2) / (sigma**2 * sd2)
        return (weight.view(-1, 1, 1, 1) * (denoised - target) ** 2).mean()

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def predict_next(
        self,
        history: FrameArray,
        z: FrameArray,
        steps: int = 3,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        guidance_scale: float = 1.0,
        history_len: FrameArray | Sequence[int] | None = None,
    ) -> FrameArray:
        """Sample the next frame.

        Args:
            history: uint8 [B,h,H,W,3], oldest first, 1 <= h <= k (numpy or torch).
            z: float [B,action_dim] latent actions.
            steps: Euler steps (1-5 is the useful range; every step is one UNet call, two with guidance).
            generator: source of the initial noise (or one generator per sample); the same seed gives
                identical frames on CPU.
            guidance_scale: classifier-free guidance on z; 1 = off (AdaWorld: ~1.05-1.1; none for planning).
            history_len: optional [B] count of valid most-recent frames per sample (1..h), for batches whose
                episodes have different ages; older slots are ignored. Default: all h.

        Returns:
            uint8 [B,H,W,3]; a numpy array if ``history`` is one, else a tensor on the model's device.
        """
        hist, is_numpy = self._frames(history, "history", ndim=5, allow_float=False)
        batch, h = hist.shape[:2]
        z = self._check_z(z, batch, "z")
        lengths = self._check_history_len(history_len, batch, h)
        frame = self._sample(self._pad_history(hist, lengths), lengths, z, steps, generator, guidance_scale)
        out = _to_uint8(frame, z).permute(0, 2, 3, 1)
        return out.cpu().numpy() if is_numpy else out

    @torch.no_grad()
    def rollout(
        self,
        history: FrameArray,
        z_seq: FrameArray,
        steps: int = 3,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        guidance_scale: float = 1.0,
        history_len: FrameArray | Sequence[int] | None = None,
        progress: bool = False,
    ) -> FrameArray:
        """Autoregressive rollout: predict, shift the window, append the (uint8-quantised) prediction, repeat.

        Args:
            history: uint8 [B,h,H,W,3] (see :meth:`predict_next`).
            z_seq: float [B,T,action_dim], one latent action per predicted frame.
            steps, generator, guidance_scale, history_len: as in :meth:`predict_next`.
            progress: show a tqdm bar over the T frames (long rollouts on a CPU take seconds a frame).

        Returns:
            uint8 [B,T,H,W,3], the same kind (numpy / tensor) as ``history``. Equal to T chained
            :meth:`predict_next` calls with the same generator.
        """
        hist, is_numpy = self._frames(history, "history", ndim=5, allow_float=False)
        batch, h = hist.shape[:2]
        z_seq = _as_tensor(z_seq, "z_seq", self.device)
        if z_seq.ndim != 3 or z_seq.shape[0] != batch or z_seq.shape[1] < 1:
            raise ValueError(
                f"z_seq must have shape [B={batch}, T>=1, {self.config.action_dim}], got {tuple(z_seq.shape)}"
            )
        lengths = self._check_history_len(history_len, batch, h)
        zs = [self._check_z(z_seq[:, t], batch, f"z_seq[:, {t}]") for t in range(z_seq.shape[1])]  # all first
        window = self._pad_history(hist, lengths)
        frames = []
        if progress:
            from tqdm.auto import tqdm

            zs = tqdm(zs, desc="rollout", unit="frame")
        for z in zs:
            frame = _to_uint8(self._sample(window, lengths, z, steps, generator, guidance_scale), z)
            frames.append(frame)
            window = torch.cat([window[:, 1:], _to_unit(frame)[:, None]], dim=1)
            lengths = (lengths + 1).clamp(max=self.config.num_history)
        out = torch.stack(frames, dim=1).permute(0, 1, 3, 4, 2)
        return out.cpu().numpy() if is_numpy else out

    def _sample(
        self,
        window: torch.Tensor,
        lengths: torch.Tensor,
        z: torch.Tensor,
        steps: int,
        generator: torch.Generator | Sequence[torch.Generator] | None,
        guidance_scale: float,
    ) -> torch.Tensor:
        """Euler EDM sampling from a prepared [B,k,3,H,W] window; returns float [B,3,H,W] in [-1, 1]."""
        if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        steps = int(steps)
        if not isinstance(guidance_scale, numbers.Real) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        batch = window.shape[0]
        history = window.flatten(1, 2)
        aug = torch.full((batch,), self.config.inference_aug_level, device=self.device)
        cond = self.condition_embedding(z, lengths, aug)
        guided = guidance_scale != 1.0 and not self.config.action_agnostic
        if guided:  # conditional and unconditional halves in one batched UNet call
            uncond = self.condition_embedding(self.null_action.expand_as(z), lengths, aug)
            cond, history = torch.cat([cond, uncond]), torch.cat([history, history])

        sched = self.scheduler
        # Karras ramp over steps+1 points with the last (sigma_min) replaced by 0: every UNet call does real
        # work, instead of a final near-identity call at sigma_min (3 steps: sigma 5, 0.84, 0.078 -> 0).
        sched.set_timesteps(sigmas=torch.linspace(0, 1, steps + 1)[:-1])
        shape = (batch, 3, *window.shape[-2:])
        if generator is not None and not isinstance(generator, torch.Generator):
            if not isinstance(generator, Sequence):
                raise ValueError(
                    f"generator must be a torch.Generator, a list of them (one per sample) or None, "
                    f"got {type(generator).__name__}"
                )
            generator = list(generator)  # one generator per sample, as diffusers' randn_tensor
            if len(generator) != batch:
                raise ValueError(f"got {len(generator)} generators for a batch of {batch}")
            if not all(isinstance(g, torch.Generator) for g in generator):
                raise ValueError(
                    "generator lists must hold a torch.Generator per sample (None would draw from "
                    "the global RNG)"
                )
            x = torch.cat([_draw(torch.randn, (1, *shape[1:]), g, self.device) for g in generator])
        else:
            x = _draw(torch.randn, shape, generator, self.device)
        x = x * sched.sigmas[0]
        for t in sched.timesteps:
            x_in = sched.scale_model_input(x, t)
            if guided:
                x_in = torch.cat([x_in, x_in])
            sigma = sched.sigmas[sched.step_index].expand(x_in.shape[0])
            raw = self._network(x_in, sigma, history, cond)
            if guided:
                raw_c, raw_u = raw.chunk(2)
                raw = raw_u + guidance_scale * (raw_c - raw_u)
            x = sched.step(raw, t, x).prev_sample  # s_churn = 0: deterministic Euler, no generator needed
        if self.config.predict_residual:
            x = x + window[:, -1]
        return x.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ input checks
    def _frames(
        self, frames: FrameArray, name: str, ndim: int, allow_float: bool
    ) -> tuple[torch.Tensor, bool]:
        """Validate [B,(h,)H,W,3] frames; return float [-1, 1] [B,(h,)3,H,W] on the model's device."""
        is_numpy = isinstance(frames, np.ndarray)
        x = _as_tensor(frames, name, self.device)
        size, k = self.config.sample_size, self.config.num_history
        layout = "[B, h, H, W, 3]" if ndim == 5 else "[B, H, W, 3]"
        if x.ndim != ndim or x.shape[-1] != 3 or x.shape[0] < 1:
            raise ValueError(f"{name} must have shape {layout} (channels last, B >= 1), got {tuple(x.shape)}")
        if tuple(x.shape[-3:-1]) != (size, size):
            raise ValueError(
                f"{name} resolution {tuple(x.shape[-3:-1])} does not match the model's {size}x{size}"
            )
        if ndim == 5 and not 1 <= x.shape[1] <= k:
            raise ValueError(f"{name} has {x.shape[1]} frames but the model takes 1..k={k} history frames")
        if x.dtype == torch.uint8:
            x = _to_unit(x)
        elif allow_float and x.is_floating_point():
            if not torch.isfinite(x).all():
                raise ValueError(f"{name} contains NaN or inf")
            if x.abs().max() > 1.0 + 1e-3:
                raise ValueError(
                    f"float {name} must be scaled to [-1, 1]; got values up to {x.abs().max():.3g}"
                )
            x = x.float()
        else:
            allowed = "uint8 or float in [-1, 1]" if allow_float else "uint8"
            raise ValueError(f"{name} must have dtype {allowed}, got {x.dtype}")
        return x.movedim(-1, -3), is_numpy

    def _check_z(self, z: FrameArray, batch: int, name: str) -> torch.Tensor:
        z = _as_tensor(z, name, self.device)
        d = self.config.action_dim
        if not z.is_floating_point():
            raise ValueError(f"{name} must be a float tensor, got dtype {z.dtype}")
        if z.ndim != 2 or z.shape[0] != batch:
            raise ValueError(f"{name} must have shape [B={batch}, {d}], got {tuple(z.shape)}")
        if z.shape[1] != d:
            raise ValueError(f"{name} has dimension {z.shape[1]} but the model's action_dim is {d}")
        z = z.float()  # checked after the cast: a float64 value beyond float32's range turns into inf there
        if not torch.isfinite(z).all():
            raise ValueError(f"{name} contains NaN or inf (or values beyond float32's range)")
        return z

    def _check_history_len(
        self, history_len: FrameArray | Sequence[int] | None, batch: int, h: int
    ) -> torch.Tensor:
        if history_len is None:
            return torch.full((batch,), h, dtype=torch.long, device=self.device)
        lengths = _as_tensor(history_len, "history_len", self.device)
        if lengths.is_floating_point() or lengths.dtype == torch.bool or lengths.shape != (batch,):
            raise ValueError(
                f"history_len must be integers of shape [{batch}], got {lengths.dtype} {tuple(lengths.shape)}"
            )
        if (lengths < 1).any() or (lengths > h).any():
            raise ValueError(f"history_len values must be in 1..{h} (frames given), got {lengths.tolist()}")
        return lengths.long()

    def _pad_history(self, hist: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Right-align [B,h,3,H,W] into k slots; zero the oldest slots beyond each sample's length."""
        k = self.config.num_history
        hist = F.pad(hist, (0, 0, 0, 0, 0, 0, k - hist.shape[1], 0))
        keep = torch.arange(k, device=hist.device)[None, :] >= (k - lengths)[:, None]
        return hist * keep.view(*keep.shape, 1, 1, 1)


_LOADS = "_adaworld_state_dict_loads"  # load_state_dict calls on a UNet, counted in its __dict__


def _count_state_dict_loads(module: nn.Module, incompatible_keys: Any) -> None:
    """``load_state_dict`` post hook: new weights, so a new CPU sampling copy (module-level: picklable)."""
    module.__dict__[_LOADS] = module.__dict__.get(_LOADS, 0) + 1


def _as_tensor(x: FrameArray | Sequence, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        # Read-only arrays (np.load(mmap_mode="r")) are copied: torch.from_numpy warns about them.
        return torch.from_numpy(np.require(x, requirements=("C", "W"))).to(device)
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, list | tuple):
        return torch.as_tensor(x, device=device)
    raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def _to_unit(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 127.5 - 1.0


def _to_uint8(frames: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
    # NaN would turn into black pixels and pass every check downstream (a planner's NaN guard included).
    if not torch.isfinite(frames).all():
        largest = 0.0 if z is None or not z.numel() else float(z.abs().max())
        if (
            largest > 1e3
        ):  # finite but huge latents overflow the network: the input is at fault, not the weights
            raise FloatingPointError(
                f"the world model produced non-finite values (NaN or inf) from z values up to {largest:.3g}: "
                "latent actions are of order 1 (the LAM's mu); scale z down"
            )
        raise FloatingPointError(
            "the world model produced non-finite values (NaN or inf): its weights are corrupt or diverged"
        )
    return ((frames + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _draw(fn: Any, shape: Sequence[int], generator: torch.Generator | None, device: torch.device, **kw: Any):
    """Draw with ``fn`` (randn / rand / randint) on the generator's device, then move (CPU seeds on GPU)."""
    gen_device = generator.device if generator is not None else device
    return fn(size=tuple(shape), generator=generator, device=gen_device, **kw).to(device)
