"""Train the latent-action-conditioned diffusion world model (AdaWorld section 2), under ``accelerate``.

    from adaworld_gym.training.world_model import train_world_model
    model_dir = train_world_model(["data/procgen-train", "data/push"], "runs/wm", "runs/lam/model")
    twin_dir = train_world_model(["data/procgen-train", "data/push"], "runs/wm-agnostic", None,
                                 action_agnostic=True)
    model = DiffusionWorldModel.from_pretrained(model_dir)

Every transition (last history frame, next frame) is labelled on the fly with ``mu`` of the **frozen** LAM
(batched, under ``no_grad``, LAM in eval mode, bf16 autocast); the action-agnostic twin has the same
architecture and budget, with zeros where ``z`` goes, and needs no LAM.

The loop follows ``training/lam.py``: AdamW, warmup then cosine decay (constant when only a wall-clock budget
is given), gradient clipping, an EMA of the weights (diffusers ``EMAModel``) that is what gets evaluated and
saved, tensorboard logs in ``out_dir/logs`` (loss, 1-step PSNR of the EMA model vs copying the last frame on
the evaluation windows, an image grid of predictions), atomic checkpoints in ``out_dir/checkpoints`` (resumed
automatically: step count, wall-clock budget, optimizer, EMA, RNG states and data position continue, so a resumed
run ends with the weights of an uninterrupted one), the EMA model in ``out_dir/model`` and ``out_dir/summary.json``.

Bf16 autocast is the model's own (``autocast_dtype``): the loop adds no autocast around the world model.
``training_loss`` is called on the unwrapped model, which DDP does not see: with several processes
:func:`~adaworld_gym.training.common.optimizer_step` averages the gradients itself.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaworld_gym.data.clips import DataSpec, PrefetchedBatches, WindowBatches, data_frame_size
from adaworld_gym.metrics import psnr_pooled, ssim
from adaworld_gym.models.latent_action import LatentActionModel
from adaworld_gym.models.loading import model_fingerprint, saved_model_dir
from adaworld_gym.models.world_model import WORLD_MODEL_PRESETS, DiffusionWorldModel, world_model_preset
from adaworld_gym.precision import bf16_autocast
from adaworld_gym.training.checkpoint import capture_rng_state, save_checkpoint
from adaworld_gym.training.common import (
    CheckpointClock,
    RunCounter,
    any_process,
    config_from_preset,
    copy_weights,
    course_settings,
    image_grid,
    make_lr_scheduler,
    noise_generator,
    one_run_per_out_dir,
    optimizer_step,
    plain_config,
    process_states,
    restore_noise_generator,
    restore_process_state,
    resume_state,
    resume_stream,
    save_model_atomic,
    summary_writer,
    training_provenance,
    training_state,
    validate_run,
    write_json,
)

__all__ = [
    "WorldModelTrainConfig",
    "check_lam_compatible",
    "ema_weights",
    "evaluate_windows",
    "fixed_windows",
    "label_actions",
    "load_lam",
    "load_world_model",
    "log_eval",
    "to_device",
    "train_world_model",
    "warm_start",
    "window_batches",
    "window_loss",
]


@dataclass
class WorldModelTrainConfig:
    """Hyper-parameters of a world-model training run (model sizes come from ``world_model_preset``)."""

    preset: str = "small"
    action_agnostic: bool = False
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # "cosine" (needs max_steps) or "constant"
    max_steps: int | None = None
    max_minutes: float | None = None
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    mixed_precision: str = "bf16"  # "bf16" or "no": the world model's autocast and the LAM labelling
    seed: int = 0
    log_every: int = 25
    image_every: int = 250
    checkpoint_every: int = 250
    checkpoint_minutes: float = 10.0
    eval_batches: int = 4  # fixed evaluation windows: eval_batches x batch_size
    eval_denoise_steps: int = 3
    lam_dir: str | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a saved world model whose weights start the run (a longer second stage)
    # Batches drawn ahead in a thread: None is 2 on a GPU (the CPU draws while it trains) and 0 on a CPU,
    # whose cores the step already keeps busy. The batches and resume positions are the same either way.
    prefetch_batches: int | None = None

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> WorldModelTrainConfig:
        """Defaults for a preset, with ``None``-valued overrides ignored."""
        return config_from_preset(cls, _TRAIN_PRESETS, preset, "world model", **overrides)


# Budgets: tiny is for tests (seconds at a few steps, ~2 min for its default run); small is the 2-core CPU model (~10 samples/s at one thread with
# a second training beside it, so 1,200 steps of 32 take ~60 minutes); base is for one GPU.
_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        batch_size=8,
        lr=1e-3,
        warmup_steps=0,
        max_steps=50,
        log_every=5,
        image_every=25,
        checkpoint_every=25,
        eval_batches=1,
        eval_denoise_steps=1,
        ema_decay=0.99,
    ),
    "small": dict(batch_size=32, lr=3e-4, warmup_steps=100, max_steps=1200, ema_decay=0.998),
    "base": dict(
        batch_size=64,
        lr=3e-4,
        warmup_steps=1000,
        max_steps=100_000,
        image_every=2000,
        checkpoint_every=5000,
        eval_batches=16,
    ),
}
assert set(_TRAIN_PRESETS) == set(WORLD_MODEL_PRESETS)


def train_world_model(
    data: DataSpec,
    out_dir: str | os.PathLike,
    lam_dir: str | os.PathLike | None,
    preset: str = "small",
    *,
    action_agnostic: bool = False,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    eval_data: DataSpec | None = None,
    progress: bool = True,
    mixed_precision: str | None = None,
    ema_decay: float | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    init_from: str | os.PathLike | None = None,
    lr_schedule: str | None = None,
    warmup_steps: int | None = None,
    log_every: int | None = None,
    image_every: int | None = None,
    checkpoint_every: int | None = None,
    checkpoint_minutes: float | None = None,
    prefetch_batches: int | None = None,
) -> Path:
    """Train a :class:`DiffusionWorldModel` and return the directory of the saved EMA model (``out_dir/model``).

    Args:
        data: clip dicts as yielded by ``ClipDataset`` (``history`` uint8 [k,H,W,3], ``history_len``,
            ``next`` uint8 [H,W,3]; lists are reshuffled every epoch, iterators end training when exhausted),
            one or more episode directories (one ``ClipDataset``, AdaWorld's size^0.43 subset weighting), or a
            mapping ``{directory: share}`` that fixes each directory's share of the training windows.
        out_dir: run directory; a checkpoint found in it is resumed.
        lam_dir: the trained LAM (its ``model`` directory or the run directory holding it); frozen, it labels
            every transition with ``mu``. May be None only with ``action_agnostic=True``.
        preset: ``tiny``, ``small`` or ``base`` (model sizes and training defaults).
        action_agnostic: train the baseline twin: same architecture and budget, zeros for ``z``.
        max_steps: total optimizer steps (across resumes); None keeps the preset default unless
            ``max_minutes`` is given alone.
        max_minutes: total training wall-clock budget (across resumes).
        batch_size, lr, ema_decay: override the preset defaults.
        seed: seeds Python, numpy, torch and the diffusion noise; the same seed gives the same run on CPU.
            A resumed run continues the weights, optimizer, EMA, RNG states and the data stream where its
            checkpoint left them, so it ends with the weights of an uninterrupted run (on CPU).
        eval_data: held-out windows (same forms as ``data``); a fixed sample of them is evaluated at every
            checkpoint and at the end (``out_dir/summary.json``).
        progress: show a tqdm progress bar.
        mixed_precision: ``bf16`` (default) or ``no``.
        model_overrides: extra model config (e.g. ``{"num_history": 2}``).
        init_from: a saved world model (same config) whose weights start the run instead of a fresh init,
            e.g. to train a shipped model longer with a new schedule.
        lr_schedule, warmup_steps: override the preset's ``cosine`` / warmup.
        log_every, image_every: tensorboard scalar / image intervals in steps.
        checkpoint_every, checkpoint_minutes: checkpoint every N steps or M minutes, whichever comes first.
        prefetch_batches: batches drawn ahead in a background thread; None: 2 on a GPU, 0 on a CPU. The run
            trains on the same batches either way.

    Raises:
        ValueError: no LAM for an action-conditioned model, or a LAM whose image size or latent dimension does
            not match the world model's; a run directory written for another model config.
    """
    cfg = WorldModelTrainConfig.from_preset(
        preset,
        max_steps=max_steps,
        max_minutes=max_minutes,
        batch_size=batch_size,
        lr=lr,
        lr_schedule=lr_schedule,
        warmup_steps=warmup_steps,
        ema_decay=ema_decay,
        mixed_precision=mixed_precision,
        log_every=log_every,
        image_every=image_every,
        checkpoint_every=checkpoint_every,
        checkpoint_minutes=checkpoint_minutes,
        prefetch_batches=prefetch_batches,
    )
    cfg = replace(
        cfg,
        action_agnostic=action_agnostic,
        seed=seed,
        lam_dir=None if lam_dir is None else os.fspath(lam_dir),
        model_overrides=dict(model_overrides or {}),
        init_from=None if init_from is None else os.fspath(init_from),
    )
    return run_world_model_training(cfg, data, out_dir, eval_data=eval_data, progress=progress)


@one_run_per_out_dir
def run_world_model_training(
    cfg: WorldModelTrainConfig,
    data: DataSpec,
    out_dir: str | os.PathLike,
    *,
    eval_data: DataSpec | None = None,
    progress: bool = True,
) -> Path:
    """Run the training described by ``cfg`` (see :func:`train_world_model` for the arguments)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    _validate(cfg)
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "checkpoints"
    # No Accelerator(mixed_precision=...): the model autocasts itself (see lam.py for why not accelerate's).
    accelerator = Accelerator()
    set_seed(cfg.seed)
    bf16 = cfg.mixed_precision == "bf16"

    lam = None if cfg.action_agnostic else load_lam(cfg.lam_dir)
    # The LAM fixes the latent size and the frame size the model works in (unless model_overrides says else).
    from_lam = (
        {} if lam is None else {"action_dim": lam.config.latent_dim, "sample_size": lam.config.image_size}
    )
    model = DiffusionWorldModel(
        **{
            **world_model_preset(cfg.preset),
            **from_lam,
            **cfg.model_overrides,
            "action_agnostic": cfg.action_agnostic,
            "autocast_dtype": "bfloat16" if bf16 else None,
        }
    )
    if cfg.init_from is not None:
        warm_start(model, cfg.init_from)
        if cfg.lam_dir is not None:  # a start trained on another LAM's latents would learn them over again
            warn_if_other_lam(cfg.init_from, cfg.lam_dir)
    if lam is not None:
        check_lam_compatible(lam, model)
        lam.to(accelerator.device)
    size = data_frame_size(data)
    if size is not None and size != model.config.sample_size:  # else it fails at the first batch, in the LAM
        raise ValueError(
            f"the frames of {data} are {size}x{size}, but the world model works at {model.config.sample_size}x"
            f"{model.config.sample_size}"
            + (f" (the size its LAM {cfg.lam_dir} takes)" if lam is not None else "")
            + ": train on data of that size, or with a LAM trained at this one"
        )
    model_config = plain_config(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_lr_scheduler(optimizer, cfg)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, foreach=True)  # one kernel per op, not per tensor
    # One generator for every draw inside training_loss (history length, augmentation, sigma, noise).
    noise_gen = noise_generator(accelerator.device, cfg.seed)

    provenance = training_provenance(data, lam=cfg.lam_dir)  # the labels come from this LAM
    provenance["settings"] = course_settings(cfg)
    notes = lam_note(cfg.lam_dir)  # now: the LAM directory may be moved or retrained before the run ends
    state = resume_state(
        ckpt_root, model_config, model, optimizer, scheduler, ema, provenance,
        announce=progress and accelerator.is_main_process,
    )  # fmt: skip
    run = RunCounter(state)
    if state is not None:
        restore_noise_generator(noise_gen, state["noise_generator"], cfg.seed + run.step)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model: DiffusionWorldModel = accelerator.unwrap_model(model)
    ema.to(accelerator.device)
    k = raw_model.config.num_history

    is_main = accelerator.is_main_process
    writer = summary_writer(out_dir, None if state is None else run.step) if is_main else None
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "train_config.json", asdict(cfg))

    eval_set = None
    if eval_data is not None:
        eval_set = fixed_windows(eval_data, k, cfg.batch_size, cfg.eval_batches, accelerator.device)
        for batch in eval_set:
            batch["z"] = _actions(lam, batch, raw_model.config.action_dim, bf16)

    def evaluate() -> dict[str, float]:
        with ema_weights(ema, raw_model):
            return evaluate_windows(raw_model, eval_set, cfg.eval_denoise_steps, cfg.seed)

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        own = process_states(
            accelerator, data_stream=batches.state_dict(), rng=capture_rng_state(), noise_generator=noise_gen.get_state()
        )  # fmt: skip
        if is_main:
            state = training_state(
                raw_model, optimizer, scheduler, ema, noise_gen, model_config,
                **run.state(), provenance=provenance,
                log_window=[loss_sum, grad_sum, window_steps], **own,
            )  # fmt: skip
            save_checkpoint(ckpt_root, run.step, state)

    seed = cfg.seed + 7919 * accelerator.process_index  # each process its own data order and draws
    own_state = restore_process_state(accelerator, state, seed)
    if accelerator.process_index > 0:  # its own noise too, not the main process's
        saved = (own_state or {}).get("noise_generator")
        if saved is not None:
            restore_noise_generator(noise_gen, saved, seed + run.step)
        else:
            noise_gen.manual_seed(seed + run.step)
    batches = resume_stream(
        lambda s: window_batches(data, k, cfg.batch_size, seed=s),
        seed,
        own_state,
        legacy_seed=seed + run.step,
    )
    prefetch = cfg.prefetch_batches
    if prefetch is None:
        prefetch = 0 if accelerator.device.type == "cpu" else 2
    if prefetch:
        batches = PrefetchedBatches(batches, depth=prefetch)
    desc = "train-wm-agnostic" if cfg.action_agnostic else "train-wm"
    bar = tqdm(
        total=cfg.max_steps, initial=run.step, disable=not (progress and is_main), desc=desc, unit="step"
    )
    loss_sum, grad_sum, window_steps = 0.0, 0.0, 0
    if state is not None and "log_window" in state:  # the steps since the last log, for the next one
        loss_sum, grad_sum, window_steps = state["log_window"]
    clock = CheckpointClock(
        checkpoint, run.step, cfg.checkpoint_every, cfg.checkpoint_minutes, agree=any_process(accelerator)
    )
    run.start()
    model.train()
    with clock.guard(bar), batches if prefetch else contextlib.nullcontext():
        while not run.spent(cfg, any_process(accelerator)):
            try:
                batch = to_device(next(batches), accelerator.device)
            except StopIteration:
                break
            z = _actions(lam, batch, raw_model.config.action_dim, bf16)
            loss = window_loss(raw_model, batch, z, noise_gen)
            grad_norm = optimizer_step(
                accelerator, loss, model.parameters(), optimizer, scheduler, ema, cfg.grad_clip, run.step
            )

            run.count(batch["next"].shape[0] * accelerator.num_processes)
            loss_sum, grad_sum, window_steps = (
                loss_sum + float(loss.detach()),
                grad_sum + float(grad_norm),
                window_steps + 1,
            )
            bar.update(1)

            if writer is not None and run.step % cfg.log_every == 0:
                logs = {
                    "loss/denoise": loss_sum / window_steps,
                    "grad_norm": grad_sum / window_steps,
                    "lr": scheduler.get_last_lr()[0],
                    "perf/samples_per_s": run.samples_per_s,
                }
                for key, value in logs.items():
                    writer.add_scalar(key, value, run.step)
                bar.set_postfix(loss=f"{logs['loss/denoise']:.4f}")
                loss_sum, grad_sum, window_steps = 0.0, 0.0, 0
            if clock.tick(run.step):
                if eval_set is not None and writer is not None:
                    log_eval(writer, evaluate(), run.step)
            if writer is not None and run.step % cfg.image_every == 0:
                shown = eval_set[0] if eval_set is not None else {**batch, "z": z}
                with ema_weights(ema, raw_model):
                    grid = _prediction_grid(raw_model, shown, cfg.eval_denoise_steps)
                writer.add_image("predictions/last_next_pred_err", grid, run.step)
    model_dir = out_dir / "model"
    if is_main:
        summary: dict[str, Any] = {
            "preset": cfg.preset,
            "action_agnostic": cfg.action_agnostic,
            "lam_dir": cfg.lam_dir,
            **run.summary(),
            "params": sum(p.numel() for p in raw_model.parameters()),
            "provenance": provenance,
        }
        if eval_set is not None:
            summary["eval"] = evaluate()
            if writer is not None:
                log_eval(writer, summary["eval"], run.step)
        with ema_weights(ema, raw_model):  # the saved model holds the EMA weights
            save_model_atomic(raw_model, model_dir, notes=notes)
        write_json(out_dir / "summary.json", summary)
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    return model_dir


