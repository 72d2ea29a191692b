"""World-model benchmark: AdaWorld (LAM-conditioned) vs its action-agnostic twin, equal budget and data.

    python -m benchmarks.world_model --preset cpu --seed 0 --out out/world_model --lam runs/lam-small
    python -m benchmarks.world_model --preset cpu --lam L --adaworld-model A --agnostic-model B  # no training

Trains both world models on the same stream of windows (Procgen pretraining games, training levels, plus
RobosuitePush; ``benchmarks.latent_actions.ensure_data`` collects them), with the same number of optimizer steps,
then evaluates on held-out episodes of each env (``push``: held-out push episodes; ``procgen``: test levels of
the pretraining games, the same number of windows per game):

- ``psnr_1step`` / ``ssim_1step``: the next frame from the true history, z = LAM mu of the true transition (zeros
  for the twin); PSNR from the MSE pooled over all windows, on [0, 255];
- ``psnr_rollout``: PSNR at horizons 1..20 of autoregressive rollouts whose z at every step is the LAM's mu of
  the *true* future transition (zeros for the twin);
- ``copy_last``: repeating the last history frame, the floor;
- ``adaworld_shuffled_z``: AdaWorld with every window's z taken from another window (rolled by half the set):
  how much of its score comes from z, i.e. whether the model is controllable at all;
- ``denoise_sweep``: the same metrics on the same windows at each count in the preset's ``denoise_sweep``
  (the headline figures above use ``denoise_steps``); one Euler step from the largest noise level returns the
  denoiser's mean estimate, which pixel MSE favours, and more steps draw sharper samples;
- ``speed``: sampling frames/s for 1/2/3/5 denoising steps at batch 1 and 64.

Writes ``results.json``, ``results.md`` and ``rollout_psnr.png``. ``--preset smoke`` (tiny models, two training
steps, tiny freshly collected Procgen data and synthetic push-like episodes) runs in well under a minute.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaworld_gym.data.clips import find_subsets, history_start, valid_targets
from adaworld_gym.data.collect import collect_procgen
from adaworld_gym.data.episodes import Episode, EpisodeStore, atomic_write_bytes
from adaworld_gym.metrics import psnr_pooled, ssim
from adaworld_gym.models.latent_action import LatentActionModel
from adaworld_gym.models.world_model import DiffusionWorldModel
from adaworld_gym.sims.games import PRETRAIN_GAMES
from adaworld_gym.training.world_model import label_actions, load_lam, load_world_model, train_world_model
from benchmarks import _common
from benchmarks.latent_actions import ensure_data

MODELS = ("adaworld", "adaworld_shuffled_z", "action_agnostic", "copy_last")
HORIZONS_SHOWN = (1, 5, 10, 20)
SPEED_STEPS = (1, 2, 3, 5)
SPEED_BATCHES = (1, 64)

PRESETS: dict[str, dict[str, Any]] = {
    # 2 CPU cores: the `small` world model, 1,200 steps of 32 (~60 min at ~10 samples/s each), both models
    # trained side by side with one thread each. Same data as benchmarks.latent_actions' cpu preset.
    "cpu": dict(
        model="small",
        train_steps=1200,
        batch_size=32,
        push_share=0.5,
        jobs=2,
        procgen_train_episodes=150,
        procgen_test_episodes=30,
        push_train_episodes=700,
        push_test_episodes=40,
        steps=100,
        push_steps=30,
        eval_1step=512,
        eval_rollout=96,
        horizon=20,
        denoise_steps=3,
        denoise_sweep=(1, 3),
        speed_repeats=3,
    ),
    # One GPU: the `base` world model.
    "full": dict(
        model="base",
        train_steps=50_000,
        batch_size=64,
        push_share=0.5,
        jobs=1,
        procgen_train_episodes=1000,
        procgen_test_episodes=100,
        push_train_episodes=5000,
        push_test_episodes=200,
        steps=200,
        push_steps=30,
        eval_1step=2048,
        eval_rollout=512,
        horizon=20,
        denoise_steps=3,
        denoise_sweep=(1, 3),
        speed_repeats=10,
    ),
    # Tests: tiny models, two training steps, tiny data, a handful of windows.
    "smoke": dict(
        model="tiny",
        train_steps=2,
        batch_size=4,
        push_share=0.5,
        jobs=1,
        games=2,
        procgen_train_episodes=2,
        procgen_test_episodes=2,
        push_train_episodes=4,
        push_test_episodes=2,
        steps=40,
        push_steps=24,
        eval_1step=8,
        eval_rollout=4,
        horizon=20,
        denoise_steps=1,
        denoise_sweep=(1, 2),
        speed_repeats=1,
    ),
}


@dataclass
class Args:
    preset: str = "cpu"
    seed: int = 0
    out: Path = Path("out/world_model")
    data: str = (
        ""  # episode root; "": data/, or OUT/data with --preset smoke (its tiny sets stay out of data/)
    )
    lam: str = ""  # trained LAM directory (required, except with --preset smoke: a tiny LAM is trained)
    adaworld_model: str = ""  # reuse a trained AdaWorld model instead of training one
    agnostic_model: str = ""  # reuse a trained action-agnostic model instead of training one
    jobs: int = 0  # trainings run side by side; 0: the preset's
    threads: int = 1  # torch threads per process (1 is the fastest per core on a shared 2-core machine)
    speed_only: bool = False  # only re-measure "speed" of the AdaWorld model in OUT/results.json, in place


# ------------------------------------------------------------------------------------------------------ data
def synthetic_push_like(out: Path, episodes: int, steps: int, seed: int) -> Path:
    """Push-like episodes without robosuite: a square moved by random 4-d actions over a textured table.

    Written to ``out/push`` in the episode format; only for smoke runs and tests (robosuite is slow to start).
    """
    store = EpisodeStore(out / "push", create=True)
    # Episodes already there are kept: refuse a directory written with other settings (or by collect_push)
    # rather than mix its episodes with these.
    store.check_collection({"collector": "synthetic_push_like", "steps": steps, "seed": seed})
    store.set_aside_damaged()  # written again below, as the collectors do
    rng = np.random.default_rng(seed)
    for i in range(episodes):
        table = rng.integers(90, 140, (64, 64, 3), dtype=np.uint8)
        pos = rng.uniform(12, 52, 2)
        actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
        frames = []
        for t in range(steps + 1):
            frame = table.copy()
            y, x = pos.astype(int)
            frame[y - 4 : y + 4, x - 4 : x + 4] = (230, 60, 40)
            frames.append(frame)
            if t < steps:
                pos = np.clip(pos + 3 * actions[t, :2], 6, 58)
        if f"ep_{i:06d}" in store:
            continue  # written by an earlier run (the same seed gives the same episode)
        store.write(
            f"ep_{i:06d}",
            Episode(
                frames=np.stack(frames),
                actions=actions,
                env_id="synthetic:push",
                action_space={"type": "box", "shape": [4], "low": -1.0, "high": 1.0},
                seed=seed,
            ),
        )
    return out / "push"


def smoke_data(args: Args, p: dict) -> tuple[list[Path], Path, Path]:
    """Tiny fresh Procgen data and synthetic push-like episodes, in the layout of ``ensure_data``."""
    d, games = args.data, PRETRAIN_GAMES[: p["games"]]
    collect_procgen(games, p["procgen_train_episodes"], p["steps"], d / "procgen-train", seed=0)
    collect_procgen(games, p["procgen_test_episodes"], p["steps"], d / "procgen-test", levels="test", seed=1)
    synthetic_push_like(d, p["push_train_episodes"], p["push_steps"], seed=0)
    push_test = synthetic_push_like(d / "push-test", p["push_test_episodes"], p["push_steps"], seed=1)
    return [d / "procgen-train", d / "push"], d / "procgen-test", push_test


def pretrain_subsets(procgen_test: Path) -> list[Path]:
    """The held-out Procgen subsets of the pretraining games only (adaptation games are kept out)."""
    keep = {f"procgen-{g}" for g in PRETRAIN_GAMES}
    subsets = [s for s in find_subsets(procgen_test) if s.name in keep]
    if not subsets:
        raise SystemExit(f"no held-out data of the pretraining games under {procgen_test}")
    return subsets


def sample_windows(
    subsets: list[Path], n: int, horizon: int, history: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``n`` windows spread over ``subsets`` as evenly as ``n`` allows (``ceil(n / len(subsets))`` drawn from each,
    the surplus dropped at random, so a subset may give one fewer), each with ``horizon`` true future frames.

    Returns ``history`` uint8 [n,k,H,W,3] (zero-padded at an episode start), ``history_len`` [n] and ``frames``
    uint8 [n,horizon+1,H,W,3]: the last history frame followed by the true future.
    """
    items: list[tuple[np.ndarray, int, np.ndarray]] = []
    per_subset = math.ceil(n / len(subsets))
    for path in subsets:
        store = EpisodeStore(path)
        # Episodes long enough (from the manifest), then windows per episode; each episode is read once.
        names = [name for name in store.names() if store.manifest[name]["frames"] > horizon]
        if not names:
            continue
        counts = rng.multinomial(per_subset, np.full(len(names), 1 / len(names)))
        for name, count in zip(names, counts, strict=True):
            if count == 0:
                continue
            episode = store.read(name)
            ok = np.zeros(episode.num_transitions, np.int64)
            ok[valid_targets(episode)] = 1  # real transitions, not a reset
            run = np.concatenate([[0], np.cumsum(ok)])
            starts = np.arange(episode.num_transitions - horizon + 1)
            valid = starts[run[starts + horizon] - run[starts] == horizon]
            for t in rng.choice(valid, count) if len(valid) else []:
                hist = np.zeros((history, *episode.frames.shape[1:]), np.uint8)
                length = (
                    int(t) + 1 - history_start(episode, int(t), history)
                )  # never across a Procgen restart
                hist[history - length :] = episode.frames[t + 1 - length : t + 1]
                items.append((hist, length, episode.frames[t : t + horizon + 1].copy()))
    if not items:
        raise SystemExit(f"no episode in {[str(s) for s in subsets]} has {horizon} consecutive transitions")
    picked = [items[i] for i in rng.permutation(len(items))[:n]]
    return {
        "history": np.stack([it[0] for it in picked]),
        "history_len": np.array([it[1] for it in picked]),
        "frames": np.stack([it[2] for it in picked]),
    }


