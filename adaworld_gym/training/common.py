"""Small pieces shared by the training loops."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaworld_gym._checks import add_note
from adaworld_gym.data.episodes import EpisodeError, sha256_file, swap_in_directory

try:
    import fcntl
except ImportError:  # Windows: runs go unguarded
    fcntl = None  # type: ignore[assignment]


def budget_spent(
    max_steps: int | None,
    max_minutes: float | None,
    step: int,
    train_seconds: float,
    agree: Callable[[Sequence[bool]], list[bool]] | None = None,
) -> bool:
    """True once the step budget or the wall-clock budget (both counted across resumes) is used up.

    ``agree`` (:func:`any_process`, with several processes): the wall-clock budget is then spent everywhere once
    it is spent on any process. Each process reads its own clock; one stopping a step before the others would
    leave them waiting in the next step's collectives (and it in the final save's) for ever.
    """
    if max_steps is not None and step >= max_steps:
        return True
    if max_minutes is None:
        return False
    spent = train_seconds >= max_minutes * 60
    if agree is not None:
        (spent,) = agree([spent])
    return spent


class RunCounter:
    """A training run's optimizer steps, samples and training seconds, all counted across resumes.

    The clock runs from :meth:`start` (just before the loop, so that loading models and data is not training
    time) and adds to what a checkpoint's state brought along.
    """

    def __init__(self, state: Mapping[str, Any] | None = None) -> None:
        self.step, self.samples, self.train_seconds = (
            (0, 0, 0.0) if state is None else (state["step"], state["samples"], state["train_seconds"])
        )
        self.start()

    def start(self) -> None:
        self._base, self._started = self.train_seconds, time.monotonic()

    def count(self, samples: int) -> None:
        """One optimizer step over ``samples`` samples (all processes' together) is done."""
        self.step += 1
        self.samples += samples
        self.train_seconds = self._base + time.monotonic() - self._started

    def spent(self, cfg: Any, agree: Callable[[Sequence[bool]], list[bool]] | None = None) -> bool:
        """:func:`budget_spent` for ``cfg.max_steps`` and ``cfg.max_minutes``."""
        return budget_spent(cfg.max_steps, cfg.max_minutes, self.step, self.train_seconds, agree)

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(self.train_seconds, 1e-9)

    def state(self) -> dict[str, Any]:
        """The checkpoint's fields."""
        return {"step": self.step, "samples": self.samples, "train_seconds": self.train_seconds}

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` fields."""
        return {
            "steps": self.step,
            "samples": self.samples,
            "train_minutes": self.train_seconds / 60,
            "samples_per_s": self.samples_per_s,
        }


def plain_config(model: Any) -> dict[str, Any]:
    """A diffusers model's config without its private bookkeeping keys."""
    return {k: v for k, v in dict(model.config).items() if not k.startswith("_")}


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (a kill leaves the old file or the new one)."""
    from adaworld_gym.data.episodes import atomic_write_bytes

    atomic_write_bytes(Path(path), json.dumps(obj, indent=2).encode("utf-8"))


BUNDLE = "bundle"  # the kind of save_model_atomic's bundle saves (a model's kind is its class name)


def save_model_atomic(
    model: Any,
    model_dir: Path,
    notes: Mapping[str, Any] | None = None,
    keep_added: bool = False,
    kind: str | None = None,
) -> None:
    """``save_pretrained`` into a side directory, then swap it in, so a kill never leaves half a model.

    An existing ``model_dir`` is replaced only if it is empty or an earlier save of the same kind (see
    :func:`check_save_target`); anything else raises ``FileExistsError`` and is left alone. The old save
    is moved aside before the new one is moved in and deleted after, so a kill leaves the old or the new one
    (or, between the two renames, the old one in ``.NAME-old``). ``notes``: ``{file name: JSON value}`` written
    beside the weights in the same swap. ``keep_added``: files added to the old save since (a LAM's control
    options) stay when the weights are the same (see :func:`_keep_added_files`). ``kind``: what is saved,
    ``BUNDLE`` or a model class name (default: ``model``'s class).
    """
    model_dir = Path(model_dir).resolve()
    check_save_target(model_dir, kind or type(model).__name__)
    tmp = model_dir.with_name(f".{model_dir.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for name, value in (notes or {}).items():
        write_json(tmp / name, value)
    if keep_added:
        _keep_added_files(model_dir, tmp)
    swap_in_directory(tmp, model_dir)


def check_save_target(model_dir: Path, kind: str) -> None:
    """``FileExistsError`` unless ``model_dir`` is absent, empty or an earlier save of the same ``kind``
    (``BUNDLE``: it holds a ``bundle.json``; a model class name: a ``config.json`` of that class and no
    ``bundle.json``), which a save replaces whole. Anything else would be lost: a LAM's folder given as a
    bundle's ``--out`` went, options and all."""
    if not model_dir.exists():
        return
    if not model_dir.is_dir():
        raise FileExistsError(f"cannot save to {model_dir}: it is a file")
    if not any(model_dir.iterdir()):
        return
    is_bundle = (model_dir / "bundle.json").is_file()
    if kind == BUNDLE:
        found = None if is_bundle else "no bundle.json"
    else:
        found = "a bundle" if is_bundle else _saved_class(model_dir / "config.json")
        found = None if found == kind else found or "no config.json"
    if found is not None:
        what = "a bundle" if kind == BUNDLE else f"a {kind}"
        raise FileExistsError(
            f"cannot save {what} to {model_dir}: it holds something else ({found}), which the save would replace "
            "whole; choose an empty or new directory"
        )


def _saved_class(config: Path) -> str | None:
    """The ``_class_name`` a saved model's ``config.json`` names (``"unreadable config.json"`` if it cannot be
    read), or None without one."""
    if not config.is_file():
        return None
    try:
        return str(json.loads(config.read_text(encoding="utf-8"))["_class_name"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable config.json"


def _keep_added_files(old_dir: Path, new_dir: Path) -> None:
    """Carry files added beside saved weights (``adaworld cluster``'s options) into a save of the same weights.

    Re-running a finished training command saves the same weights again, which used to drop the options; a
    save of other weights drops them with a warning, since they were made from the earlier weights' latents.
    """
    if not old_dir.is_dir():
        return
    added = sorted(p for p in old_dir.iterdir() if p.is_file() and not (new_dir / p.name).exists())
    if not added:
        return
    weights = sorted(p.name for p in new_dir.glob("*.safetensors"))
    same = bool(weights) and all(
        (old_dir / name).is_file() and sha256_file(old_dir / name) == sha256_file(new_dir / name)
        for name in weights
    )
    if same:
        for path in added:
            shutil.copy2(path, new_dir / path.name)
    else:
        warnings.warn(
            f"{old_dir} held {', '.join(p.name for p in added)}, made for its earlier weights: not kept with the new "
            "ones (rerun `adaworld cluster` for new control options)",
            stacklevel=3,
        )


def image_grid(f_t: torch.Tensor, f_t1: torch.Tensor, pred: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Columns of (f_t, f_t1, prediction, 4x |error|), one row per sample, as a [3, H', W'] image in [0, 1]."""
    n = min(n, f_t.shape[0])
    err = ((pred.float() - f_t1).abs() * 4).clamp(0, 1)
    cols = [x[:n].detach().float().cpu() for x in (f_t, f_t1, pred, err)]
    rows = torch.cat(cols, dim=3)  # [n, 3, H, 4W]
    return torch.cat(list(rows), dim=1)  # [3, nH, 4W]


def config_from_preset(
    cls: type, presets: dict[str, dict[str, Any]], preset: str, what: str, **overrides: Any
):
    """A training config with a preset's defaults and the overrides of :func:`with_overrides`."""
    if preset not in presets:
        raise ValueError(f"unknown {what} preset {preset!r}; known presets: {', '.join(presets)}")
    return with_overrides(replace(cls(preset=preset), **presets[preset]), **overrides)


def with_overrides(cfg: Any, **overrides: Any) -> Any:
    """``cfg`` with the given overrides, ``None``-valued ones ignored.

    ``max_minutes`` without ``max_steps`` trains to the wall clock alone: no step limit, and a constant learning
    rate unless ``lr_schedule`` is given (a cosine decay needs a fixed horizon).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if "max_minutes" in given and "max_steps" not in given:
        given = {"lr_schedule": "constant", **given, "max_steps": None}
    return replace(cfg, **given)


def validate_run(cfg: Any, min_steps: int = 1) -> None:
    """Checks every training config shares: budget, schedule, precision, batch size.

    ``min_steps``: the smallest ``max_steps`` that makes sense (0 for adaptation, whose step 0 is a bundle).
    """
    if cfg.max_steps is None and cfg.max_minutes is None:
        raise ValueError("give a budget: max_steps and/or max_minutes")
    if cfg.max_steps is not None and cfg.max_steps < min_steps:
        raise ValueError(f"max_steps must be >= {min_steps}, got {cfg.max_steps}")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise ValueError(f"max_minutes must be > 0, got {cfg.max_minutes}")
    if cfg.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; expected 'cosine' or 'constant'")
    if cfg.lr_schedule == "cosine" and cfg.max_steps is None:
        raise ValueError(
            "a cosine schedule needs max_steps; use lr_schedule='constant' with max_minutes only"
        )
    if cfg.mixed_precision not in ("bf16", "no"):
        raise ValueError(f"mixed_precision must be 'bf16' or 'no', got {cfg.mixed_precision!r}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):  # 0 trains nothing
        raise ValueError(f"lr must be finite and > 0, got {cfg.lr!r}")
    for name in ("log_every", "image_every", "checkpoint_every", "eval_batches"):
        value = getattr(cfg, name, 1)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not getattr(cfg, "checkpoint_minutes", 1.0) > 0:
        raise ValueError(f"checkpoint_minutes must be > 0, got {cfg.checkpoint_minutes}")
    clip = getattr(cfg, "grad_clip", 1.0)  # 0 would zero every gradient, < 0 turn descent into ascent
    if not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
        raise ValueError(f"grad_clip must be finite and > 0, got {clip!r}")
    warmup = cfg.warmup_steps  # a negative one shifted the schedule: diffusers' ramp hit its peak early
    if not isinstance(warmup, (int, np.integer)) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup!r}")
    if cfg.max_steps is not None and cfg.warmup_steps >= cfg.max_steps > 0:
        warnings.warn(
            f"warmup_steps {cfg.warmup_steps} >= max_steps {cfg.max_steps}: the learning rate never reaches its peak",
            stacklevel=3,
        )


def make_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: Any):
    """Warm-up then cosine decay over ``max_steps``, or warm-up then constant for wall-clock budgets.

    diffusers' warm-up starts at 0: the first step runs at lr 0 and the peak comes at step ``warmup_steps + 1``.
    Kept as it is, so that every earlier run's command reproduces its weights.
    """
    from diffusers.optimization import get_scheduler

    schedule = "cosine" if cfg.lr_schedule == "cosine" else "constant_with_warmup"
    return get_scheduler(
        schedule, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps or 0
    )


def training_provenance(data: Any, **models: str | os.PathLike | None) -> dict[str, Any]:
    """What a run learns from, to refuse resuming it on something else: the data directories (resolved paths,
    with their shares when fixed; None for in-memory windows), a digest of their episodes (the manifests'
    checksums: an episode added or rewritten counts) and the fingerprint of each frozen model it uses
    (:func:`~adaworld_gym.models.loading.model_fingerprint`, the one a world model's ``lam.json`` records, so
    clustering a LAM mid-run changes nothing; a bundle, which is no single model, by all its files)."""
    from adaworld_gym.data.clips import episodes_digest
    from adaworld_gym.models.loading import directory_digest, model_fingerprint, saved_model_dir

    def fingerprint(path: str | os.PathLike) -> str:
        one_model = (saved_model_dir(path) / "config.json").is_file()
        return model_fingerprint(path) if one_model else directory_digest(path)

    if isinstance(data, (str, os.PathLike)):
        spec: Any = [str(Path(data).resolve())]
    elif isinstance(data, Mapping):
        spec = {str(Path(k).resolve()): float(v) for k, v in data.items()}
    elif isinstance(data, (list, tuple)) and data and all(isinstance(d, (str, os.PathLike)) for d in data):
        spec = [str(Path(d).resolve()) for d in data]
    else:
        spec = None
    # The episodes themselves too: data added to a directory between a kill and the resume changed the batches.
    episodes = None
    if spec is not None:
        with contextlib.suppress(OSError, ValueError):  # unreadable data: the loader names the problem
            episodes = episodes_digest(list(spec))
    # Under "models": checkpoints written before, with other digests at the top level, leave them uncompared.
    return {
        "data": spec,
        "episodes": episodes,
        "models": {k: None if v is None else fingerprint(v) for k, v in models.items()},
    }


# Settings that steer a run's course (its batches, noise, schedule, clipping): a resume asked for other values would
# silently continue the old ones (the checkpoint's RNG and data stream) while train_config.json recorded the new.
# The budget, logging and checkpoint cadence may change; lr, weight decay, betas and EMA decay are checked apart.
COURSE_SETTINGS = (
    "seed", "batch_size", "grad_clip", "warmup_steps", "lr_schedule", "regularizer", "beta", "kl_warmup_steps",
    "brightness", "action_agnostic", "event_fraction", "eval_fraction", "max_episodes", "samples_per_action",
    "trajectories", "init", "mlp_fit_steps", "motion", "pretrained_lr_scale", "imagined_denoise_steps",
)  # fmt: skip


def course_settings(cfg: Any) -> dict[str, Any]:
    """The :data:`COURSE_SETTINGS` a training config has, for a checkpoint's provenance (``settings``)."""
    return {k: getattr(cfg, k) for k in COURSE_SETTINGS if hasattr(cfg, k)}


def _changed_inputs(saved: dict[str, Any] | None, now: dict[str, Any] | None) -> dict[str, Any]:
    """The entries of a checkpoint's provenance ``saved`` that ``now`` contradicts (each frozen model under its own
    name, ``lam``, ``pretrained``): their saved values. Entries either lacks are not compared."""

    def differs(was: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        return {k: was[k] for k, v in new.items() if v is not None and was.get(k) is not None and was[k] != v}

    saved, now = saved or {}, now or {}
    nested = ("models", "settings")  # compared entry by entry; checkpoints written before lack "settings"
    changed = differs(
        {k: v for k, v in saved.items() if k not in nested}, {k: v for k, v in now.items() if k not in nested}
    )
    for key in nested:
        if isinstance(saved.get(key), dict) and isinstance(now.get(key), dict):
            changed.update(differs(saved[key], now[key]))
    return changed


def resume_state(
    ckpt_root: Path,
    model_config: dict[str, Any],
    model,
    optimizer,
    scheduler,
    ema: Any = None,
    provenance: dict[str, Any] | None = None,
    announce: bool = False,
) -> dict | None:
    """Load the latest checkpoint into model, optimizer, scheduler and ``ema`` (and the RNGs); None if there is none.

    A corrupt newest checkpoint (a kill during a copy, a full disk) falls back to the one before it, with a
    warning. A checkpoint written with another model config, learning rate or EMA decay is refused: resuming
    would silently keep the old rate and decay (they live in the optimizer and EMA states). So is one whose
    ``provenance`` (:func:`training_provenance`: data directories, frozen models) differs where both are known.
    The returned state also holds ``step``, ``samples``, ``train_seconds`` and any loop-specific extras.
    """
    import warnings

    from adaworld_gym.training.checkpoint import (
        CheckpointError,
        list_checkpoints,
        load_checkpoint,
        restore_rng_state,
    )

    candidates = list_checkpoints(ckpt_root)[::-1]
    if not candidates:
        return None
    for i, path in enumerate(candidates):
        try:
            state = load_checkpoint(path)
            break
        except CheckpointError as e:
            if i + 1 == len(candidates):  # no good checkpoint left to fall back on
                add_note(e, f"to start the run over, delete {ckpt_root} (or use a new out_dir)")
                raise
            # Set aside: kept in the listing, it would count as the newest and save_checkpoint would prune
            # good checkpoints in its place.
            aside = path.with_name(f".corrupt-{path.name}")
            _set_aside(path, aside)
            warnings.warn(
                f"{e}; resuming from the checkpoint before it, {candidates[i + 1]} (the bad one moved to {aside})",
                stacklevel=2,
            )
    was, now = state["model_config"], model_config
    if len(set(was) & set(now)) * 2 < min(len(was), len(now)):  # hardly a field in common
        raise ValueError(
            f"{path} is a checkpoint of another kind of model (a run of another training command in this "
            "out_dir?): use a new out_dir"
        )
    if was != now:
        keys = [k for k in sorted({*was, *now}) if was.get(k, ...) != now.get(k, ...)]
        differs = ", ".join(
            f"{k}: {was.get(k, 'unset')!r} then, {now.get(k, 'unset')!r} now" for k in keys[:8]
        )
        differs += f" and {len(keys) - 8} more" if len(keys) > 8 else ""
        raise ValueError(
            f"{path} was written for a different model config ({differs}); use a new out_dir or the same "
            "preset/overrides"
        )
    changed = _changed_inputs(state.get("provenance"), provenance)
    if changed:
        raise ValueError(
            f"{path} was trained with other {' and '.join(sorted(changed))} "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(changed.items()))}); "
            "use a new out_dir or the same inputs and settings"
        )
    asked = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    saved = list(state["scheduler"].get("base_lrs", asked))
    if not np.allclose(saved, asked, rtol=1e-6, atol=0):
        raise ValueError(
            f"{path} was trained at learning rate(s) {saved}, now asked for {asked}; use a new out_dir "
            "or the same lr"
        )
    # The optimizer's state brings back its own weight decay and betas: a changed one would be ignored silently.
    saved_groups = state["optimizer"].get("param_groups", [])
    for key in ("weight_decay", "betas"):
        was = [np.asarray(g[key], float).tolist() for g in saved_groups if key in g]
        now = [np.asarray(g[key], float).tolist() for g in optimizer.param_groups if key in g]
        if len(was) == len(now) and not all(np.allclose(a, b) for a, b in zip(was, now, strict=True)):
            raise ValueError(
                f"{path} was trained with {key} {was}, now asked for {now}; use a new out_dir or the same"
            )
    if ema is not None and not math.isclose(float(state["ema"]["decay"]), float(ema.decay), rel_tol=1e-9):
        raise ValueError(
            f"{path} was trained with EMA decay {state['ema']['decay']}, now asked for {ema.decay}; use a "
            "new out_dir or the same ema_decay"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    restore_rng_state(state["rng"])
    if announce:  # a rerun after a kill otherwise only shows a bar that starts part-way
        import sys

        from tqdm.auto import tqdm

        tqdm.write(f"resuming from {path} (step {state['step']})", file=sys.stderr)
    return state


def _set_aside(path: Path, aside: Path) -> None:
    """Rename ``path`` to ``aside`` (a stale ``aside`` from an earlier resume replaced). Every process of a
    multi-process run finds the same corrupt checkpoint: a path already gone was set aside by another one."""
    try:
        path.rename(aside)
    except OSError:
        if not path.exists():
            return
        shutil.rmtree(aside, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            path.rename(aside)


def resume_stream(
    make: Callable[[int], Any], seed: int, state: Mapping[str, Any] | None, legacy_seed: int
) -> Any:
    """A run's batch stream: ``make(seed)``, moved to where the checkpoint ``state`` left it (``data_stream``).

    So a resumed run draws exactly the batches an uninterrupted one would. A checkpoint without that entry
    (written by older code) resumes as such runs did, on a fresh stream ``make(legacy_seed)`` (other batches,
    same distribution), with a warning; an entry of None (a position that cannot be saved: other iterables,
    several processes) does the same silently.
    """
    if state is None:
        return make(seed)
    if "data_stream" not in state:
        import warnings

        warnings.warn(
            f"the checkpoint at step {state['step']} holds no data position (older code): the resumed run draws "
            "other batches than an uninterrupted one would",
            stacklevel=2,
        )
    if state.get("data_stream") is None:
        return make(legacy_seed)
    stream = make(seed)
    stream.load_state_dict(state["data_stream"])
    return stream


def any_process(accelerator: Any) -> Callable[[Sequence[bool]], list[bool]] | None:
    """Flags decided by all processes: each is True everywhere when it is True on any (one collective for all
    of them); None with one process. For :class:`CheckpointClock` and :func:`check_finite_loss`."""
    if accelerator.num_processes == 1:
        return None

    def agree(flags: Sequence[bool]) -> list[bool]:
        votes = torch.tensor([float(f) for f in flags], device=accelerator.device)
        return [bool(v) for v in accelerator.reduce(votes, "sum") > 0]

    return agree


def process_states(accelerator: Any, **own: Any) -> dict[str, Any]:
    """What a checkpoint keeps of each process's own state (``own``: its data position and generators).

    The main process's goes to the top level, as in a one-process run, the others' to ``other_processes``, so a
    resumed multi-process run draws what an uninterrupted one would. A collective: every process calls it.
    """
    if accelerator.num_processes == 1:
        return own
    from accelerate.utils import gather_object

    states = gather_object([own])
    return {**states[0], "other_processes": states[1:]}


def restore_process_state(accelerator: Any, state: dict[str, Any] | None, seed: int) -> dict[str, Any] | None:
    """This process's part of a checkpoint ``state`` written with :func:`process_states` (None for a fresh run).

    The main process gets ``state`` (its RNGs are restored by :func:`resume_state`). Another process gets its own
    entries, its global RNGs restored here; in a fresh run, or from a checkpoint written by another number of
    processes (a warning says the run is not exact), it seeds them from its own ``seed`` and the step instead
    of drawing what the main process draws. Call it once the weights are in sync (after ``prepare``).
    """
    from accelerate.utils import set_seed

    from adaworld_gym.training.checkpoint import restore_rng_state

    others = [] if state is None else state.get("other_processes") or []
    if state is not None and len(others) != accelerator.num_processes - 1 and accelerator.is_main_process:
        import warnings

        warnings.warn(
            f"the checkpoint at step {state['step']} was written by {len(others) + 1} process(es), resumed by "
            f"{accelerator.num_processes}: the other processes draw other batches than an uninterrupted run would",
            stacklevel=2,
        )
    if accelerator.process_index == 0:
        return state
    if len(others) != accelerator.num_processes - 1:
        step = 0 if state is None else state["step"]
        set_seed((seed + step) % 2**32)  # numpy's range, whatever the seed and step
        return None if state is None else {"step": step, "data_stream": None}
    own = others[accelerator.process_index - 1]
    restore_rng_state(own["rng"])
    return {"step": state["step"], **own}


def summary_writer(out_dir: Path, resumed_at: int | None):
    """The tensorboard writer of ``out_dir/logs``; on resume at step N, events after N are purged.

    A run killed after its last checkpoint logged steps it will redo; purging them (TensorBoard's crash-restart
    ``purge_step``) keeps one entry per step.
    """
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out_dir / "logs"), purge_step=None if resumed_at is None else resumed_at + 1)


def check_finite_loss(loss: torch.Tensor, step: int, accelerator: Any = None) -> None:
    """Stop before a non-finite loss reaches the weights (``FloatingPointError``).

    One NaN step would turn every weight, and every checkpoint written after it, into NaN; raised here, the loop
    ends without saving, so the checkpoints keep the steps before it. With several processes they decide
    together (one process stopping alone would leave the others waiting for it).
    """
    bad = not bool(torch.isfinite(loss.detach()).all())
    if accelerator is not None and accelerator.num_processes > 1:
        (bad,) = any_process(accelerator)([bad])
    if bad:
        raise FloatingPointError(
            f"the training loss is not finite at step {step + 1} (here: {float(loss.detach().float().mean())}); "
            "stopped before applying it, the checkpoints hold earlier steps: lower the learning rate, or look "
            "for NaN in the data"
        )


def optimizer_step(
    accelerator: Any,
    loss: torch.Tensor,
    parameters: Any,
    optimizer,
    scheduler,
    ema: Any,
    grad_clip: float,
    step: int,
) -> float:
    """Check the loss (:func:`check_finite_loss`; ``step``: the steps done), backward, average the gradients over
    processes, clip, step optimizer and schedule, zero the gradients, update the EMA; returns the grad norm.

    The callers compute ``loss`` on the unwrapped model (its ``training_loss``, not ``forward``), which DDP does
    not see: without the averaging here each process trained its own copy of the weights.
    """
    check_finite_loss(loss, step, accelerator)
    parameters = list(parameters)
    accelerator.backward(loss)
    if accelerator.num_processes > 1:
        _average_gradients(accelerator, parameters)
    grad_norm = accelerator.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    ema.step(parameters)
    return float(grad_norm)


def _average_gradients(accelerator: Any, parameters: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the processes (one collective; a missing gradient counts as 0)."""
    trained = [p for p in parameters if p.requires_grad]
    for p in trained:
        if p.grad is None:  # every process must send the same layout
            p.grad = torch.zeros_like(p)
    flat = accelerator.reduce(torch.cat([p.grad.reshape(-1) for p in trained]), "mean")
    for p, g in zip(trained, flat.split([p.numel() for p in trained]), strict=True):
        p.grad.copy_(g.view_as(p.grad))


class CheckpointClock:
    """When a training loop saves: every ``every`` steps, every ``minutes``, and at the end or on Ctrl-C/SIGTERM.

    ``save`` writes a checkpoint of the loop's current state. Call :meth:`tick` after each step and run the loop
    inside :meth:`guard`, which saves unsaved steps when the loop ends or is interrupted (then re-raises).

    Inside :meth:`guard` (main thread), SIGINT and SIGTERM do not interrupt a step: the optimizer and the EMA
    update their parameters one tensor at a time, so a checkpoint of a half-applied step would resume as a
    state no run ever had. The signal is held until the step ends, where :meth:`tick` raises
    ``KeyboardInterrupt``. A second signal interrupts at once; the save that follows may then hold a partly
    applied step (labelled as the last complete one), the price of not waiting. A save itself is never cut
    short: signals that arrive during one are held until it is written (then the loop stops, after a final save
    too).
    """

    def __init__(
        self,
        save: Callable[[], None],
        step: int,
        every: int,
        minutes: float,
        agree: Callable[[Sequence[bool]], list[bool]] | None = None,
    ) -> None:
        self.save, self.every, self.minutes = save, every, minutes
        # With several processes each one's clock and signals differ: ``agree`` (:func:`any_process`) makes a
        # timed save and a held signal everyone's decision, since a save is a collective and a process missing
        # it (or stopping alone) would hang the others.
        self.agree = agree
        self.step = self.saved_step = step
        self.saved_at = time.monotonic()
        self.held_signal: int | None = None
        self._saving = False

    def tick(self, step: int) -> bool:
        """Record ``step``; save if one is due. True when it saved (callers evaluate then).

        Raises ``KeyboardInterrupt`` if a signal arrived during the step (:meth:`guard` then saves).
        """
        self.step = step
        held = self.held_signal is not None
        timed = time.monotonic() - self.saved_at >= self.minutes * 60
        if self.agree is not None:
            held, timed = self.agree([held, timed])
        if held:
            raise KeyboardInterrupt(
                f"signal {self.held_signal or '(to another process)'}, held until step {step} was complete"
            )
        if step % self.every == 0 or timed:
            self._save()
            return True
        return False

    def _hold(self, signum: int, frame: object) -> None:
        if self.held_signal is not None and not self._saving:  # asked twice: stop now, but not mid-save
            raise KeyboardInterrupt(f"signal {signum}")
        if self.held_signal is None:
            self.held_signal = signum

    @contextlib.contextmanager
    def _holding_signals(self) -> Iterator[None]:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():  # signal.signal works only there
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._hold)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _save(self) -> None:
        self._saving = True
        try:
            self.save()
        finally:
            self._saving = False
        self.saved_step, self.saved_at = self.step, time.monotonic()

    def _flush(self) -> None:
        if self.step > self.saved_step:
            self._save()

    @contextlib.contextmanager
    def guard(self, bar: Any) -> Iterator[None]:
        """Close ``bar`` and save unsaved steps however the loop ends; an interrupt is re-raised after saving."""
        try:
            with self._holding_signals():  # held through the final save too, so it is never cut short
                try:
                    yield
                except KeyboardInterrupt:
                    self._flush()  # keep the work done so far; the next call resumes from here
                    raise
                except EpisodeError as e:
                    # Raised while drawing a batch, between steps: the state is the last complete step's. With
                    # several processes a save is a collective the others would not join: none saves here.
                    if self.agree is None:
                        self._flush()
                        if self.saved_step > 0:
                            add_note(e, f"the steps up to {self.saved_step} are saved: a rerun resumes there")
                    raise
                self._flush()
        finally:
            bar.close()
        if self.held_signal is not None:  # it arrived after the last step: stop, now that all is saved
            raise KeyboardInterrupt(f"signal {self.held_signal}, held until the final save was complete")


def noise_generator(device: torch.device, seed: int) -> torch.Generator:
    """The generator of a training loop's per-step draws (noise, sigma, history augmentation), on ``device``.

    On a GPU it lives there: torch draws from a CPU generator on one core whatever the thread count, 0.10 s for
    the 15.7M normals of a batch of 256 windows on this CPU (one or two threads alike), which would cap a GPU
    run near 10 steps/s. On a CPU it is the CPU generator of earlier runs (same seed, same draws).
    """
    return torch.Generator(device=device).manual_seed(seed)


def restore_noise_generator(generator: torch.Generator, saved: torch.Tensor, seed: int) -> None:
    """Put a checkpoint's generator state ``saved`` into ``generator``; a state of another device's generator
    (a run resumed on a CPU after a GPU, or the reverse) reseeds it with ``seed`` and a warning instead."""
    if saved.numel() != generator.get_state().numel():
        warnings.warn(
            f"the checkpoint's noise generator is not a {generator.device.type} one: the resumed run draws "
            "other noise than an uninterrupted one would",
            stacklevel=2,
        )
        generator.manual_seed(seed)
        return
    generator.set_state(saved)


def training_state(
    model,
    optimizer,
    scheduler,
    ema: Any,
    noise_gen: torch.Generator,
    model_config: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """What a world-model checkpoint holds: weights, optimizer, schedule, EMA, RNGs, config, and ``extra``."""
    from adaworld_gym.training.checkpoint import capture_rng_state

    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict(),
        "noise_generator": noise_gen.get_state(),
        **extra,
        "rng": capture_rng_state(),
        "model_config": model_config,
    }


def copy_weights(
    source: torch.nn.Module, model: torch.nn.Module, path: str | os.PathLike, may_differ: Iterable[str] = ()
) -> None:
    """Load ``source``'s weights (read from ``path``) into ``model``; their model configs must match, except in
    ``may_differ`` (settings of the loss, not of the weights, e.g. a LAM's KL weight)."""
    ignore = {"autocast_dtype", "preset", *may_differ}

    def comparable(m: Any) -> dict[str, Any]:  # JSON round trip: tuples come back as lists
        return json.loads(json.dumps({k: v for k, v in plain_config(m).items() if k not in ignore}))

    mine, theirs = comparable(model), comparable(source)
    if mine != theirs:
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        was, now = plain_config(source).get("preset"), plain_config(model).get("preset")
        hint = (
            f"; it is of the {was!r} preset, this run's is {now!r}: pass --preset {was}" if was != now else ""
        )
        raise ValueError(f"cannot start from {path}: its model config differs in {', '.join(diff)}{hint}")
    model.load_state_dict(source.state_dict())


RUN_LOCK = ".run.lock"


@contextlib.contextmanager
def exclusive_out_dir(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold ``out_dir/.run.lock`` for a run (by the main process of a multi-process one).

    A second run of the same ``out_dir`` (the command rerun while the first still goes) is refused: each would
    delete the other's half-written checkpoints and prune its saved ones. An ``out_dir`` made here for the lock
    alone is removed again when the run fails before writing anything.
    """
    # RANK is what torchrun and accelerate launch give each process; read before any process group exists.
    if fcntl is None or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock_path = out_dir / RUN_LOCK
    try:
        with open(lock_path, "ab") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(
                    f"another run is using {out_dir} (it holds {lock_path}): wait for it to end, or use another "
                    "out_dir"
                ) from None
            except OSError:  # a file system without locks (some network mounts): go on unguarded
                pass
            yield
    finally:
        with contextlib.suppress(OSError):  # the run may have moved or removed out_dir itself
            if created and [p.name for p in out_dir.iterdir()] == [RUN_LOCK]:
                shutil.rmtree(out_dir, ignore_errors=True)


def one_run_per_out_dir(run: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a training function taking ``out_dir``: it runs under :func:`exclusive_out_dir`."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        with exclusive_out_dir(signature.bind(*args, **kwargs).arguments["out_dir"]):
            return run(*args, **kwargs)

    return guarded
