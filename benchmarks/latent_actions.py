"""Latent-action benchmark: the four regularisers at equal budget and data, judged on held-out data.

    python -m benchmarks.latent_actions --preset cpu --seed 0 --out out/latent_actions

Trains a LAM per regulariser (``kl``, ``vq``, ``sparse``, ``none``) and per seed on the Procgen pretraining
games (training levels) plus RobosuitePush, with the same model size, data and number of training steps, then
reports on held-out data (Procgen test levels of the pretraining games, held-out push episodes):

- ``recon_psnr``: PSNR of the decoder's next frame given z = mu(f_t, f_t+1), pooled MSE on [0, 255];
- ``copy_psnr``: copying the last frame, the floor;
- ``shuffled_z_psnr``: the decoder given the z of a *different* transition of the same game; close to
  ``recon_psnr`` means z carries little, far below means z carries the action (or leaks the frame);
- ``probe_acc_same`` / ``probe_acc_cross``: a logistic-regression probe from mu to the true Procgen movement
  action (the 9 direction actions; chance about 0.11), tested on held-out transitions of the games it was
  trained on, or trained on one half of the games and tested on the other half (context invariance);
- ``probe_acc_within``: one probe per game (5-fold cross-validation within the game), averaged over games. A
  random-action Procgen step moves the agent by a few pixels among other moving things, and the same action
  looks different in every game, so the pooled probes sit near chance; this one asks only whether z tells the
  actions of one game apart. ``reference`` gives the same probe on the raw frame difference (half resolution),
  a measure of how much action is visible in one transition at all.

Writes ``results.json``, ``results.md`` and a PCA plot of each regulariser's latent actions.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaworld_gym.data.clips import ClipDataset
from adaworld_gym.data.collect import collect_procgen, collect_push
from adaworld_gym.data.episodes import atomic_write_bytes
from adaworld_gym.latent import plot_latents
from adaworld_gym.metrics import psnr_pooled
from adaworld_gym.models.latent_action import LatentActionModel
from adaworld_gym.sims.games import PRETRAIN_GAMES
from adaworld_gym.training.common import training_provenance
from adaworld_gym.training.lam import train_lam
from benchmarks import _common

REGULARIZERS = ("kl", "vq", "sparse", "none")
MOVE_ACTIONS = 9  # Procgen actions 0-8 are the 8 directions and no-op; 9-14 are game-specific keys
MOVE_NAMES = ("down-left", "left", "up-left", "down", "none", "up", "down-right", "right", "up-right")

PRESETS = {
    # 2 CPU cores: the `small` LAM, 1000 steps of batch 32 each (~12 min at one thread); two runs at a time.
    "cpu": dict(
        model="small",
        train_steps=1000,
        procgen_train_episodes=150,
        procgen_test_episodes=30,
        push_train_episodes=700,
        push_test_episodes=40,
        steps=100,
        push_steps=30,
        eval_per_subset=200,
    ),
    # Seconds: a check that the whole pipeline runs (tests), not a measurement.
    "smoke": dict(
        model="tiny",
        train_steps=3,
        procgen_train_episodes=2,
        procgen_test_episodes=2,
        push_train_episodes=2,
        push_test_episodes=2,
        steps=12,
        push_steps=3,
        eval_per_subset=6,
        push_workers=1,
    ),
    # One GPU: the `base` LAM.
    "full": dict(
        model="base",
        train_steps=20000,
        procgen_train_episodes=1000,
        procgen_test_episodes=100,
        push_train_episodes=5000,
        push_test_episodes=200,
        steps=200,
        push_steps=30,
        eval_per_subset=1000,
    ),
}


@dataclass
class Args:
    preset: str = "cpu"
    seed: int = 0
    seeds: int = 2  # training seeds per regulariser: seed, seed + 1, ...
    out: Path = Path("out/latent_actions")
    data: str = (
        ""  # episode root; "": data/, or OUT/data with --preset smoke (its tiny sets stay out of data/)
    )
    regularizers: str = ",".join(REGULARIZERS)  # comma list of LAM regularisers to train and compare
    jobs: int = 2  # training runs in parallel, one torch thread each
    # Trained LAM directories, comma-separated (e.g. the shipped one), evaluated on the same held-out sample.
    also: str = ""
    # Skip the frame-difference probe (a minutes-long sklearn fit that no model changes), e.g. with
    # --regularizers "" --also DIR to evaluate trained LAMs only.
    skip_reference: bool = False


def ensure_data(args: Args, p: dict) -> tuple[list[Path], Path, Path]:
    """Collect (or find, since collection resumes) the training and held-out data."""
    d = args.data
    try:
        collect_procgen(PRETRAIN_GAMES, p["procgen_train_episodes"], p["steps"], d / "procgen-train", seed=0)
        collect_procgen(
            PRETRAIN_GAMES, p["procgen_test_episodes"], p["steps"], d / "procgen-test", levels="test", seed=1
        )
        workers = p.get("push_workers", 2)
        collect_push(p["push_train_episodes"], d, steps=p["push_steps"], seed=0, workers=workers)
        collect_push(p["push_test_episodes"], d / "push-test", steps=p["push_steps"], seed=1, workers=workers)
    except ValueError as e:  # a set of the same name collected by hand with other settings
        if "collected with other settings" not in str(e):
            raise
        raise SystemExit(
            f"{e}\nThe benchmarks collect (or resume) their own sets under {d}: Procgen with --steps "
            f"{p['steps']}, training levels --seed 0, test levels --seed 1; push with --steps {p['push_steps']}, "
            "--seed 0 (data/push) and --seed 1 (push-test). Move the other set aside, or pass --data ROOT to "
            "keep the benchmark's sets elsewhere."
        ) from e
    return [d / "procgen-train", d / "push"], d / "procgen-test", d / "push-test" / "push"


def eval_windows(ds: ClipDataset, per_subset: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A fixed sample of held-out windows, the same number from every subset."""
    items = [ds.sample_from(s, rng) for s in range(len(ds.subsets)) for _ in range(per_subset)]
    return {
        "f_t": np.stack([it["history"][-1] for it in items]),
        "f_t1": np.stack([it["next"] for it in items]),
        "action": np.stack([it["action"] for it in items]),
        "subset": np.array([it["subset"] for it in items]),
    }