# ------------------------------------------------------------------------------------------------ evaluation
def latent_actions(lam: LatentActionModel, frames: np.ndarray) -> np.ndarray:
    """The LAM's mu of every consecutive pair of ``frames`` [n,T+1,...] -> [n,T,d]."""
    n, t = frames.shape[:2]
    f_t, f_t1 = frames[:, :-1].reshape(-1, *frames.shape[2:]), frames[:, 1:].reshape(-1, *frames.shape[2:])
    return label_actions(lam, f_t, f_t1).reshape(n, t - 1, -1)


def predict_rollouts(
    model: DiffusionWorldModel,
    windows: dict[str, np.ndarray],
    z: np.ndarray,
    denoise_steps: int,
    seed: int,
    guidance_scale: float = 1.0,
) -> np.ndarray:
    """Rollouts [n,T,H,W,3] driven by z [n,T,d], in chunks of 64 windows."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(z), 64):
        out.append(
            model.rollout(
                windows["history"][i : i + 64],
                z[i : i + 64],
                steps=denoise_steps,
                generator=gen,
                history_len=windows["history_len"][i : i + 64],
                guidance_scale=guidance_scale,
            )
        )
    return np.concatenate(out)


def evaluate_env(
    models: dict[str, DiffusionWorldModel],
    lam: LatentActionModel,
    one_step: dict[str, np.ndarray],
    rollout: dict[str, np.ndarray],
    denoise_steps: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """1-step PSNR/SSIM and rollout PSNR per horizon of each model and of copy-last, on one env's windows."""
    z_one, z_roll = latent_actions(lam, one_step["frames"]), latent_actions(lam, rollout["frames"])
    target_one, target_roll = one_step["frames"][:, 1], rollout["frames"][:, 1:]
    zeros = (np.zeros_like(z_one), np.zeros_like(z_roll))
    # The twin ignores z (its config zeros it); zeros are passed to make that explicit.
    drives = {
        name: (m, *(zeros if m.config.action_agnostic else (z_one, z_roll))) for name, m in models.items()
    }
    # Controllability: the same model, each window driven by another window's latent actions.
    drives["adaworld_shuffled_z"] = (
        models["adaworld"],
        np.roll(z_one, len(z_one) // 2, axis=0),
        np.roll(z_roll, len(z_roll) // 2, axis=0),
    )
    preds = {
        name: (
            predict_rollouts(model, one_step, zo, denoise_steps, seed)[:, 0],
            predict_rollouts(model, rollout, zr, denoise_steps, seed),
        )
        for name, (model, zo, zr) in drives.items()
    }
    last_one = one_step["history"][:, -1]
    preds["copy_last"] = (last_one, np.repeat(rollout["history"][:, -1:], target_roll.shape[1], axis=1))
    return {
        name: {
            "psnr_1step": psnr_pooled(one, target_one),
            "ssim_1step": ssim(one, target_one),
            "psnr_rollout": [psnr_pooled(roll[:, h], target_roll[:, h]) for h in range(target_roll.shape[1])],
        }
        for name, (one, roll) in preds.items()
    }


def sampling_speed(model: DiffusionWorldModel, repeats: int, seed: int) -> dict[str, Any]:
    """Frames/s of ``predict_next`` (4 history frames) per denoising-step count and batch size."""
    k, size, d = model.config.num_history, model.config.sample_size, model.config.action_dim
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    speed: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "machine": _common.machine_info(),
    }
    for batch in SPEED_BATCHES:
        history = rng.integers(0, 256, (batch, k, size, size, 3), dtype=np.uint8)
        z = rng.standard_normal((batch, d)).astype(np.float32)
        per_steps = {}
        for steps in SPEED_STEPS:
            model.predict_next(history, z, steps=steps, generator=gen)  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                model.predict_next(history, z, steps=steps, generator=gen)
            per_steps[str(steps)] = batch * repeats / (time.perf_counter() - start)
        speed[f"batch_{batch}"] = per_steps
    return speed


# --------------------------------------------------------------------------------------------------- report
def markdown_table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    rows = []
    for env in ("push", "procgen"):
        rows += [
            f"### {env}",
            "",
            "| model | 1-step PSNR | 1-step SSIM | " + " | ".join(f"PSNR@{h}" for h in HORIZONS_SHOWN) + " |",
            "|---|---|---|" + "---|" * len(HORIZONS_SHOWN),
        ]
        for name in MODELS:
            r = results[env][name]
            shown = " | ".join(f"{r['psnr_rollout'][h - 1]:.2f}" for h in HORIZONS_SHOWN)
            rows.append(f"| {name} | {r['psnr_1step']:.2f} | {r['ssim_1step']:.3f} | {shown} |")
        rows.append("")
    sweep = results.get("denoise_sweep", {})
    if sweep:
        rows += [
            "### by denoising steps (same windows)",
            "",
            "| env | model | "
            + " | ".join(f"1-step PSNR, {s} denoising" for s in sweep)
            + " | "
            + " | ".join(f"PSNR@10, {s} denoising" for s in sweep)
            + " |",
            "|---|---|" + "---|" * (2 * len(sweep)),
        ]
        for env in ("push", "procgen"):
            for name in MODELS:
                one = [f"{sweep[s][env][name]['psnr_1step']:.2f}" for s in sweep]
                ten = [f"{sweep[s][env][name]['psnr_rollout'][9]:.2f}" for s in sweep]
                rows.append(f"| {env} | {name} | " + " | ".join(one + ten) + " |")
        rows.append("")
    speed = results["speed"]
    rows += [
        f"### sampling speed (frames/s, {speed['threads']} thread(s))",
        "",
        "| denoising steps | " + " | ".join(f"batch {b}" for b in SPEED_BATCHES) + " |",
        "|---|" + "---|" * len(SPEED_BATCHES),
    ]
    for steps in SPEED_STEPS:
        rows.append(
            f"| {steps} | "
            + " | ".join(f"{speed[f'batch_{b}'][str(steps)]:.1f}" for b in SPEED_BATCHES)
            + " |"
        )
    trained = meta.get("training") or {}
    steps = {name: (t or {}).get("steps") for name, t in trained.items()}
    # A model trained here has a summary with its steps too: only --adaworld-model / --agnostic-model make a
    # model "given" (the table used to call the models this very run trained given ones).
    given = {"adaworld": meta.get("adaworld_model"), "action_agnostic": meta.get("agnostic_model")}
    if trained and any(given.values()) and all(steps.values()):  # say what they had, not the preset's budget
        budget = ", ".join(
            f"{name} {n:,} steps" + ("" if given.get(name) else " (trained here)")
            for name, n in steps.items()
        )
        if len(set(steps.values())) > 1:
            budget += " (unequal budgets)"
        if all(given.values()):
            budget = f"given models: {budget}; their `train_summary.json` lists the stages"
        else:
            budget = f"a given and a trained model: {budget}; the given one's `train_summary.json` lists its stages"
    else:
        budget = f"{meta['train_steps']} steps of {meta['batch_size']} each"
    rows += [
        "",
        f"`{meta['preset']}` preset ({meta['model']} world model, {budget}, "
        f"seed {meta['seed']}); held-out windows per env: {meta['eval_1step']} "
        f"(1-step), {meta['eval_rollout']} (rollouts); {meta['denoise_steps']} denoising steps; PSNR from the "
        "MSE pooled over windows on [0, 255]; z from the LAM applied to the true frames (zeros for the twin).",
    ]
    return "\n".join(rows) + "\n"


def plot_rollouts(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, env in zip(axes, ("push", "procgen"), strict=True):
        for name in MODELS:
            curve = results[env][name]["psnr_rollout"]
            ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=name)
        ax.set(title=f"{env}: rollout PSNR vs horizon", xlabel="horizon (frames)", ylabel="PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")  # a killed run never leaves a half-written plot
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------ main
def _train(kwargs: dict[str, Any]) -> str:
    """One training run; a top-level function so that it can run in a worker process."""
    torch.set_num_threads(kwargs.pop("threads"))
    return str(train_world_model(**kwargs))


def train_models(args: Args, p: dict, lam_dir: Path, train_dirs: list[Path], eval_dirs: list[Path]) -> dict:
    """Train whichever of the two models was not given; both get the same data, steps and seed."""
    common = dict(
        data={str(train_dirs[0]): 1 - p["push_share"], str(train_dirs[1]): p["push_share"]},
        preset=p["model"],
        max_steps=p["train_steps"],
        batch_size=p["batch_size"],
        seed=args.seed,
        eval_data=[str(d) for d in eval_dirs],
        threads=args.threads,
    )
    todo = {}
    if not args.adaworld_model:
        todo["adaworld"] = dict(
            common, out_dir=str(args.out / "runs" / f"adaworld_seed{args.seed}"), lam_dir=str(lam_dir)
        )
    if not args.agnostic_model:
        todo["action_agnostic"] = dict(
            common,
            out_dir=str(args.out / "runs" / f"action_agnostic_seed{args.seed}"),
            lam_dir=None,
            action_agnostic=True,
        )
    jobs = args.jobs or p["jobs"]
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {name: pool.submit(_train, dict(kw, progress=False)) for name, kw in todo.items()}
            return {name: f.result() for name, f in futures.items()}
    return {name: _train(dict(kw)) for name, kw in todo.items()}


def training_summary(model_dir: Path) -> dict[str, Any] | None:
    """How a model was trained: its run's ``summary.json`` (a model trained here) or the ``train_summary.json``
    kept beside the weights (the shipped model and the committed twin, trained in stages); None if neither."""
    for path in (model_dir.parent / "summary.json", model_dir / "train_summary.json"):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def check_given_models(args: Args) -> None:
    """Load the models given on the command line before any data or training: a typo in one used to surface
    only after the other model had trained (half an hour and more)."""
    given = {
        "--adaworld-model": (args.adaworld_model, False),
        "--agnostic-model": (args.agnostic_model, True),
    }
    try:
        if args.lam:
            load_lam(args.lam)
        for flag, (path, agnostic) in given.items():
            if path and load_world_model(path).config.action_agnostic != agnostic:
                raise SystemExit(f"{flag} {path}: it is {'not ' if agnostic else ''}action-agnostic")
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot load a given model: {e}") from None


def main(args: Args) -> dict:
    if args.preset not in PRESETS:
        raise SystemExit(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[args.preset]
    torch.set_num_threads(args.threads)
    if args.speed_only:
        return remeasure_speed(args, p)
    args.data = _common.resolve_data(args)
    start = time.time()
    check_given_models(args)
    _common.make_out_dir(args.out)
    get_data: Callable = smoke_data if args.preset == "smoke" else ensure_data
    train_dirs, procgen_test, push_test = get_data(args, p)
    procgen_subsets = pretrain_subsets(procgen_test)

    lam_dir = Path(args.lam) if args.lam else None
    if lam_dir is None:
        if args.preset != "smoke":
            raise SystemExit("--lam DIR is required: train one with benchmarks.latent_actions or train_lam")
        from adaworld_gym.training.lam import train_lam

        lam_dir = train_lam(train_dirs, args.out / "runs" / "lam", "tiny", max_steps=2, progress=False)
    lam = load_lam(lam_dir)

    trained = train_models(args, p, lam_dir, train_dirs, [*procgen_subsets, push_test])
    model_dirs = {
        "adaworld": args.adaworld_model or trained["adaworld"],
        "action_agnostic": args.agnostic_model or trained["action_agnostic"],
    }
    models = {name: load_world_model(path) for name, path in model_dirs.items()}
    if models["adaworld"].config.action_agnostic or not models["action_agnostic"].config.action_agnostic:
        raise SystemExit("--adaworld-model must be LAM-conditioned and --agnostic-model action-agnostic")

    rng = np.random.default_rng(args.seed + 10_000)  # evaluation sample, independent of training
    k = models["adaworld"].config.num_history
    results: dict[str, Any] = {}
    for env, subsets in (("push", [push_test]), ("procgen", procgen_subsets)):
        one_step = sample_windows(subsets, p["eval_1step"], 1, k, rng)
        rollout = sample_windows(subsets, p["eval_rollout"], p["horizon"], k, rng)
        by_steps = {
            steps: evaluate_env(models, lam, one_step, rollout, steps, args.seed)
            for steps in sorted({p["denoise_steps"], *p["denoise_sweep"]})
        }
        results[env] = by_steps[p["denoise_steps"]]
        for steps in p["denoise_sweep"]:
            results.setdefault("denoise_sweep", {}).setdefault(str(steps), {})[env] = by_steps[steps]
        print(
            f"[{env}] 1-step PSNR "
            + ", ".join(f"{name} {r['psnr_1step']:.2f}" for name, r in results[env].items())
        )
    results["speed"] = sampling_speed(models["adaworld"], p["speed_repeats"], args.seed)

    summaries = {name: training_summary(Path(path)) for name, path in model_dirs.items()}
    results["meta"] = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
        **p,
        "lam": str(lam_dir),
        "model_dirs": {name: str(path) for name, path in model_dirs.items()},
        "training": summaries,
        "procgen_games": [s.name for s in procgen_subsets],
        "psnr": "pooled MSE over windows, uint8 [0, 255]",
        "jobs": args.jobs or p["jobs"],  # the trainings' processes actually used (the preset's when 0)
        "wall_minutes": (time.time() - start) / 60,
    }
    atomic_write_bytes(args.out / "results.json", json.dumps(results, indent=1).encode())
    table = markdown_table(results)
    atomic_write_bytes(args.out / "results.md", table.encode())
    plot_rollouts(results, args.out / "rollout_psnr.png")
    print(table)
    return results


def remeasure_speed(args: Args, p: dict) -> dict:
    """Replace the ``speed`` section of an earlier run's results with a measurement on the current code."""
    import subprocess

    path = args.out / "results.json"
    if not path.is_file():
        raise SystemExit(f"--speed-only needs an earlier run's {path}")
    results = _common.read_json(path, "results file")
    try:
        model_dir = results["meta"]["model_dirs"]["adaworld"]
    except (KeyError, TypeError):
        raise SystemExit(f"{path} names no scored AdaWorld model (meta.model_dirs.adaworld)") from None
    if args.adaworld_model and Path(args.adaworld_model).resolve() != Path(model_dir).resolve():
        raise SystemExit(
            f"{path} scored {model_dir}; --speed-only times that model (leave out --adaworld-model "
            f"{args.adaworld_model}, or run the whole benchmark for it)"
        )
    model = DiffusionWorldModel.from_pretrained(model_dir).eval()
    results["speed"] = sampling_speed(model, p["speed_repeats"], args.seed)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    results["meta"]["speed_remeasured_at"] = commit.strip() or "unknown"
    atomic_write_bytes(path, json.dumps(results, indent=1).encode())
    atomic_write_bytes(args.out / "results.md", markdown_table(results).encode())
    return results


def parse_args(argv: list[str] | None = None) -> Args:
    return _common.parse_dataclass_args(Args, __doc__, argv, choices={"preset": PRESETS})


if __name__ == "__main__":
    main(parse_args())
