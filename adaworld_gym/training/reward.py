"""Train the reward / termination head on the real rewards and terminations of collected episodes.

    from adaworld_gym.training.reward import attach_reward_head, train_reward
    head_dir = train_reward(["data/procgen-train/procgen-coinrun"], "runs/reward-coinrun", max_steps=2000)
    attach_reward_head("bundles/coinrun", head_dir)      # the bundle's envs now pay rewards and terminate

**Targets.** Transition ``t`` of an episode is the pair (``frames[t]``, ``frames[t+1]``) with ``rewards[t]`` and
``terminations[t]`` (:func:`reward_targets`). Procgen episodes (``meta["terminal_frame_is_reset"]``) need care:
gym3 resets itself, so the frame stored after a terminal step is the first frame of a new try, never the
frame that ended the episode, and the world model is never trained to produce it (``ClipDataset`` skips such
targets). Such a pair is dropped; its reward is added to the transition before it, which becomes the terminal
one. So the head learns "this frame change brings the episode to its end, paying r", on frame changes the world
model can imagine, and an imagined episode ends one frame before the real one would (the unseen last frame).
An episode-start terminal with no transition before it is dropped. Action-free video episodes
(``env_id`` ``video:...``) are skipped: their rewards are unknown, not zero.

**Sampling.** Rewards and terminations are rare. A share ``event_fraction`` of every batch is drawn from the
transitions with a nonzero reward or a termination ("events"); the loss weights them back to their share of
the data, so the head stays calibrated (the same optimum as uniform sampling, with less variance) and its
termination probability is a probability.

**Loss.** Mean squared error of ``reward / reward_scale`` (``reward_scale``: the largest absolute training
reward) plus the binary cross-entropy of the termination logit.

**Run directory.** ``out_dir/model`` (the :class:`RewardHead`, config.json + safetensors, written atomically),
``out_dir/checkpoints`` (atomic, resumed automatically: step count, wall-clock budget, optimizer, RNG and
batch-sampler states continue, so a resumed run ends with the weights of an uninterrupted one), ``out_dir/logs``
(tensorboard), ``out_dir/summary.json`` (held-out metrics), ``train_config.json``.

Episodes are held in memory (uint8 frames, 12 KB each): pass ``max_episodes`` for very large collections.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from adaworld_gym.data.episodes import Episode
from adaworld_gym.models.reward import RewardHead
from adaworld_gym.precision import bf16_autocast
from adaworld_gym.training.checkpoint import capture_rng_state, save_checkpoint
from adaworld_gym.training.common import (
    CheckpointClock,
    RunCounter,
    check_finite_loss,
    course_settings,
    make_lr_scheduler,
    one_run_per_out_dir,
    plain_config,
    resume_state,
    resume_stream,
    save_model_atomic,
    summary_writer,
    training_provenance,
    validate_run,
    with_overrides,
    write_json,
)

__all__ = [
    "RewardData",
    "RewardTrainConfig",
    "attach_reward_head",
    "evaluate_reward_head",
    "load_reward_data",
    "reward_targets",
    "train_reward",
]


@dataclass
class RewardTrainConfig:
    """Hyper-parameters of a reward-head training run."""

    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50  # at most a tenth of max_steps
    lr_schedule: str = "cosine"  # "cosine" (needs max_steps) or "constant"
    max_steps: int | None = 2000
    max_minutes: float | None = None
    grad_clip: float = 1.0
    mixed_precision: str = "no"  # "bf16" or "no"
    event_fraction: float = 0.5
    eval_fraction: float = 0.1
    max_episodes: int | None = None
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    lam_dir: str | None = None
    # A bundle whose world model makes every next frame (from the real frames before it and the real action):
    # the head then learns what the model's frames show at an event, which is what it sees in imagination.
    imagined_by: str | None = None
    imagined_denoise_steps: int = 1
    model_overrides: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ targets
def reward_targets(episode: Episode) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The training pairs of one episode: ``(t_prev, t_next, rewards, terminated)``, aligned as in the module doc.

    ``frames[t_prev[i]] -> frames[t_next[i]]`` is pair i, with float32 ``rewards[i]`` and bool ``terminated[i]``.
    """
    n = episode.num_transitions
    t = np.arange(n)
    rewards = np.asarray(episode.rewards, np.float32).copy()
    terms = np.asarray(episode.terminations, bool)
    if not episode.meta.get("terminal_frame_is_reset"):
        return t, t + 1, rewards, terms.copy()
    terminated = np.zeros(n, bool)
    for i in np.flatnonzero(terms):
        if i >= 1 and not terms[i - 1]:
            rewards[i - 1] += rewards[i]
            terminated[i - 1] = True
    keep = ~terms
    return t[keep], t[keep] + 1, rewards[keep], terminated[keep]