def linear_probe(**logistic: Any) -> Any:
    """Standardised features into a logistic regression (sklearn pipeline)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(**logistic))


def probe_accuracy(mu: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """A linear probe's test accuracy; NaN where the training half holds one action only (tiny data sets)."""
    if len(np.unique(y[train])) < 2 or not test.any():
        return float("nan")
    probe = linear_probe(max_iter=2000)
    probe.fit(mu[train], y[train])
    return float((probe.predict(mu[test]) == y[test]).mean())


def probe_accuracy_within(features: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> float:
    """Mean over groups of a per-group probe's 5-fold cross-validated accuracy."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    scores = []
    for g in np.unique(groups):
        x, t = features[groups == g], y[groups == g]
        folds = min(5, int(np.bincount(t).max()))
        if len(np.unique(t)) < 2 or folds < 2:
            continue
        probe = linear_probe(max_iter=1000, C=0.1)
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        scores.append(cross_val_score(probe, x, t, cv=cv).mean())
    return float(np.mean(scores)) if scores else float("nan")


def frame_difference_features(f_t: np.ndarray, f_t1: np.ndarray) -> np.ndarray:
    """f_t+1 - f_t at half resolution, flattened, in [-1, 1]."""
    diff = f_t1[:, ::2, ::2].astype(np.float32) - f_t[:, ::2, ::2].astype(np.float32)
    return diff.reshape(len(diff), -1) / 255.0


def shuffled_within_groups(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation that maps every index to another index of the same group."""
    perm = np.arange(len(groups))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) > 1:
            # A random cycle through the group: order[i] -> order[i - 1]. (Assigning the rolled permutation
            # to idx in index order instead left about one index per group mapped to itself, whose own z then
            # counted towards shuffled_z_psnr.)
            order = idx[rng.permutation(len(idx))]
            perm[order] = np.roll(order, 1)
    return perm


# The scalar metrics of evaluate(), averaged over seeds in results.json.
SCALARS = (
    "recon_psnr",
    "copy_psnr",
    "shuffled_z_psnr",
    "probe_acc_same",
    "probe_acc_cross",
    "probe_acc_within",
    "push_recon_psnr",
    "push_copy_psnr",
)


