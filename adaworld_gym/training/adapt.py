"""Adapt a pretrained world model to a real action space (AdaWorld section 3), under ``accelerate``.

    from adaworld_gym.training.adapt import adapt
    bundle_dir = adapt("runs/wm/model", "runs/lam/model", "data/procgen-adapt/procgen-coinrun", "runs/adapt-coinrun")
    bundle = AdaWorldBundle.from_pretrained(bundle_dir, expected_action_space=gymnasium.spaces.Discrete(15))

From a small set of transitions labelled with real actions (at most ``samples_per_action`` per discrete action,
or all transitions of ``trajectories`` episodes for continuous actions):

1. the adapter is initialised: ``Discrete`` -> :class:`ActionCodebook` rows set to the mean LAM ``mu`` of each
   action's transitions; ``Box`` -> :class:`ActionMLP` pre-fit on (action, mu) pairs. The action-agnostic twin
   has no LAM: its adapter stays random (``init="random"`` does the same for any model, as an ablation);
2. world model and adapter are finetuned jointly on the denoising loss with ``z = adapter(action)``; the
   pretrained weights learn at ``pretrained_lr_scale`` (0.1) times the adapter's rate. The twin is made
   action-conditioned first (:func:`conditioned_copy`): its config stops zeroing ``z`` and the ``z`` columns of
   the condition MLP's first layer start at zero (like ``z`` itself was added to the pretrained model), so at
   step 0 it predicts exactly as the twin; those new columns learn at the full rate (the layer's pretrained
   columns at ``pretrained_lr_scale``, as every pretrained weight: :func:`scale_column_updates`);
3. the EMA weights are saved as an :class:`AdaWorldBundle` in ``out_dir/bundle`` (LAM + world model + adapter,
   whose action space is the env's), with ``out_dir/summary.json``, tensorboard logs in ``out_dir/logs`` and
   atomic checkpoints in ``out_dir/checkpoints`` (resumed automatically, where the run left off: weights,
   optimizer, EMA, RNG states and data position, so a resumed run ends as an uninterrupted one would).

Held-out windows (``eval_data``) are evaluated at the steps in ``eval_at`` (1-step PSNR/SSIM of the EMA model,
``z`` from the adapter of the true action); the benchmark reads them from ``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from adaworld_gym.data.clips import find_subsets, history_start, valid_targets
from adaworld_gym.data.episodes import Episode, EpisodeStore, atomic_write_bytes
from adaworld_gym.latent import motion_context
from adaworld_gym.models.adapters import ActionCodebook, ActionMLP, LatentAdapter
from adaworld_gym.models.bundle import AdaWorldBundle, describe_space
from adaworld_gym.models.latent_action import LatentActionModel
from adaworld_gym.models.world_model import DiffusionWorldModel
from adaworld_gym.registration import procgen_game
from adaworld_gym.training.checkpoint import save_checkpoint
from adaworld_gym.training.common import (
    CheckpointClock,
    RunCounter,
    course_settings,
    make_lr_scheduler,
    noise_generator,
    one_run_per_out_dir,
    optimizer_step,
    plain_config,
    restore_noise_generator,
    resume_state,
    resume_stream,
    summary_writer,
    training_provenance,
    training_state,
    validate_run,
    write_json,
)
from adaworld_gym.training.world_model import (
    check_lam_compatible,
    ema_weights,
    evaluate_windows,
    fixed_windows,
    label_actions,
    load_lam,
    load_world_model,
    log_eval,
    to_device,
    warn_if_other_lam,
    window_batches,
    window_loss,
)

__all__ = [
    "AdaptConfig",
    "AdaptedWorldModel",
    "LabelledWindows",
    "adapt",
    "batch_motion",
    "conditioned_copy",
    "episode_space",
    "evaluate_adapted",
    "init_adapter",
    "labelled_windows",
    "read_episodes",
    "transition_latents",
    "window_motion",
]

INIT_MODES = ("auto", "mean_mu", "random")
EVAL_BATCH = 32


@dataclass
class AdaptConfig:
    """Hyper-parameters of one adaptation run (AdaWorld: 100 samples per action, 800 steps of 32)."""

    max_steps: int = 800
    batch_size: int = 32
    # The adapter's rate; the pretrained weights get lr * pretrained_lr_scale. AdaWorld's 5e-5 finetunes a
    # 1.5B SVD; our small models are pretrained at 3e-4, and VP2's push finetune uses 5e-4.
    lr: float = 5e-4
    pretrained_lr_scale: float = 0.1
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    max_minutes: float | None = None
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # diffusers' EMA warm-up makes it ~0.9 after 100 steps, ~0.99 after 800
    mixed_precision: str = "bf16"
    samples_per_action: int = 100  # discrete: labelled transitions per action (init and finetune)
    trajectories: int = 100  # continuous: labelled episodes
    init: str = "auto"  # "auto": mean mu (discrete) / MLP fit (continuous), random for the twin
    mlp_fit_steps: int = 3000
    # The adapter also sees the motion context (the LAM's mu of the last transition in the history frames),
    # which sets most of what the action leaves open (momentum, contact); needs the LAM.
    motion: bool = False
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 200
    checkpoint_minutes: float = 10.0
    eval_at: list[int] = field(default_factory=list)  # steps at which eval_data is evaluated (0 = before)
    eval_denoise_steps: int = 3
    keep_checkpoints: bool = True  # False: delete out_dir/checkpoints once the bundle is saved


# ---------------------------------------------------------------------------------------------------- data
def read_episodes(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Episode]:
    """Every episode with real actions under ``roots`` (episode directories or folders of them), in name order."""
    episodes = []
    for path in find_subsets(roots):
        store = EpisodeStore(path)
        for name in store.names():
            if not store.manifest[name]["has_actions"]:
                raise ValueError(f"adaptation needs real actions, but {path}/{name} has none")
            episodes.append(store.read(name))
    if not episodes:
        raise ValueError(f"no episodes in {roots}")
    return episodes


@dataclass
class LabelledWindows(Sequence):
    """Windows ``(history, history_len, next, action)`` of chosen transitions ``(episode, t)`` of episodes.

    A sequence of clip dicts as ``window_batches`` takes them; windows are cut on access, so a large set
    costs no more memory than its episodes.
    """

    episodes: list[Episode]
    index: np.ndarray  # int [N, 2]: (episode, t), the transition frames[t] -> frames[t + 1]
    history: int = 1
    motion: np.ndarray | None = None  # [N, d + 1] motion contexts (window_motion), carried into batches

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e, t = self.index[i]
        episode, k = self.episodes[e], self.history
        start = history_start(episode, int(t), k)
        hist = np.zeros((k, *episode.frames.shape[1:]), np.uint8)
        hist[k - (t + 1 - start) :] = episode.frames[start : t + 1]
        item = {
            "history": hist,
            "history_len": t + 1 - start,
            "next": episode.frames[t + 1],
            "action": self.action(i),
        }
        if self.motion is not None:
            item["motion"] = self.motion[i]
        return item

    def action(self, i: int) -> Any:
        e, t = self.index[i]
        return self.episodes[e].actions[t]

    @property
    def actions(self) -> np.ndarray:
        return np.stack([self.action(i) for i in range(len(self))])

    @property
    def action_space(self) -> dict[str, Any]:
        return self.episodes[0].action_space

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames t and t+1 ``[N, H, W, 3]`` of every transition."""
        f_t = np.stack([self.episodes[e].frames[t] for e, t in self.index])
        f_t1 = np.stack([self.episodes[e].frames[t + 1] for e, t in self.index])
        return f_t, f_t1

    def start_frames(self, n: int = 16) -> np.ndarray:
        """uint8 ``[n', 1, H, W, 3]`` first frames of (up to ``n``) episodes used: the bundle's reset contexts."""
        used = sorted(set(self.index[:, 0].tolist()))[:n]
        return np.stack([self.episodes[e].frames[:1] for e in used])


