"""Train the latent action model (LAM) on frame pairs, under ``accelerate``.

    from adaworld_gym.training import train_lam
    model_dir = train_lam(["data/procgen"], "runs/lam-small", preset="small", max_minutes=60)
    lam = LatentActionModel.from_pretrained(model_dir)

Data is any iterable of clip dicts as yielded by ``adaworld_gym.data.clips.ClipDataset``
(``{"history": uint8 [k, H, W, 3], "next": uint8 [H, W, 3], ...}``); the pair is (history[-1], next).
Directories are wrapped in a ``ClipDataset`` automatically.

The loop: AdamW, linear warmup then cosine decay (constant when only a wall-clock budget is given),
gradient clipping, bf16 autocast (2-3x faster on CPUs with AMX), brightness jitter of +-10% applied
identically to both frames, tensorboard logs in ``out_dir/logs`` (losses, PSNR of the reconstruction and of
copying the last frame, both from the MSE pooled over the logging window, and a reconstruction grid),
checkpoints in ``out_dir/checkpoints`` (resumed automatically), and the final model in ``out_dir/model``.

Throughput of the ``small`` preset on the project's CPU (batch 32, AdamW step included): ~110 samples per
CPU-second of one thread with bf16 autocast vs ~60 in fp32; see ``models/latent_action.py`` for the profile.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaworld_gym.data.clips import DataSpec, WindowBatches, data_frame_size
from adaworld_gym.models.latent_action import PRESETS, REGULARIZERS, LatentActionModel, lam_preset
from adaworld_gym.precision import bf16_is_fast
from adaworld_gym.training.checkpoint import (
    capture_rng_state,
    save_checkpoint,
)
from adaworld_gym.training.common import (
    CheckpointClock,
    RunCounter,
    any_process,
    check_finite_loss,
    config_from_preset,
    copy_weights,
    course_settings,
    image_grid,
    make_lr_scheduler,
    one_run_per_out_dir,
    plain_config,
    process_states,
    restore_process_state,
    resume_state,
    resume_stream,
    save_model_atomic,
    summary_writer,
    training_provenance,
    validate_run,
    write_json,
)

# Model settings that only enter the loss: a run may start from weights trained with other values (e.g. to
# finetune a LAM under a stronger KL bottleneck).
LOSS_SETTINGS = ("beta", "commitment", "sparse_l1", "sparse_var", "sparse_cov", "dead_code_steps")


@dataclass
class LamTrainConfig:
    """Hyper-parameters of a LAM training run (model sizes come from the preset, see ``lam_preset``)."""

    preset: str = "small"
    regularizer: str = "kl"
    beta: float | None = None  # None: the model default (2e-4)
    batch_size: int = 32
    lr: float = 6e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    # KL weight and posterior noise ramp linearly from 0: with full noise from step 0 the decoder learns to
    # ignore z before the encoder makes it informative (posterior collapse, measured on synthetic motion).
    kl_warmup_steps: int = 0
    lr_schedule: str = "cosine"  # "cosine" (needs max_steps) or "constant"
    max_steps: int | None = None
    max_minutes: float | None = None
    grad_clip: float = 1.0
    brightness: float = 0.1
    mixed_precision: str = "bf16"  # "bf16" or "no"
    seed: int = 0
    log_every: int = 50
    image_every: int = 500
    checkpoint_every: int = 1000
    checkpoint_minutes: float = 10.0
    eval_batches: int = 20
    init_from: str | None = None  # a saved LAM whose weights start the run (e.g. a push-heavy finetune)
    model_overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> LamTrainConfig:
        """Defaults for a preset, with ``None``-valued overrides ignored."""
        return config_from_preset(cls, _TRAIN_PRESETS, preset, "LAM", **overrides)


# Budgets: tiny is for tests (seconds at a few steps; its 200 steps take ~2 min at one thread on a busy
# CPU); small fills about an hour of a 2-core CPU; base is for one GPU.
_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        batch_size=16,
        lr=1e-3,
        warmup_steps=10,
        max_steps=200,
        log_every=10,
        image_every=100,
        checkpoint_every=100,
    ),
    "small": dict(batch_size=32, lr=6e-4, warmup_steps=200, kl_warmup_steps=1000, max_steps=8000),
    "base": dict(
        batch_size=128,
        lr=3e-4,
        warmup_steps=2000,
        kl_warmup_steps=5000,
        max_steps=100_000,
        image_every=2000,
        checkpoint_every=5000,
    ),
}


def train_lam(
    data: DataSpec,
    out_dir: str | os.PathLike,
    preset: str = "small",
    *,
    regularizer: str = "kl",
    beta: float | None = None,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    mixed_precision: str | None = None,
    eval_data: DataSpec | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    init_from: str | os.PathLike | None = None,
    log_every: int | None = None,
    image_every: int | None = None,
    checkpoint_every: int | None = None,
    checkpoint_minutes: float | None = None,
    progress: bool = True,
) -> Path:
    """Train a :class:`LatentActionModel` and return the directory of the saved model (``out_dir/model``).

    Args:
        data: clip dicts (any iterable; lists are reshuffled every epoch, iterators end training when
            exhausted), one or more dataset directories (read with ``ClipDataset``), or a mapping
            ``{directory: share of the batches}``.
        out_dir: run directory; a checkpoint found in it is resumed.
        preset: ``tiny``, ``small`` or ``base`` (model sizes and training defaults).
        regularizer: ``kl`` (AdaWorld), ``vq``, ``sparse`` or ``none``.
        beta: KL weight; None keeps the model default (2e-4).
        max_steps: total optimizer steps (across resumes); None keeps the preset default unless
            ``max_minutes`` is given alone.
        max_minutes: total training wall-clock budget (across resumes).
        batch_size, lr: override the preset defaults.
        seed: seeds Python, numpy and torch; the same seed gives the same run on CPU.
            A resumed run continues the weights, optimizer, RNG states and the data stream where its checkpoint
            left them, so it ends with the weights of an uninterrupted run (on CPU; with several processes too).
        mixed_precision: ``bf16`` (default) or ``no``.
        eval_data: held-out clips; evaluated at every checkpoint and at the end (``out_dir/summary.json``).
        model_overrides: extra model config (e.g. ``{"image_size": 32}``).
        init_from: a saved LAM (same config) whose weights start the run instead of a fresh init; a
            checkpoint in ``out_dir`` is resumed afterwards and wins.
        log_every, image_every: tensorboard scalar / image intervals in steps.
        checkpoint_every, checkpoint_minutes: checkpoint every N steps or M minutes, whichever comes first.
        progress: show a tqdm progress bar.
    """
    cfg = LamTrainConfig.from_preset(
        preset,
        max_steps=max_steps,
        max_minutes=max_minutes,
        batch_size=batch_size,
        lr=lr,
        mixed_precision=mixed_precision,
        log_every=log_every,
        image_every=image_every,
        checkpoint_every=checkpoint_every,
        checkpoint_minutes=checkpoint_minutes,
    )
    cfg = replace(
        cfg,
        regularizer=regularizer,
        beta=beta,
        seed=seed,
        model_overrides=dict(model_overrides or {}),
        init_from=None if init_from is None else os.fspath(init_from),
    )
    return run_lam_training(cfg, data, out_dir, eval_data=eval_data, progress=progress)


@one_run_per_out_dir
def run_lam_training(
    cfg: LamTrainConfig,
    data: DataSpec,
    out_dir: str | os.PathLike,
    *,
    eval_data: DataSpec | None = None,
    progress: bool = True,
) -> Path:
    """Run the training described by ``cfg`` (see :func:`train_lam` for the arguments)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    _validate(cfg)
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "checkpoints"
    # bf16 autocast is applied below rather than through Accelerator(mixed_precision=...): accelerate's state
    # is a process-wide singleton that refuses a second run with another precision in the same process.
    # bf16 needs no gradient scaler, so plain autocast is all accelerate would do (on CPU and GPU alike).
    accelerator = Accelerator()
    bf16 = cfg.mixed_precision == "bf16" and bf16_is_fast(accelerator.device.type)  # else emulated: slow
    autocast_dtype = torch.bfloat16 if bf16 else None
    set_seed(cfg.seed)

    model_kwargs = {**lam_preset(cfg.preset), **cfg.model_overrides, "regularizer": cfg.regularizer}
    if "image_size" not in cfg.model_overrides:
        # The data's frame size (videos collected with --size 32, say), unless told otherwise; an --init-from
        # LAM of another size is then refused by name.
        model_kwargs["image_size"] = data_frame_size(data) or model_kwargs.get("image_size", 64)
    if cfg.beta is not None:
        model_kwargs["beta"] = cfg.beta
    model = LatentActionModel(**model_kwargs)
    if cfg.init_from is not None:
        from adaworld_gym.training.world_model import load_lam  # the same loader the world model uses

        copy_weights(load_lam(cfg.init_from), model, cfg.init_from, may_differ=LOSS_SETTINGS)
    model_config = plain_config(model)
    beta = model.config.beta
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_lr_scheduler(optimizer, cfg)

    provenance = training_provenance(data)
    provenance["settings"] = course_settings(cfg)
    state = resume_state(
        ckpt_root, model_config, model, optimizer, scheduler, provenance=provenance,
        announce=progress and accelerator.is_main_process,
    )  # fmt: skip
    run = RunCounter(state)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model: LatentActionModel = accelerator.unwrap_model(model)

    is_main = accelerator.is_main_process
    writer = summary_writer(out_dir, None if state is None else run.step) if is_main else None
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "train_config.json", asdict(cfg))

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        own = process_states(accelerator, data_stream=batches.state_dict(), rng=capture_rng_state())
        if is_main:
            save_checkpoint(
                ckpt_root,
                run.step,
                {
                    "model": raw_model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    **run.state(),
                    "model_config": model_config,
                    "provenance": provenance,
                    **own,  # each process's data position and generators
                    "log_window": vars(window),
                },
            )

    seed = cfg.seed + 7919 * accelerator.process_index  # each process its own data order and draws
    own_state = restore_process_state(accelerator, state, seed)
    batches = resume_stream(
        lambda s: _pair_batches(data, cfg.batch_size, seed=s), seed, own_state, legacy_seed=seed + run.step
    )
    bar = tqdm(
        total=cfg.max_steps,
        initial=run.step,
        disable=not (progress and is_main),
        desc="train-lam",
        unit="step",
    )
    window = _Window()
    if state is not None and "log_window" in state:  # the steps since the last log, for the next one
        vars(window).update(state["log_window"])
    clock = CheckpointClock(
        checkpoint, run.step, cfg.checkpoint_every, cfg.checkpoint_minutes, agree=any_process(accelerator)
    )
    run.start()
    model.train()
    with clock.guard(bar):
        while not run.spent(cfg, any_process(accelerator)):
            try:
                f_t, f_t1 = next(batches)
            except StopIteration:
                break
            f_t, f_t1 = _brightness_jitter(
                f_t.to(accelerator.device), f_t1.to(accelerator.device), cfg.brightness
            )
            with torch.autocast(
                accelerator.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                ramp = min(1.0, (run.step + 1) / max(cfg.kl_warmup_steps, 1))
                out = model(f_t, f_t1, beta=beta * ramp, noise_scale=ramp)
            check_finite_loss(out.loss, run.step, accelerator)
            accelerator.backward(out.loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if accelerator.num_processes > 1 and cfg.regularizer == "vq":
                _sync_codebook(raw_model)

            run.count(f_t.shape[0] * accelerator.num_processes)
            window.add(out, f_t, f_t1, float(grad_norm))
            bar.update(1)

            if writer is not None and run.step % cfg.log_every == 0:
                logs = window.flush()
                logs["lr"] = scheduler.get_last_lr()[0]
                logs["perf/samples_per_s"] = run.samples_per_s
                for key, value in logs.items():
                    writer.add_scalar(key, value, run.step)
                bar.set_postfix(mse=f"{logs['loss/mse']:.4f}", psnr_gain=f"{logs['psnr/gain']:.2f}")
            if writer is not None and run.step % cfg.image_every == 0:
                writer.add_image("recon/ft_ft1_recon_err", image_grid(f_t, f_t1, out.recon), run.step)
            if clock.tick(run.step):
                if eval_data is not None and writer is not None:
                    _log_eval(
                        writer, evaluate_lam(raw_model, eval_data, cfg.batch_size, cfg.eval_batches), run.step
                    )
    model_dir = out_dir / "model"
    if is_main:
        summary: dict[str, Any] = {
            "preset": cfg.preset,
            "regularizer": cfg.regularizer,
            **run.summary(),
            "params": sum(p.numel() for p in raw_model.parameters()),
            "provenance": provenance,
        }
        if eval_data is not None:
            summary["eval"] = evaluate_lam(raw_model, eval_data, cfg.batch_size, cfg.eval_batches)
            if writer is not None:
                _log_eval(writer, summary["eval"], run.step)
        save_model_atomic(raw_model, model_dir, keep_added=True)  # adaworld cluster's options
        write_json(out_dir / "summary.json", summary)
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    return model_dir


@torch.no_grad()
def evaluate_lam(
    model: LatentActionModel,
    data: DataSpec,
    batch_size: int = 64,
    max_batches: int | None = 20,
) -> dict[str, float]:
    """Reconstruction PSNR (latent = mu) vs copying the last frame, from MSE pooled over the clips seen.

    Pooled MSE, not a per-image PSNR mean: identical consecutive frames would make the latter infinite.
    """
    batches = _pair_batches(data, batch_size, seed=0, epochs=1)
    if max_batches is None and batches.sampled:  # would never end
        raise ValueError(
            "max_batches=None reads the data to its end, but episode directories are sampled without end: "
            "give max_batches, or a list of clips"
        )
    was_training = model.training
    model.eval()
    sq_model = sq_copy = 0.0
    count = 0
    try:
        for i, (f_t, f_t1) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            f_t, f_t1 = f_t.to(model.device), f_t1.to(model.device)
            recon = model(f_t, f_t1).recon.float()
            sq_model += float(((recon - f_t1) ** 2).sum())
            sq_copy += float(((f_t - f_t1) ** 2).sum())
            count += f_t1.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluation data yielded no clips")
    psnr_model, psnr_copy = _psnr(sq_model / count), _psnr(sq_copy / count)
    return {
        "psnr_model": psnr_model,
        "psnr_copy_last": psnr_copy,
        "psnr_gain": psnr_model - psnr_copy,
        "pairs": count // f_t1[0].numel(),
    }


# ----------------------------------------------------------------------------------------------------- data
def _pair_batches(data: Any, batch_size: int, seed: int, epochs: int | None = None) -> WindowBatches:
    """Batches of (f_t, f_t1) float [B, 3, H, W] in [0, 1]; lists are reshuffled each epoch."""
    return WindowBatches(data, 1, batch_size, seed, _pair_collate, epochs)


def _pair_collate(clips: list[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    f_t = [np.asarray(clip["history"])[-1] for clip in clips]
    return _to_float(f_t), _to_float([np.asarray(clip["next"]) for clip in clips])


def _to_float(frames: list[np.ndarray]) -> torch.Tensor:
    x = np.stack(frames)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"clips must hold uint8 frames [H, W, 3], got a batch {x.dtype} {x.shape}")
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)


def _brightness_jitter(
    f_t: torch.Tensor, f_t1: torch.Tensor, amount: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale both frames of a pair by the same factor in [1 - amount, 1 + amount] (torchvision convention)."""
    if amount <= 0:
        return f_t, f_t1
    factor = 1.0 + (torch.rand(f_t.shape[0], 1, 1, 1, device=f_t.device) * 2 - 1) * amount
    return (f_t * factor).clamp_(0, 1), (f_t1 * factor).clamp_(0, 1)


# ------------------------------------------------------------------------------------------------- logging
class _Window:
    """Accumulates loss terms and squared errors between two tensorboard writes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.terms: dict[str, float] = {}
        self.steps = 0
        self.sq_model = self.sq_copy = 0.0
        self.count = 0
        self.grad_norm = 0.0
        self.mu_std = 0.0

    def add(self, out: Any, f_t: torch.Tensor, f_t1: torch.Tensor, grad_norm: float) -> None:
        self.steps += 1
        self.terms["total"] = self.terms.get("total", 0.0) + float(out.loss.detach())
        for k, v in out.losses.items():
            self.terms[k] = self.terms.get(k, 0.0) + float(v)
        with torch.no_grad():
            self.sq_model += float(((out.recon.float() - f_t1) ** 2).sum())
            self.sq_copy += float(((f_t - f_t1) ** 2).sum())
            self.mu_std += float(out.mu.float().std(dim=0).mean()) if out.mu.shape[0] > 1 else 0.0
        self.count += f_t1.numel()
        self.grad_norm += grad_norm

    def flush(self) -> dict[str, float]:
        n = max(self.steps, 1)
        logs = {f"loss/{k}": v / n for k, v in self.terms.items()}
        psnr_model, psnr_copy = (
            _psnr(self.sq_model / max(self.count, 1)),
            _psnr(self.sq_copy / max(self.count, 1)),
        )
        logs.update(
            {
                "psnr/recon": psnr_model,
                "psnr/copy_last": psnr_copy,
                "psnr/gain": psnr_model - psnr_copy,
                "latent/mu_std": self.mu_std / n,
                "grad_norm": self.grad_norm / n,
            }
        )
        self.reset()
        return logs


def _log_eval(writer: Any, metrics: Mapping[str, float], step: int) -> None:
    for key in ("psnr_model", "psnr_copy_last", "psnr_gain"):
        writer.add_scalar(f"eval/{key}", metrics[key], step)


def _psnr(mse: float) -> float:
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


# ------------------------------------------------------------------------------------------------- helpers
def _sync_codebook(model: LatentActionModel) -> None:
    """Give every process the main process's VQ codebook.

    A dead code is re-seated inside ``forward`` on the encodings of the process's own batch: each process put
    other values in the same rows, which DDP (it syncs gradients, not weights) never reconciled, so the processes
    trained different models and the saved one was the main process's alone.
    """
    import torch.distributed as dist

    dist.broadcast(model.codebook.weight.data, src=0)


def _validate(cfg: LamTrainConfig) -> None:
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown LAM preset {cfg.preset!r}; known presets: {', '.join(PRESETS)}")
    if cfg.regularizer not in REGULARIZERS:
        raise ValueError(
            f"unknown regularizer {cfg.regularizer!r}; expected one of {', '.join(REGULARIZERS)}"
        )
    validate_run(cfg, min_steps=0 if cfg.init_from else 1)  # 0 steps re-saves the model it starts from