@dataclass
class RewardData:
    """Training pairs of many episodes: ``index[i] = (episode, t_prev, t_next)`` into ``frames``."""

    frames: list[np.ndarray]
    index: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    names: list[str]
    actions: list[np.ndarray] | None = None  # per episode, as ``frames``; needed to imagine the next frames

    def __len__(self) -> int:
        return len(self.index)

    @property
    def events(self) -> np.ndarray:
        return (self.rewards != 0) | self.terminated

    def pairs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``[B, H, W, 3]`` previous and next frames of the given pairs."""
        prev = np.stack([self.frames[e][a] for e, a, _ in self.index[rows]])
        nxt = np.stack([self.frames[e][b] for e, _, b in self.index[rows]])
        return prev, nxt

    def subset(self, episodes: np.ndarray) -> RewardData:
        keep = np.isin(self.index[:, 0], episodes)
        return RewardData(
            self.frames, self.index[keep], self.rewards[keep], self.terminated[keep], self.names, self.actions
        )


def load_reward_data(
    data_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    max_episodes: int | None = None,
    seed: int = 0,
    verify: bool = True,
) -> RewardData:
    """Read the episodes under ``data_dirs`` (episode directories or folders of them) into :class:`RewardData`.

    Video episodes are skipped (unknown rewards); ``max_episodes`` keeps a seeded random subset of episodes.
    """
    from adaworld_gym.data.clips import find_subsets
    from adaworld_gym.data.episodes import EpisodeError, EpisodeStore

    if max_episodes is not None and (not isinstance(max_episodes, (int, np.integer)) or max_episodes < 1):
        raise ValueError(f"max_episodes must be an int >= 1 (or None for all), got {max_episodes!r}")
    if isinstance(data_dirs, (str, os.PathLike)):
        data_dirs = [data_dirs]
    entries = []
    for path in find_subsets(list(data_dirs)):
        store = EpisodeStore(path)
        for name in store.names():
            entry = store.manifest[name]
            if entry["frames"] >= 2 and not str(entry.get("env_id", "")).startswith("video:"):
                entries.append((store, name))
    if not entries:
        raise EpisodeError(
            f"no episodes with rewards (two or more frames, not action-free video) in {data_dirs}"
        )
    if max_episodes is not None and len(entries) > max_episodes:
        chosen = np.sort(np.random.default_rng(seed).choice(len(entries), max_episodes, replace=False))
        entries = [entries[i] for i in chosen]
    frames, index, rewards, terminated, names, actions = [], [], [], [], [], []
    for store, name in entries:
        episode = store.read(name, verify=verify)
        t_prev, t_next, r, term = reward_targets(episode)
        e = len(frames)
        frames.append(episode.frames)
        actions.append(episode.actions)
        names.append(f"{store.root.name}/{name}")
        index.append(np.stack([np.full(len(t_prev), e), t_prev, t_next], axis=1))
        rewards.append(r)
        terminated.append(term)
    return RewardData(
        frames,
        np.concatenate(index).astype(np.int64),
        np.concatenate(rewards).astype(np.float32),
        np.concatenate(terminated).astype(bool),
        names,
        actions if all(a is not None for a in actions) else None,
    )


@torch.no_grad()
def imagine_next_frames(
    data: RewardData,
    bundle: Any,
    denoise_steps: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> RewardData:
    """The same pairs, each next frame replaced by the bundle world model's prediction of it.

    The model sees the real frames up to the pair's first (at most its ``num_history``) and the real action
    taken there, through the bundle's adapter: one imagined step from a real state, as at the start of every
    imagined episode. Episodes keep their real frames (the pairs' first frames); the imagined ones are appended.
    """
    from tqdm.auto import tqdm

    from adaworld_gym.training.adapt import LabelledWindows

    if data.actions is None:
        raise ValueError("imagining next frames needs the episodes' actions; these episodes have none")
    episodes = [Episode(f, actions=a) for f, a in zip(data.frames, data.actions, strict=True)]
    # The windows ending at each pair's first frame: history right-aligned and zero-padded, and the action.
    windows = LabelledWindows(episodes, data.index[:, :2], history=bundle.world_model.config.num_history)
    extended = list(data.frames)
    index = data.index.copy()
    order = np.argsort(data.index[:, 0], kind="stable")
    bounds = np.searchsorted(data.index[order, 0], np.arange(len(data.frames) + 1))
    for e in tqdm(range(len(data.frames)), desc="imagine", unit="ep", disable=not progress):
        rows, made = order[bounds[e] : bounds[e + 1]], []
        generator = torch.Generator().manual_seed(seed * 1_000_003 + e)
        for start in range(0, len(rows), batch_size):
            items = [windows[i] for i in rows[start : start + batch_size]]
            history = np.stack([item["history"] for item in items])
            lengths = np.array([item["history_len"] for item in items])
            z = bundle.latents(np.array([item["action"] for item in items]), history, lengths)
            made.append(
                bundle.world_model.predict_next(
                    history, z, steps=denoise_steps, generator=generator, history_len=lengths
                )
            )
        if made:
            extended[e] = np.concatenate([data.frames[e], *made])
            index[rows, 2] = len(data.frames[e]) + np.arange(len(rows))
    return replace(data, frames=extended, index=index)


# ------------------------------------------------------------------------------------------------ training
def train_reward(
    data_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    lam_dir: str | os.PathLike | None = None,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    event_fraction: float | None = None,
    eval_fraction: float | None = None,
    max_episodes: int | None = None,
    mixed_precision: str | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    imagined_by: str | os.PathLike | None = None,
    imagined_denoise_steps: int | None = None,
    progress: bool = True,
    log_every: int | None = None,
    checkpoint_every: int | None = None,
    checkpoint_minutes: float | None = None,
) -> Path:
    """Train a :class:`RewardHead`; returns the directory of the saved model (``out_dir/model``).

    Args:
        data_dirs: episode directories (or folders holding them) with real rewards and terminations.
        out_dir: run directory; a checkpoint found in it is resumed.
        lam_dir: a trained LAM (model or run directory): the head then also takes its latent action ``mu`` of
            each pair, and in an environment the adapter's ``z``. None: frames only.
        max_steps: optimizer steps (default 2000); ``max_minutes`` alone trains at a constant rate until then.
        max_minutes: wall-clock budget, counted across resumes.
        batch_size, lr, event_fraction, eval_fraction, mixed_precision: override the defaults of
            :class:`RewardTrainConfig`.
        seed: seeds the weights, the held-out split and the batches.
        max_episodes: read at most this many episodes (a seeded random choice).
        model_overrides: :class:`RewardHead` arguments (e.g. ``{"channels": (8, 8, 8, 8)}`` for tests).
        imagined_by: a bundle directory: train (and hold out) on pairs whose next frame its world model made
            (:func:`imagine_next_frames`, ``imagined_denoise_steps`` sampler steps, default 1), so the head
            pays for what the model shows at an event rather than for what the real frame shows.
        progress: show a tqdm progress bar.
        log_every, checkpoint_every, checkpoint_minutes: tensorboard and checkpoint intervals.

    Raises:
        EpisodeError: no usable episodes; ValueError: bad settings, or a run directory written for another
            model config (e.g. other data, hence another ``reward_scale``).
    """
    cfg = with_overrides(
        RewardTrainConfig(),
        max_steps=max_steps,
        max_minutes=max_minutes,
        batch_size=batch_size,
        lr=lr,
        event_fraction=event_fraction,
        eval_fraction=eval_fraction,
        mixed_precision=mixed_precision,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        checkpoint_minutes=checkpoint_minutes,
        imagined_denoise_steps=imagined_denoise_steps,
    )
    cfg = replace(
        cfg,
        seed=seed,
        max_episodes=max_episodes,
        lam_dir=None if lam_dir is None else os.fspath(lam_dir),
        imagined_by=None if imagined_by is None else os.fspath(imagined_by),
        model_overrides=dict(model_overrides or {}),
    )
    return run_reward_training(cfg, data_dirs, out_dir, progress=progress)


@one_run_per_out_dir
def run_reward_training(
    cfg: RewardTrainConfig,
    data_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> Path:
    """Run the training described by ``cfg`` (see :func:`train_reward`)."""
    from tqdm.auto import tqdm

    # Capped before validate_run, which warns about a warm-up as long as the run: it must see the one used.
    if cfg.max_steps is not None and cfg.max_steps > 0:
        cfg = replace(cfg, warmup_steps=min(cfg.warmup_steps, cfg.max_steps // 10))
    validate_run(cfg)
    if not isinstance(cfg.imagined_denoise_steps, int) or cfg.imagined_denoise_steps < 1:
        raise ValueError(f"imagined_denoise_steps must be an int >= 1, got {cfg.imagined_denoise_steps!r}")
    if not 0.0 <= cfg.event_fraction < 1.0 or not 0.0 <= cfg.eval_fraction < 1.0:
        raise ValueError(
            f"event_fraction and eval_fraction must lie in [0, 1), got {cfg.event_fraction}, {cfg.eval_fraction}"
        )
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "checkpoints"
    torch.manual_seed(cfg.seed)

    data = load_reward_data(data_dirs, cfg.max_episodes, cfg.seed)
    if cfg.imagined_by is not None:
        from adaworld_gym.models.bundle import AdaWorldBundle

        bundle = AdaWorldBundle.from_pretrained(cfg.imagined_by)
        data = imagine_next_frames(data, bundle, cfg.imagined_denoise_steps, cfg.seed, progress=progress)
    train, held_out = _split(data, cfg.eval_fraction, cfg.seed)
    if not (data.events).any():
        warnings.warn(
            f"the episodes in {data_dirs} have no rewards and no terminations: the head will learn zeros",
            stacklevel=2,
        )
    lam = None
    if cfg.lam_dir is not None:
        from adaworld_gym.training.world_model import load_lam

        lam = load_lam(cfg.lam_dir)
    scale = float(np.abs(train.rewards).max()) if len(train) and np.abs(train.rewards).max() > 0 else 1.0
    model = RewardHead(
        **{
            **cfg.model_overrides,
            "image_size": data.frames[0].shape[1],
            "latent_dim": 0 if lam is None else lam.config.latent_dim,
            "reward_scale": scale,
        }
    )
    model_config = plain_config(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_lr_scheduler(optimizer, cfg)

    provenance = training_provenance(data_dirs, lam=cfg.lam_dir, imagined_by=cfg.imagined_by)
    provenance["settings"] = course_settings(cfg)
    # What decides the held-out split (and the imagined frames): resuming under others would evaluate on trained pairs.
    provenance["split"] = {
        "seed": cfg.seed,
        "eval_fraction": cfg.eval_fraction,
        "max_episodes": cfg.max_episodes,
        "imagined_denoise_steps": cfg.imagined_denoise_steps if cfg.imagined_by is not None else None,
    }
    state = resume_state(
        ckpt_root, model_config, model, optimizer, scheduler, provenance=provenance,
        announce=progress,
    )  # fmt: skip
    run = RunCounter(state)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "train_config.json", asdict(cfg))
    writer = summary_writer(out_dir, None if state is None else run.step)
    sampler = resume_stream(
        lambda s: _BatchSampler(train, cfg.batch_size, cfg.event_fraction, seed=s),
        cfg.seed,
        state,
        legacy_seed=cfg.seed + 7919 * run.step,
    )
    bf16 = cfg.mixed_precision == "bf16"

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_root,
            run.step,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                **run.state(),
                "rng": capture_rng_state(),
                "model_config": model_config,
                "provenance": provenance,
                "data_stream": sampler.state_dict(),
                "log_window": sums.tolist(),
            },
        )

    bar = tqdm(total=cfg.max_steps, initial=run.step, disable=not progress, desc="train-reward", unit="step")
    sums = np.zeros(3)  # reward loss, termination loss, steps
    if state is not None and "log_window" in state:  # the steps since the last log, for the next one
        sums[:] = state["log_window"]
    clock = CheckpointClock(checkpoint, run.step, cfg.checkpoint_every, cfg.checkpoint_minutes)
    run.start()
    model.train()
    with clock.guard(bar):
        while not run.spent(cfg):
            rows, weights = sampler.draw()
            prev, nxt = (torch.from_numpy(x) for x in train.pairs(rows))
            z = _latents(lam, prev, nxt, bf16)
            with bf16_autocast("cpu", bf16):
                reward, logit = model(prev, nxt, z)
            w = torch.from_numpy(weights)
            target_r = torch.from_numpy(train.rewards[rows] / scale)
            target_t = torch.from_numpy(train.terminated[rows].astype(np.float32))
            loss_r = (w * (reward.float() - target_r) ** 2).mean()
            loss_t = (
                w * F.binary_cross_entropy_with_logits(logit.float(), target_t, reduction="none")
            ).mean()
            loss = loss_r + loss_t
            check_finite_loss(loss, run.step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()

            run.count(len(rows))
            sums += (float(loss_r.detach()), float(loss_t.detach()), 1)
            bar.update(1)
            if run.step % cfg.log_every == 0:
                writer.add_scalar("loss/reward", sums[0] / sums[2], run.step)
                writer.add_scalar("loss/termination", sums[1] / sums[2], run.step)
                writer.add_scalar("lr", scheduler.get_last_lr()[0], run.step)
                bar.set_postfix(reward=f"{sums[0] / sums[2]:.4f}", term=f"{sums[1] / sums[2]:.4f}")
                sums[:] = 0
            clock.tick(run.step)
    model.eval()
    eval_on = "held_out" if len(held_out) else "train"
    metrics = evaluate_reward_head(model, held_out if len(held_out) else train, lam=lam, bf16=bf16)
    for key, value in metrics.items():
        if isinstance(value, float):
            writer.add_scalar(f"eval/{key}", value, run.step)
    writer.close()
    model_dir = out_dir / "model"
    save_model_atomic(model, model_dir)
    summary = {
        **run.summary(),
        "episodes": len(data.frames),
        "train_pairs": len(train),
        "train_events": int(train.events.sum()),
        "reward_scale": scale,
        "latent_actions": lam is not None,
        "imagined_by": cfg.imagined_by,
        "eval_on": eval_on,
        "eval": metrics,
    }
    write_json(out_dir / "summary.json", summary)
    return model_dir


def _split(data: RewardData, eval_fraction: float, seed: int) -> tuple[RewardData, RewardData]:
    """Hold out whole episodes (at least one when there are two or more and ``eval_fraction > 0``)."""
    n = len(data.frames)
    n_eval = 0 if n < 2 or eval_fraction <= 0 else max(1, round(eval_fraction * n))
    order = np.random.default_rng(seed).permutation(n)
    held_out, train = data.subset(order[:n_eval]), data.subset(order[n_eval:])
    if not len(train):
        raise ValueError("no training pairs left after holding out episodes; lower eval_fraction")
    return train, held_out


class _BatchSampler:
    """Batches with a share ``event_fraction`` of events, and loss weights that undo the oversampling."""

    def __init__(self, data: RewardData, batch_size: int, event_fraction: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.batch_size = batch_size
        events = data.events
        self.event_rows, self.other_rows = np.flatnonzero(events), np.flatnonzero(~events)
        p = events.mean()
        # Oversample only when events are rarer than asked for and both kinds exist.
        self.fraction = event_fraction if 0 < p < event_fraction and len(self.other_rows) else None
        if self.fraction is not None:
            self.w_event, self.w_other = p / self.fraction, (1 - p) / (1 - self.fraction)
        self.n = len(events)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = dict(state["rng"])

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        if self.fraction is None:
            return self.rng.integers(self.n, size=self.batch_size), np.ones(self.batch_size, np.float32)
        is_event = self.rng.random(self.batch_size) < self.fraction
        rows = np.where(
            is_event,
            self.rng.choice(self.event_rows, self.batch_size),
            self.rng.choice(self.other_rows, self.batch_size),
        )
        weights = np.where(is_event, self.w_event, self.w_other).astype(np.float32)
        return rows, weights


def _latents(lam: Any, prev: torch.Tensor, nxt: torch.Tensor, bf16: bool) -> torch.Tensor | None:
    if lam is None:
        return None
    from adaworld_gym.training.world_model import label_actions

    return label_actions(lam, prev, nxt, bf16)


@torch.no_grad()
def evaluate_reward_head(
    head: RewardHead, data: RewardData, lam: Any = None, bf16: bool = False, batch_size: int = 256
) -> dict[str, Any]:
    """Reward MSE (and that of predicting the mean), termination accuracy, precision and recall on ``data``."""
    preds, probs = [], []
    for start in range(0, len(data), batch_size):
        rows = np.arange(start, min(start + batch_size, len(data)))
        prev, nxt = (torch.from_numpy(x) for x in data.pairs(rows))
        z = _latents(lam, prev, nxt, bf16)
        reward, _, prob = head.predict(prev, nxt, z)
        preds.append(reward)
        probs.append(prob)
    pred, prob = np.concatenate(preds), np.concatenate(probs)
    said = prob > head.config.termination_threshold
    truth = data.terminated
    true_pos = int((said & truth).sum())
    return {
        "pairs": len(data),
        "reward_events": int((data.rewards != 0).sum()),
        "terminations": int(truth.sum()),
        "reward_mse": float(np.mean((pred - data.rewards) ** 2)),
        "reward_mse_predict_mean": float(np.var(data.rewards)),
        "termination_accuracy": float(np.mean(said == truth)),
        "termination_precision": true_pos / int(said.sum()) if said.any() else None,
        "termination_recall": true_pos / int(truth.sum()) if truth.any() else None,
    }


# What a head must show on held-out episodes to be attached to a bundle (the shipped bundles' rule too).
MIN_EVAL_EVENTS = 5  # rewarded held-out transitions: fewer cannot tell a head that pays from one that guesses
MIN_R2 = 0.2  # share of the held-out reward variance explained


def held_out_r2(metrics: dict[str, Any]) -> float:
    """Share of the reward variance a head explains, from :func:`evaluate_reward_head`'s metrics (0 if none)."""
    variance = metrics["reward_mse_predict_mean"]
    return 1 - metrics["reward_mse"] / variance if variance > 0 else 0.0


def attach_refusal(summary: dict[str, Any]) -> str | None:
    """Why a head with this training ``summary`` (``summary.json``) should not be attached, or None if it may:
    it saw no event, was not scored on held-out episodes, saw too few rewarded ones there, or explains too
    little of their reward variance."""
    if not summary["train_events"]:
        return "the head saw no rewarded or terminal transition in --data"
    if summary["eval_on"] != "held_out":
        return "no episode was held out to score it (give --data two or more episodes)"
    metrics = summary["eval"]
    if metrics["reward_events"] < MIN_EVAL_EVENTS:
        return (
            f"{metrics['reward_events']} rewarded held-out transitions (< {MIN_EVAL_EVENTS}) cannot score it"
        )
    r2 = held_out_r2(metrics)
    if r2 < MIN_R2:
        return f"it explains {r2:.2f} of the held-out reward variance (R^2 < {MIN_R2}): it would pay noise"
    return None


def load_reward_head(path: str | os.PathLike) -> RewardHead:
    """The reward head saved at ``path`` (its ``model`` directory or the run directory holding it), in eval mode."""
    from adaworld_gym.models.loading import saved_model_dir

    path = saved_model_dir(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no reward head at {path}: expected a directory written by train_reward")
    return RewardHead.from_pretrained(path).eval()


def attach_reward_head(bundle_dir: str | os.PathLike, head: RewardHead | str | os.PathLike) -> Path:
    """Give the bundle at ``bundle_dir`` this reward head (a model or its directory); rewrites it atomically."""
    from adaworld_gym.models.bundle import AdaWorldBundle

    if not isinstance(head, RewardHead):
        head = load_reward_head(head)
    bundle = AdaWorldBundle.from_pretrained(bundle_dir)
    try:
        bundle = replace(bundle, reward_head=head)
    except ValueError as e:
        raise ValueError(f"cannot attach this reward head to {bundle_dir}: {e}") from e
    bundle.save_pretrained(bundle_dir)
    return Path(bundle_dir)