def labelled_windows(
    episodes: Sequence[Episode],
    *,
    samples_per_action: int | None = None,
    trajectories: int | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> LabelledWindows:
    """Choose the labelled transitions of ``episodes`` (seeded, without replacement).

    Exactly one of: ``samples_per_action`` (discrete actions: at most that many per action), ``trajectories``
    (every transition of that many episodes) or ``samples`` (that many transitions drawn uniformly, e.g. for
    held-out evaluation). Transitions into a reset frame are never used.
    """
    if sum(x is not None for x in (samples_per_action, trajectories, samples)) != 1:
        raise ValueError("give exactly one of samples_per_action, trajectories or samples")
    episodes = list(episodes)
    spaces = {json.dumps(e.action_space, sort_keys=True) for e in episodes}
    if len(spaces) != 1:
        raise ValueError(f"episodes have different action spaces: {sorted(spaces)}")
    rng = np.random.default_rng(seed)
    if trajectories is not None:
        if trajectories < 1:
            raise ValueError(f"trajectories must be >= 1, got {trajectories}")
        if trajectories > len(episodes):
            raise ValueError(
                f"asked for {trajectories} trajectories but the data holds {len(episodes)} episodes"
            )
        chosen = np.sort(rng.choice(len(episodes), trajectories, replace=False))
        index = [(e, t) for e in chosen for t in valid_targets(episodes[e])]
    else:
        index = [(e, t) for e, ep in enumerate(episodes) for t in valid_targets(ep)]
    index = np.array(index, np.int64).reshape(-1, 2)
    if len(index) == 0:
        raise ValueError("the episodes hold no usable transitions")
    if samples is not None:
        index = index[np.sort(rng.choice(len(index), min(samples, len(index)), replace=False))]
    elif samples_per_action is not None:
        if episodes[0].action_space.get("type") != "discrete":
            raise ValueError(
                f"samples_per_action needs discrete actions, got {episodes[0].action_space}; use trajectories"
            )
        if samples_per_action < 1:
            raise ValueError(f"samples_per_action must be >= 1, got {samples_per_action}")
        actions = np.array([episodes[e].actions[t] for e, t in index])
        keep = []
        for a in np.unique(actions):
            rows = np.flatnonzero(actions == a)
            keep.append(rng.choice(rows, min(samples_per_action, len(rows)), replace=False))
        index = index[np.sort(np.concatenate(keep))]
    return LabelledWindows(episodes, index)


def adaptation_space(env_id: str) -> spaces.Space:
    """The action space of a real env that can be adapted to (Procgen games, RobosuitePush)."""
    from adaworld_gym.envs.shipped import SHIPPED_WORLD_MODELS

    for _, real_id, space, _ in SHIPPED_WORLD_MODELS.values():
        if real_id == env_id:
            return space()
    known = sorted(entry[1] for entry in SHIPPED_WORLD_MODELS.values())
    raise ValueError(f"unsupported env {env_id!r} for adaptation; choose one of {', '.join(known)}")


def collect_adaptation_data(
    env_id: str,
    root: str | os.PathLike,
    *,
    samples_per_action: int = 100,
    trajectories: int = 100,
    episode_steps: int | None = None,
    seed: int = 0,
) -> list[Path]:
    """Collect a labelled adaptation set from the real env into ``root`` (resumable); its episode directories.

    Discrete (Procgen): uniform random actions until every action has ``samples_per_action`` transitions
    (episodes of ``episode_steps``, default 100). Continuous (RobosuitePush): ``trajectories`` scripted
    episodes of ``episode_steps`` (default 30).
    """
    from adaworld_gym.data import collect

    space, root = adaptation_space(env_id), Path(root)
    if not isinstance(space, spaces.Discrete):
        collect.collect_push(trajectories, root, steps=episode_steps or 30, seed=seed)
        return [root / "push"]
    game = procgen_game(env_id)
    steps = episode_steps or 100
    subset = root / f"procgen-{game}"
    # Uniform random actions: about steps / n transitions per action and episode; collect until each has N.
    episodes = math.ceil(1.3 * samples_per_action * space.n / steps)
    for _ in range(20):
        collect.collect_procgen([game], episodes, steps, root, seed=seed)
        # Only this round's episodes count: a killed, larger round may have left more on disk, and counting
        # them would stop a resumed run earlier, with another set than an uninterrupted run keeps.
        store = EpisodeStore(subset)
        names = [f"ep_{i:06d}" for i in range(episodes)]  # collect_procgen's names
        windows = labelled_windows([store.read(name) for name in names], samples=10**9)
        counts = np.bincount(windows.actions, minlength=space.n)
        if counts.min() >= samples_per_action:
            extra = sorted(set(store.names()) - set(names))
            if extra:  # adapt reads the whole folder: it must hold exactly this set
                raise ValueError(
                    f"{subset} holds {len(extra)} episodes beyond the {episodes} this collection needs "
                    f"(from a run with other settings, e.g. {extra[0]}); collect into a fresh --out"
                )
            return [subset]
        episodes = math.ceil(episodes * 1.5)
    raise ValueError(f"could not collect {samples_per_action} samples of every action of {env_id}")


def episode_space(description: Mapping[str, Any]) -> spaces.Space:
    """The Gymnasium space of an episode's action-space description (``{"type": "discrete", "n": 15}``, ...)."""
    kind = description.get("type")
    if kind == "discrete":
        return spaces.Discrete(int(description["n"]))
    if kind == "box":
        shape = tuple(description["shape"])
        low = np.broadcast_to(np.float32(description["low"]), shape)
        high = np.broadcast_to(np.float32(description["high"]), shape)
        return spaces.Box(low.copy(), high.copy(), dtype=np.float32)
    raise ValueError(f"unsupported action space {dict(description)}: expected discrete or box")


def window_motion(lam: LatentActionModel, windows: LabelledWindows, chunk: int = 256) -> np.ndarray:
    """The motion context (:func:`adaworld_gym.latent.motion_context`) ``[N, d + 1]`` of every labelled window."""
    out = []
    for start in range(0, len(windows), chunk):
        items = [windows[i] for i in range(start, min(start + chunk, len(windows)))]
        history = np.stack([item["history"] for item in items])
        out.append(motion_context(lam, history, [item["history_len"] for item in items]))
    return np.concatenate(out)


def batch_motion(lam: LatentActionModel, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The motion context of a batch of windows, on the batch's device."""
    history = batch["history"]
    context = motion_context(lam, history.cpu().numpy(), batch["history_len"].cpu().numpy())
    return torch.from_numpy(context).to(history.device)


def transition_latents(lam: LatentActionModel, windows: LabelledWindows, bf16: bool = True) -> np.ndarray:
    """The frozen LAM's ``mu`` ``[N, d]`` of every labelled transition."""
    f_t, f_t1 = windows.pairs()
    return np.concatenate(
        [label_actions(lam, f_t[i : i + 256], f_t1[i : i + 256], bf16) for i in range(0, len(f_t), 256)]
    )


# ------------------------------------------------------------------------------------------------- models
class AdaptedWorldModel(nn.Module):
    """World model and adapter as one module: one state dict, one EMA, one checkpoint."""

    def __init__(self, world_model: DiffusionWorldModel, adapter: LatentAdapter) -> None:
        super().__init__()
        self.world_model, self.adapter = world_model, adapter

    def config(self) -> dict[str, Any]:
        return {
            "world_model": plain_config(self.world_model),
            "adapter": {"class": type(self.adapter).__name__, **self.adapter.config()},
        }


def conditioned_copy(model: DiffusionWorldModel) -> DiffusionWorldModel:
    """An action-conditioned copy of an action-agnostic world model that predicts exactly as it does.

    The twin was trained with zeros where ``z`` goes, so the ``z`` columns of the condition MLP's first layer
    hold untrained random weights; they are zeroed (new conditioning starts at zero, as in ``DiffusionWorldModel``)
    and the config stops zeroing ``z``. A LAM-conditioned model is returned as is.
    """
    if not model.config.action_agnostic:
        return model
    copy = DiffusionWorldModel.from_config({**plain_config(model), "action_agnostic": False})
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        copy.cond_mlp[0].weight[:, : model.config.action_dim] = 0.0
    return copy.to(model.device).train(model.training)


def scale_column_updates(
    optimizer: torch.optim.Optimizer, weight: torch.Tensor, columns: slice, scale: float
) -> None:
    """Give ``weight[:, columns]`` ``scale`` times its parameter group's learning rate.

    torch optimizers set rates per tensor; AdamW's step (decoupled weight decay included) is linear in the rate,
    so each step of those columns is scaled back after it is taken.
    """
    before: list[torch.Tensor] = []

    def save(*_: Any) -> None:
        before[:] = [weight.detach()[:, columns].clone()]

    def rescale(*_: Any) -> None:
        with torch.no_grad():
            part = weight[:, columns]
            part.copy_(before[0] + scale * (part - before[0]))

    optimizer.register_step_pre_hook(save)
    optimizer.register_step_post_hook(rescale)


def init_adapter(
    action_space: Mapping[str, Any],
    latent_dim: int,
    windows: LabelledWindows,
    mu: np.ndarray | None,
    *,
    samples_per_action: int = 100,
    fit_steps: int = 3000,
    seed: int = 0,
    motion: np.ndarray | None = None,
) -> tuple[LatentAdapter, dict[str, Any]]:
    """The adapter of an episode action space, initialised from ``mu`` of ``windows`` (random when None).

    ``motion``: the windows' motion contexts ``[N, latent_dim + 1]`` (:func:`window_motion`): the adapter is built
    to take them and fitted with them (needs ``mu``).

    Returns the adapter and what was done (for the summary).
    """
    space = episode_space(action_space)
    motion_dim = 0 if motion is None else latent_dim
    if motion is not None and mu is None:
        raise ValueError("a motion-context adapter is fitted on the LAM's mu: pass mu with motion")
    if isinstance(space, spaces.Discrete):
        generator = torch.Generator().manual_seed(seed)
        adapter: LatentAdapter = ActionCodebook(
            int(space.n), latent_dim, generator=generator, motion_dim=motion_dim
        )
        if mu is None:
            return adapter, {"init": "random"}
        missing = adapter.init_from_labelled(
            windows.actions, mu, max_per_action=samples_per_action, seed=seed
        )
        if missing:
            # Their rows stay random, and finetuning never moves them (no batch holds them): the env would answer
            # these actions with arbitrary latents. Said here, not only in summary.json.
            warnings.warn(
                f"no labelled transitions of actions {missing}: their codebook rows stay random; "
                "collect data that takes every action",
                stacklevel=2,
            )
        info: dict[str, Any] = {"init": "mean_mu", "actions_without_samples": missing}
        if motion is not None:
            info["motion_fit_mse"] = adapter.fit_motion(windows.actions, mu, motion)
        return adapter, info
    if len(space.shape) != 1:
        raise ValueError(f"continuous actions must be vectors, got shape {space.shape}")
    with torch.random.fork_rng():  # the MLP's initial weights come from the seed, not the global RNG
        torch.manual_seed(seed)
        adapter = ActionMLP(
            space.shape[0],
            latent_dim,
            low=space.low.tolist(),
            high=space.high.tolist(),
            motion_dim=motion_dim,
        )
    if mu is None:
        return adapter, {"init": "random"}
    mse = adapter.fit(windows.actions, mu, steps=fit_steps, seed=seed, motion=motion)
    return adapter, {"init": "mlp_fit", "fit_mse": mse, "mu_var": float(np.var(mu, axis=0).sum())}


# --------------------------------------------------------------------------------------------------- adapt
@one_run_per_out_dir
def adapt(
    model_dir: str | os.PathLike,
    lam_dir: str | os.PathLike | None,
    data: str | os.PathLike | Sequence[str | os.PathLike] | LabelledWindows,
    out_dir: str | os.PathLike,
    config: AdaptConfig | None = None,
    *,
    eval_data: str | os.PathLike | Sequence[str | os.PathLike] | LabelledWindows | None = None,
    eval_samples: int = 256,
    expected_action_space: spaces.Space | None = None,
    expected_env_id: str | None = None,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Path:
    """Adapt the world model of ``model_dir`` to the actions of ``data``; return the bundle directory.

    Args:
        model_dir: a pretrained world model (its ``model`` directory or the run directory holding it).
        lam_dir: the LAM that labelled its training data; may be None only for an action-agnostic model.
        data: episode directories with real actions (the labelled set is drawn from them with
            ``samples_per_action`` or ``trajectories``), or ready :class:`LabelledWindows`.
        out_dir: run directory: ``bundle/``, ``checkpoints/``, ``logs/``, ``summary.json``.
        config: hyper-parameters; ``overrides`` (non-None values) replace its fields.
        eval_data: held-out episode directories (``eval_samples`` transitions drawn from them) or windows,
            evaluated at ``config.eval_at`` steps and at the end.
        expected_action_space: the real env's action space; data with other actions is rejected.
        expected_env_id: the real env's id (default: ``meta["env_id"]``, the env the bundle says it is for); data
            recorded in another adaptable env (e.g. another Procgen game: same ``Discrete(15)``) is rejected.
        meta: extra provenance stored in the bundle.

    Raises:
        ValueError: no LAM for a LAM-conditioned model, a LAM that does not fit the model, data without actions
            or with mixed action spaces, too little data, an unknown ``init``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    cfg = adapt_config(config, **overrides)
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "checkpoints"
    accelerator = Accelerator()
    set_seed(cfg.seed)
    bf16 = cfg.mixed_precision == "bf16"

    pretrained = load_world_model(model_dir)
    agnostic = bool(pretrained.config.action_agnostic)
    lam = None if agnostic or lam_dir is None else load_lam(lam_dir)
    if lam is None and not agnostic:
        raise ValueError(f"{model_dir} is LAM-conditioned: pass the LAM that labelled its training data")
    if lam is not None:
        check_lam_compatible(lam, pretrained)
        warn_if_other_lam(model_dir, lam_dir)
        lam.to(accelerator.device)
    init = cfg.init if cfg.init != "auto" else ("random" if agnostic else "mean_mu")
    if init == "mean_mu" and lam is None:
        raise ValueError("init='mean_mu' needs a LAM; the action-agnostic model can only start from random")
    if cfg.motion and (lam is None or init != "mean_mu"):
        raise ValueError(
            "motion=True needs a LAM-conditioned model, its LAM and init='mean_mu': the motion context is the "
            "LAM's latent action of the history frames"
        )

    k = pretrained.config.num_history
    if expected_env_id is None and meta is not None:
        expected_env_id = meta.get("env_id")
    train, held_out = _labelled_sets(
        data, eval_data, cfg, eval_samples, expected_action_space, expected_env_id
    )
    for windows, what in ((train, "the data"), (held_out, "the eval data")):
        sizes = set() if windows is None else {e.frames.shape[1:3] for e in windows.episodes}
        size = next((s for s in sorted(sizes) if s != (pretrained.config.sample_size,) * 2), None)
        if size is not None:
            raise ValueError(
                f"{what} holds {size[0]}x{size[1]} frames but {model_dir} makes "
                f"{pretrained.config.sample_size}x{pretrained.config.sample_size} ones: adapt a model trained at "
                "the data's frame size"
            )
    train = replace(train, history=k)
    if cfg.motion:  # computed once per window, then carried in every batch
        train = replace(train, motion=window_motion(lam, train))
    eval_set = None
    if held_out is not None:
        held_out = replace(held_out, history=k)
        if cfg.motion:
            held_out = replace(held_out, motion=window_motion(lam, held_out))
        batches = math.ceil(len(held_out) / EVAL_BATCH)
        eval_set = fixed_windows(held_out, k, EVAL_BATCH, batches, accelerator.device)

    mu = transition_latents(lam, train, bf16) if init == "mean_mu" else None
    adapter, init_info = init_adapter(
        train.action_space,
        pretrained.config.action_dim,
        train,
        mu,
        samples_per_action=cfg.samples_per_action,
        fit_steps=cfg.mlp_fit_steps,
        seed=cfg.seed,
        motion=train.motion,
    )
    world_model = conditioned_copy(pretrained)
    if not bf16:
        world_model.register_to_config(autocast_dtype=None)
    model = AdaptedWorldModel(world_model, adapter).to(accelerator.device)
    model_config = model.config()

    # Full rate: the adapter and, for the twin, the new z columns of the first condition layer; the rest,
    # that layer's pretrained columns included, at pretrained_lr_scale.
    new = {id(p) for p in adapter.parameters()}
    if agnostic:
        new.add(id(world_model.cond_mlp[0].weight))
    fresh = [p for p in model.parameters() if id(p) in new]
    old = [p for p in model.parameters() if id(p) not in new]
    optimizer = torch.optim.AdamW(
        [{"params": fresh, "lr": cfg.lr}, {"params": old, "lr": cfg.lr * cfg.pretrained_lr_scale}],
        weight_decay=cfg.weight_decay,
    )
    if agnostic:
        scale_column_updates(
            optimizer, world_model.cond_mlp[0].weight, slice(pretrained.config.action_dim, None),
            cfg.pretrained_lr_scale,
        )  # fmt: skip
    scheduler = make_lr_scheduler(optimizer, cfg)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, foreach=True)  # one kernel per op, not per tensor
    noise_gen = noise_generator(accelerator.device, cfg.seed)

    evals = []
    provenance = training_provenance(data, pretrained=model_dir, lam=None if lam is None else lam_dir)
    provenance["settings"] = course_settings(cfg)
    state = resume_state(
        ckpt_root, model_config, model, optimizer, scheduler, ema, provenance,
        announce=progress and accelerator.is_main_process,
    )  # fmt: skip
    run = RunCounter(state)
    if state is not None:
        restore_noise_generator(noise_gen, state["noise_generator"], cfg.seed + run.step)
        evals = list(state["evals"])
    model, optimizer = accelerator.prepare(model, optimizer)
    raw: AdaptedWorldModel = accelerator.unwrap_model(model)
    ema.to(accelerator.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = summary_writer(out_dir, None if state is None else run.step)
    write_json(out_dir / "adapt_config.json", asdict(cfg))

    def evaluate() -> dict[str, float]:
        with ema_weights(ema, raw):
            metrics = evaluate_adapted(
                raw.world_model, raw.adapter, eval_set, cfg.eval_denoise_steps, cfg.seed, lam=lam
            )
        log_eval(writer, metrics, run.step)
        return {"step": run.step, **metrics}

    def checkpoint() -> None:
        state = training_state(
            raw, optimizer, scheduler, ema, noise_gen, model_config,
            **run.state(), evals=evals, provenance=provenance,
            data_stream=batches.state_dict(), log_window=[loss_sum, window_steps],
        )  # fmt: skip
        save_checkpoint(ckpt_root, run.step, state)

    eval_steps = set(cfg.eval_at) if eval_set is not None else set()
    done = {e["step"] for e in evals}

    def evaluate_if_due() -> None:  # before the step's checkpoint, so that it holds the evaluation
        if run.step in eval_steps and run.step not in done:
            evals.append(evaluate())
            done.add(run.step)
            bar.set_postfix(psnr=f"{evals[-1]['psnr_1step']:.2f}")

    batches = resume_stream(
        lambda s: window_batches(train, k, cfg.batch_size, seed=s), cfg.seed, state, cfg.seed + run.step
    )
    bar = tqdm(total=cfg.max_steps, initial=run.step, disable=not progress, desc="adapt", unit="step")
    loss_sum, window_steps, losses = 0.0, 0, []
    if state is not None and "log_window" in state:  # the steps since the last log, for the next one
        loss_sum, window_steps = state["log_window"]
    clock = CheckpointClock(checkpoint, run.step, cfg.checkpoint_every, cfg.checkpoint_minutes)
    run.start()
    model.train()
    with clock.guard(bar):
        evaluate_if_due()
        while not run.spent(cfg):
            batch = to_device(next(batches), accelerator.device)
            z = raw.adapter(*_adapter_inputs(raw.adapter, lam, batch))
            loss = window_loss(raw.world_model, batch, z, noise_gen)
            optimizer_step(
                accelerator, loss, model.parameters(), optimizer, scheduler, ema, cfg.grad_clip, run.step
            )
            run.count(batch["next"].shape[0])
            loss_sum, window_steps = loss_sum + float(loss.detach()), window_steps + 1
            losses.append(float(loss.detach()))
            bar.update(1)
            if run.step % cfg.log_every == 0:
                writer.add_scalar("loss/denoise", loss_sum / window_steps, run.step)
                writer.add_scalar("perf/samples_per_s", run.samples_per_s, run.step)
                bar.set_postfix(loss=f"{loss_sum / window_steps:.4f}")
                loss_sum, window_steps = 0.0, 0
            evaluate_if_due()
            clock.tick(run.step)

    summary: dict[str, Any] = {
        "model_dir": os.fspath(model_dir),
        "lam_dir": None if lam is None else os.fspath(lam_dir),
        "pretrained_action_agnostic": agnostic,
        "action_space": train.action_space,
        "labelled_transitions": len(train),
        "labelled_episodes": len(set(train.index[:, 0].tolist())),
        "adapter": {"class": type(adapter).__name__, **init_info},
        **run.summary(),
        "session_losses": losses,  # this session's per-step training losses
        "evals": evals,
    }
    if eval_set is not None and run.step not in done:
        summary["evals"].append(evaluate())
    bundle_dir = out_dir / "bundle"
    with ema_weights(ema, raw):  # the bundle holds the EMA weights
        AdaWorldBundle(
            lam,
            raw.world_model.eval(),
            raw.adapter.eval(),
            train.start_frames(),
            meta={
                "source": "adaworld adapt",
                "pretrained_model": os.fspath(model_dir),
                "pretrained_action_agnostic": agnostic,
                "adapter_init": init,
                "steps": run.step,
                "labelled_transitions": len(train),
                "seed": cfg.seed,
                **dict(meta or {}),
            },
        ).save_pretrained(bundle_dir)
    atomic_write_bytes(out_dir / "summary.json", json.dumps(summary, indent=2).encode())
    writer.close()
    if not cfg.keep_checkpoints:
        shutil.rmtree(ckpt_root, ignore_errors=True)
    return bundle_dir


def _labelled_sets(
    data: Any,
    eval_data: Any,
    cfg: AdaptConfig,
    eval_samples: int,
    expected: spaces.Space | None,
    expected_env_id: str | None = None,
) -> tuple[LabelledWindows, LabelledWindows | None]:
    """The labelled training windows and the held-out ones, checked against the env's action space and id."""

    def check_space(action_space: dict[str, Any]) -> str:
        found = describe_space(episode_space(action_space))
        if expected is not None and found != describe_space(expected):
            raise ValueError(
                f"the data's action space {found} is not the env's {describe_space(expected)}: "
                "collect the labelled episodes from that env"
            )
        return found

    if isinstance(data, LabelledWindows):
        train = data
    else:
        episodes = read_episodes(data)
        check_space(episodes[0].action_space)  # before drawing: another env's data failed on a count first
        discrete = episodes[0].action_space.get("type") == "discrete"
        train = labelled_windows(
            episodes,
            samples_per_action=cfg.samples_per_action if discrete else None,
            trajectories=None if discrete else cfg.trajectories,
            seed=cfg.seed,
        )
    found = check_space(train.action_space)
    held_out = eval_data
    if eval_data is not None and not isinstance(eval_data, LabelledWindows):
        held_out = labelled_windows(read_episodes(eval_data), samples=eval_samples, seed=10_000)
    if held_out is not None and describe_space(episode_space(held_out.action_space)) != found:
        raise ValueError(f"eval data actions {held_out.action_space} differ from {train.action_space}")
    _check_env_ids(train, expected_env_id, "the data")
    if held_out is not None:
        _check_env_ids(held_out, expected_env_id, "the eval data")
        _check_disjoint(train, held_out)
    return train, held_out


def _episode_key(episode: Episode) -> bytes:
    """Same first frame and same actions: the same episode (a collection rerun with the same seed repeats them)."""
    actions = np.asarray(episode.actions) if episode.actions is not None else np.zeros(0)
    return hashlib.sha256(episode.frames[0].tobytes() + actions.tobytes()).digest()


def _check_disjoint(train: LabelledWindows, held_out: LabelledWindows) -> None:
    """Refuse held-out episodes that are also training episodes: their scores would not be held out."""
    used = {int(e) for e in np.unique(train.index[:, 0])}
    seen = {_episode_key(train.episodes[e]) for e in used}
    shared = sum(_episode_key(held_out.episodes[e]) in seen for e in np.unique(held_out.index[:, 0]))
    if shared:
        raise ValueError(
            f"{shared} held-out episode(s) are also labelled training episodes (same first frame and actions): "
            "collect the held-out set with another seed (e.g. adaworld collect ... --seed 1)"
        )


def _check_env_ids(windows: LabelledWindows, expected: str | None, what: str) -> None:
    """Refuse windows of several envs, or of another adaptable env than ``expected`` (data of another game, or
    a folder of several, averaged other games' action effects into the codebook)."""
    from adaworld_gym.envs.shipped import check_recorded_env

    found = {windows.episodes[e].env_id for e in np.unique(windows.index[:, 0])}
    check_recorded_env(found, expected, what, "adapt to one env at a time")


@torch.no_grad()
def evaluate_adapted(
    world_model: DiffusionWorldModel,
    adapter: LatentAdapter,
    eval_set: list[dict[str, torch.Tensor]],
    denoise_steps: int,
    seed: int,
    lam: LatentActionModel | None = None,
) -> dict[str, float]:
    """1-step PSNR/SSIM (and copy-last) on batches of labelled windows, ``z = adapter(true action)``.

    ``lam``: computes the motion context of an adapter that takes one (from each window's history frames).
    """
    if adapter.uses_motion and lam is None:
        raise ValueError("this adapter takes the motion context: pass the LAM that computes it")
    was_training = adapter.training
    adapter.eval()
    try:
        batches = [
            {**batch, "z": adapter(*_adapter_inputs(adapter, lam, batch)).float()} for batch in eval_set
        ]
    finally:
        adapter.train(was_training)
    return evaluate_windows(world_model, batches, denoise_steps, seed)


def _adapter_inputs(adapter: LatentAdapter, lam: Any, batch: Mapping[str, torch.Tensor]) -> tuple[Any, ...]:
    if not adapter.uses_motion:
        return (batch["action"],)
    return batch["action"], batch["motion"] if "motion" in batch else batch_motion(lam, batch)


def adapt_config(config: AdaptConfig | None = None, **overrides: Any) -> AdaptConfig:
    """``config`` (default: the defaults) with the non-None ``overrides``, checked (``ValueError``)."""
    cfg = replace(config or AdaptConfig(), **{k: v for k, v in overrides.items() if v is not None})
    _validate(cfg)
    return cfg


def _validate(cfg: AdaptConfig) -> None:
    validate_run(cfg, min_steps=0)
    if cfg.init not in INIT_MODES:
        raise ValueError(f"unknown init {cfg.init!r}; choose one of {', '.join(INIT_MODES)}")
    if not 0 < cfg.pretrained_lr_scale <= 1 or not cfg.lr > 0:
        raise ValueError(
            f"need lr > 0 and 0 < pretrained_lr_scale <= 1, got {cfg.lr}, {cfg.pretrained_lr_scale}"
        )
    if cfg.samples_per_action < 1 or cfg.trajectories < 1:
        raise ValueError("samples_per_action and trajectories must be >= 1")