def evaluate(
    model: LatentActionModel, procgen: dict, push: dict, seed: int, game_names: list[str]
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    mu = model.encode(procgen["f_t"], procgen["f_t1"])
    recon = model.decode(procgen["f_t"], mu)
    out["recon_psnr"] = psnr_pooled(recon, procgen["f_t1"])
    out["copy_psnr"] = psnr_pooled(procgen["f_t"], procgen["f_t1"])
    out["gain_by_game"] = {  # recon minus copy-last PSNR per held-out game, dB
        name: psnr_pooled(recon[g], procgen["f_t1"][g]) - psnr_pooled(procgen["f_t"][g], procgen["f_t1"][g])
        for name, g in ((n, procgen["subset"] == i) for i, n in enumerate(game_names))
    }
    perm = shuffled_within_groups(procgen["subset"], rng)
    out["shuffled_z_psnr"] = psnr_pooled(model.decode(procgen["f_t"], mu[perm]), procgen["f_t1"])

    # Probes on movement actions only.
    move = procgen["action"] < MOVE_ACTIONS
    mu_m, y, games = mu[move], procgen["action"][move], procgen["subset"][move]
    halves = np.isin(games, np.unique(games)[::2])  # alternate games into two halves
    cross = [probe_accuracy(mu_m, y, halves, ~halves), probe_accuracy(mu_m, y, ~halves, halves)]
    split = rng.random(len(y)) < 0.5
    same = [
        probe_accuracy(mu_m, y, halves & split, halves & ~split),
        probe_accuracy(mu_m, y, ~halves & split, ~halves & ~split),
    ]
    out["probe_acc_same"] = float(np.mean(same))
    out["probe_acc_cross"] = float(np.mean(cross))
    out["probe_acc_within"] = probe_accuracy_within(mu_m, y, games, seed)

    mu_push = model.encode(push["f_t"], push["f_t1"])
    out["push_recon_psnr"] = psnr_pooled(model.decode(push["f_t"], mu_push), push["f_t1"])
    out["push_copy_psnr"] = psnr_pooled(push["f_t"], push["f_t1"])
    return out


def _train_one(job: tuple) -> Path:
    """One training run in its own process (one torch thread, so parallel runs do not fight)."""
    train_dirs, run_dir, model, reg, steps, seed = job
    summary = run_dir / "summary.json"
    if summary.exists():
        done = json.loads(summary.read_text())
        # finished earlier on the same data: a rerun only evaluates (other data: train_lam refuses the run dir)
        if done.get("steps") == steps and done.get("provenance") == training_provenance(train_dirs):
            return run_dir / "model"
    torch.set_num_threads(1)
    return train_lam(
        train_dirs, run_dir, preset=model, regularizer=reg, max_steps=steps, seed=seed, progress=False
    )


def markdown_table(
    results: dict, meta: dict, also: list[dict] | None = None, reference: dict | None = None
) -> str:
    rows = [
        "| regulariser | recon PSNR | copy-last PSNR | recon - copy | shuffled-z PSNR | probe acc (same games) "
        "| probe acc (other games) | probe acc (within a game) | push recon PSNR | push copy PSNR |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict, key: str, fmt: str, sd: dict | None) -> str:
        return f"{r[key]:{fmt}}" + (f" ± {sd[key]:{fmt}}" if sd else "")

    def row(name: str, r: dict, sd: dict | None) -> str:
        return (
            f"| {name} | {cell(r, 'recon_psnr', '.2f', sd)} | {r['copy_psnr']:.2f} "
            f"| {r['recon_psnr'] - r['copy_psnr']:+.2f} | {r['shuffled_z_psnr']:.2f} "
            f"| {cell(r, 'probe_acc_same', '.3f', sd)} | {cell(r, 'probe_acc_cross', '.3f', sd)} "
            f"| {cell(r, 'probe_acc_within', '.3f', sd)} | {r['push_recon_psnr']:.2f} | {r['push_copy_psnr']:.2f} |"
        )

    columns = [(reg, r, r["std"]) for reg, r in results.items()]
    columns += [(f"`{a['path']}`", a, None) for a in also or []]
    rows += [row(name, r, sd) for name, r, sd in columns]
    rows.append("")
    if results:
        rows.append(
            f"Mean ± std over {meta['seeds']} seeds; `{meta['preset']}` preset ({meta['model']} LAM, "
            f"{meta['train_steps']} training steps of batch 32 each)."
        )
    rows.append("PSNR from pooled MSE on held-out data; probe chance = 1/9.")
    if reference:
        rows.append(
            f"Reference: the within-game probe on the frame difference itself (no LAM) scores "
            f"{reference['diff_probe_acc_within']:.3f}."
        )
    games = list(columns[0][1]["gain_by_game"]) if columns else []
    rows += ["", "Recon minus copy-last PSNR (dB) per held-out game:", ""]
    rows.append("| game | " + " | ".join(name for name, _, _ in columns) + " |")
    rows.append("|---" * (len(columns) + 1) + "|")
    for game in games:
        rows.append(
            f"| {game} | " + " | ".join(f"{r['gain_by_game'][game]:+.2f}" for _, r, _ in columns) + " |"
        )
    return "\n".join(rows) + "\n"


def main(args: Args) -> dict:
    if args.preset not in PRESETS:
        raise SystemExit(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[args.preset]
    regs = [r.strip() for r in args.regularizers.split(",") if r.strip()]
    bad = [r for r in regs if r not in REGULARIZERS]
    if bad:
        raise SystemExit(f"unknown regulariser(s) {bad}; choose from {REGULARIZERS}")
    args.data = _common.resolve_data(args)
    start = time.time()
    _common.make_out_dir(args.out)
    train_dirs, procgen_test, push_test = ensure_data(args, p)

    rng = np.random.default_rng(args.seed + 10_000)  # evaluation sample, independent of training seeds
    procgen = eval_windows(ClipDataset(procgen_test, with_actions=True), p["eval_per_subset"], rng)
    push = eval_windows(ClipDataset(push_test, with_actions=True), p["eval_per_subset"] * 4, rng)
    game_names = ClipDataset(procgen_test).subset_names

    runs = [(reg, s) for s in range(args.seed, args.seed + args.seeds) for reg in regs]
    jobs = [
        (train_dirs, args.out / "runs" / f"{reg}_seed{s}", p["model"], reg, p["train_steps"], s)
        for reg, s in runs
    ]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        model_dirs = list(pool.map(_train_one, jobs))

    per_seed: dict[str, list[dict]] = {r: [] for r in regs}
    for (reg, s), model_dir in zip(runs, model_dirs, strict=True):
        model = LatentActionModel.from_pretrained(model_dir).eval()
        metrics = evaluate(model, procgen, push, seed=s, game_names=game_names)
        per_seed[reg].append(metrics)
        print(f"[{reg} seed {s}] " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k in SCALARS))
        if s == args.seed:
            move = procgen["action"] < MOVE_ACTIONS
            plot_latents(
                model.encode(procgen["f_t"][move], procgen["f_t1"][move]),
                procgen["action"][move],
                procgen["subset"][move],
                args.out / f"latents_{reg}.png",
                action_names=MOVE_NAMES,
                group_names=game_names,
                title=f"{reg}:",
            )

    results = {}
    also = []
    for path in filter(None, (a.strip() for a in args.also.split(","))):
        extra = evaluate(
            LatentActionModel.from_pretrained(path).eval(),
            procgen,
            push,
            seed=args.seed,
            game_names=game_names,
        )
        print(f"[{path}] " + ", ".join(f"{k}={v:.3f}" for k, v in extra.items() if k in SCALARS))
        also.append({"path": path, **extra})
    for reg, runs in per_seed.items():
        results[reg] = {k: float(np.mean([r[k] for r in runs])) for k in SCALARS}
        results[reg]["std"] = {  # sample standard deviation over seeds (ddof=1)
            k: float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0 for k in SCALARS
        }
        results[reg]["gain_by_game"] = {
            g: float(np.mean([r["gain_by_game"][g] for r in runs])) for g in runs[0]["gain_by_game"]
        }
        results[reg]["per_seed"] = runs
    reference = None
    if not args.skip_reference:
        move = procgen["action"] < MOVE_ACTIONS
        reference = {
            "diff_probe_acc_within": probe_accuracy_within(
                frame_difference_features(procgen["f_t"][move], procgen["f_t1"][move]),
                procgen["action"][move],
                procgen["subset"][move],
                args.seed,
            )
        }
        print(
            f"[reference] within-game probe on the frame difference: {reference['diff_probe_acc_within']:.3f}"
        )
    meta = {
        **asdict(args),
        **p,
        "out": str(args.out),
        "data": str(args.data),
        "wall_minutes": (time.time() - start) / 60,
    }
    payload = {**results, "meta": meta}
    if reference is not None:
        payload["reference"] = reference
    if also:
        payload["also"] = also
    atomic_write_bytes(args.out / "results.json", json.dumps(payload, indent=1).encode())
    table = markdown_table(results, meta, payload.get("also"), reference)
    atomic_write_bytes(args.out / "results.md", table.encode())
    print(table)
    return payload


def parse_args(argv: list[str] | None = None) -> Args:
    return _common.parse_dataclass_args(Args, __doc__, argv, choices={"preset": PRESETS})


if __name__ == "__main__":
    main(parse_args())