# ---------------------------------------------------------------------------------------------- the LAM
def load_lam(path: str | os.PathLike | None) -> LatentActionModel:
    """The frozen LAM of ``path`` (its ``model`` directory or the run directory holding it), in eval mode."""
    if path is None:
        raise ValueError(
            "an action-conditioned world model needs a LAM: pass lam_dir (or action_agnostic=True)"
        )
    lam = LatentActionModel.from_pretrained(model_dir_of(path, "LAM", "train_lam")).eval()
    lam.requires_grad_(False)
    return lam


LAM_NOTE = "lam.json"  # beside a trained world model's weights: the LAM whose latents it was trained on


def lam_note(lam_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The note a world model is saved with: its LAM's path and digest (none for the twin)."""
    if lam_dir is None:
        return {}
    return {
        LAM_NOTE: {
            "lam": os.fspath(lam_dir),
            "digest": model_fingerprint(model_dir_of(lam_dir, "LAM", "train_lam")),
        }
    }


def warn_if_other_lam(model_path: str | os.PathLike, lam_dir: str | os.PathLike) -> None:
    """Warn when ``lam_dir`` is not the LAM the world model at ``model_path`` was trained on (its ``lam.json``;
    models saved without one, such as the shipped model, are not checked). Its latents would then come from
    another latent space: a codebook initialised from them, or a transfer driven by them, means other moves.
    Call it once both have loaded (their own errors name a bad path better)."""
    import warnings

    note = model_dir_of(model_path, "world model", "train_world_model") / LAM_NOTE
    if not note.is_file():
        return
    try:
        trained = json.loads(note.read_text(encoding="utf-8"))
        trained_on, digest = trained["lam"], trained["digest"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"unreadable {note}: {err}") from err
    if model_fingerprint(lam_dir) != digest:
        warnings.warn(
            f"the world model at {model_path} was trained on the latent actions of another LAM ({trained_on}) "
            f"than {lam_dir}: its latents mean other moves to this model; pass the LAM it was trained with",
            stacklevel=2,
        )


def load_world_model(path: str | os.PathLike) -> DiffusionWorldModel:
    """A saved world model (its ``model`` directory or the run directory holding it), in eval mode."""
    return DiffusionWorldModel.from_pretrained(model_dir_of(path, "world model", "train_world_model")).eval()


def warm_start(model: DiffusionWorldModel, path: str | os.PathLike) -> None:
    """Copy the weights of the saved world model at ``path`` into ``model``; their configs must match.

    A checkpoint found in the run directory is resumed afterwards and wins, so this only shapes step 0.
    """
    copy_weights(load_world_model(path), model, path)


def model_dir_of(path: str | os.PathLike, what: str, writer: str) -> Path:
    """The saved model's directory: ``path`` itself, or ``path/model`` for a training run's directory."""
    path = saved_model_dir(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no {what} found at {path}: expected a directory written by {writer}")
    return path


def check_lam_compatible(lam: LatentActionModel, model: DiffusionWorldModel) -> None:
    """Raise a ValueError if ``lam`` cannot label transitions for ``model`` (frame size, latent size)."""
    if lam.config.image_size != model.config.sample_size:
        raise ValueError(
            f"LAM image_size {lam.config.image_size} does not match the world model's sample_size "
            f"{model.config.sample_size}: use the LAM the world model was trained with (train-wm takes the "
            "LAM's sizes)"
        )
    if lam.config.latent_dim != model.config.action_dim:
        raise ValueError(
            f"LAM latent_dim {lam.config.latent_dim} does not match the world model's action_dim "
            f"{model.config.action_dim}: use the LAM the world model was trained with (train-wm takes the "
            "LAM's sizes)"
        )


@torch.no_grad()
def label_actions(
    lam: LatentActionModel, f_t: torch.Tensor | np.ndarray, f_t1: torch.Tensor | np.ndarray, bf16: bool = True
) -> torch.Tensor | np.ndarray:
    """The frozen LAM's ``mu`` of uint8 frame pairs [B,H,W,3], float32 (bf16 autocast inside when asked)."""
    device = lam.device.type
    with bf16_autocast(device, bf16):
        mu = lam.encode(f_t, f_t1)
    return mu.astype(np.float32) if isinstance(mu, np.ndarray) else mu.float()


def window_loss(
    model: DiffusionWorldModel, batch: Mapping[str, torch.Tensor], z: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The denoising loss of a batch of windows (see :func:`window_batches`) under latent actions ``z``."""
    # Train on 1..history_len real frames per window (AdaWorld draws the memory length uniformly);
    # drawing up to the clip's own length never feeds the zero padding at an episode start as frames.
    u = torch.rand(batch["history_len"].shape, generator=generator, device=generator.device).to(z.device)
    lengths = 1 + (u * batch["history_len"]).long()
    return model.training_loss(batch["history"], batch["next"], z, history_len=lengths, generator=generator)


def _actions(
    lam: LatentActionModel | None, batch: Mapping[str, torch.Tensor], dim: int, bf16: bool
) -> torch.Tensor:
    """z for a batch of windows: the LAM's mu of (last history frame, next frame), or zeros for the twin."""
    if lam is None:
        return torch.zeros(batch["next"].shape[0], dim, device=batch["next"].device)
    return label_actions(lam, batch["history"][:, -1], batch["next"], bf16)


# ------------------------------------------------------------------------------------------------- data
def window_batches(
    data: DataSpec, history: int, batch_size: int, seed: int, epochs: int | None = None
) -> WindowBatches:
    """Batches of windows (``history`` uint8 [B,h,H,W,3], ``next`` uint8 [B,H,W,3], ``history_len`` [B]).

    Lists are reshuffled each epoch; the returned iterator's ``state_dict`` is its position (for checkpoints).
    """
    return WindowBatches(data, history, batch_size, seed, partial(_collate, k=history), epochs)


def _collate(clips: list[Mapping[str, Any]], k: int) -> dict[str, torch.Tensor]:
    history = np.stack([np.asarray(c["history"]) for c in clips])
    nxt = np.stack([np.asarray(c["next"]) for c in clips])
    if history.dtype != np.uint8 or history.ndim != 5 or not 1 <= history.shape[1] <= k:
        raise ValueError(
            f"clips must hold uint8 history [h<={k}, H, W, 3], got a batch {history.dtype} {history.shape}"
        )
    lengths = np.array([int(c.get("history_len", history.shape[1])) for c in clips])
    batch = {
        "history": torch.from_numpy(history),
        "next": torch.from_numpy(nxt),
        "history_len": torch.from_numpy(lengths.clip(1, history.shape[1])),
    }
    if all("action" in c for c in clips):  # labelled windows (adaptation) keep their real actions
        batch["action"] = torch.from_numpy(np.stack([np.asarray(c["action"]) for c in clips]))
    if all("motion" in c for c in clips):  # and their motion contexts, when the adapter reads them
        batch["motion"] = torch.from_numpy(np.stack([np.asarray(c["motion"], np.float32) for c in clips]))
    return batch


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def fixed_windows(
    data: DataSpec, history: int, batch_size: int, max_batches: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """The same evaluation windows every time (seed 0, first ``max_batches`` batches)."""
    batches = []
    for batch in window_batches(data, history, batch_size, seed=0, epochs=1):
        batches.append(to_device(batch, device))
        if len(batches) == max_batches:
            break
    if not batches:
        raise ValueError("evaluation data yielded no windows")
    return batches


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_windows(
    model: DiffusionWorldModel, eval_set: list[dict[str, torch.Tensor]], denoise_steps: int, seed: int
) -> dict[str, float]:
    """1-step prediction vs copying the last frame, PSNR from the MSE pooled over all evaluation windows."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    try:
        preds = [_predict(model, batch, denoise_steps, gen) for batch in eval_set]
    finally:
        model.train(was_training)
    pred = torch.cat(preds).cpu()
    target = torch.cat([b["next"] for b in eval_set]).cpu()
    last = torch.cat([b["history"][:, -1] for b in eval_set]).cpu()
    psnr_model, psnr_copy = psnr_pooled(pred, target), psnr_pooled(last, target)
    return {
        "psnr_1step": psnr_model,
        "psnr_copy_last": psnr_copy,
        "psnr_gain": psnr_model - psnr_copy,
        "ssim_1step": ssim(pred, target),
        "windows": len(target),
    }


def _predict(
    model: DiffusionWorldModel, batch: Mapping[str, torch.Tensor], steps: int, gen: torch.Generator
) -> torch.Tensor:
    return model.predict_next(
        batch["history"], batch["z"], steps=steps, generator=gen, history_len=batch["history_len"]
    )


def _prediction_grid(
    model: DiffusionWorldModel, batch: Mapping[str, torch.Tensor], steps: int
) -> torch.Tensor:
    """Rows of (last frame, true next, prediction, 4x |error|) as a [3, H', W'] image in [0, 1]."""
    was_training = model.training
    model.eval()
    try:
        pred = _predict(model, batch, steps, torch.Generator().manual_seed(0))
    finally:
        model.train(was_training)

    def unit(frames: torch.Tensor) -> torch.Tensor:
        return frames.permute(0, 3, 1, 2).float().cpu() / 255.0

    return image_grid(unit(batch["history"][:, -1]), unit(batch["next"]), unit(pred))


@contextlib.contextmanager
def ema_weights(ema: Any, model: DiffusionWorldModel) -> Iterator[None]:
    """Swap the EMA weights (the model that is evaluated and saved) in, then the training weights back."""
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield
    finally:
        ema.restore(model.parameters())


def log_eval(writer: Any, metrics: Mapping[str, float], step: int) -> None:
    for key in ("psnr_1step", "psnr_copy_last", "psnr_gain", "ssim_1step"):
        writer.add_scalar(f"eval/{key}", metrics[key], step)


def _validate(cfg: WorldModelTrainConfig) -> None:
    if cfg.preset not in _TRAIN_PRESETS:
        raise ValueError(
            f"unknown world model preset {cfg.preset!r}; known presets: {', '.join(_TRAIN_PRESETS)}"
        )
    validate_run(cfg, min_steps=0 if cfg.init_from else 1)  # 0 steps re-saves the model it starts from
    prefetch = cfg.prefetch_batches
    if prefetch is not None and (isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0):
        raise ValueError(f"prefetch_batches must be None or an integer >= 0, got {prefetch!r}")
    if not cfg.action_agnostic and cfg.lam_dir is None:
        raise ValueError(
            "an action-conditioned world model needs a LAM: pass lam_dir (or action_agnostic=True)"
        )
