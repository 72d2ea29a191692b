"""Adaptation benchmark (AdaWorld Table 2 at laptop scale): how fast pretrained world models learn a new action space.

    python -m benchmarks.adaptation --preset cpu --seed 0 --out out/adaptation \\
        --adaworld WM_DIR --adaworld-lam LAM_DIR --vq WM_DIR --vq-lam LAM_DIR --action-agnostic WM_DIR

Environments: the four Procgen games held out of pretraining (``ADAPTATION_GAMES``; episodes in
``DATA/procgen-adapt/procgen-<game>``, from ``adaworld collect procgen --games adaptation --out DATA/procgen-adapt``:
100 random-play episodes of up to 200 steps per game, the last ``eval_episodes`` held out) with an action codebook, and
RobosuitePush (``DATA/push``, held out ``DATA/push-test/push``) with an action MLP. Pretrained models, each
adapted with the same data, steps and seeds (``adaworld_gym.training.adapt``):

- ``adaworld``: the kl-LAM-conditioned world model; codebook rows start at each action's mean LAM ``mu``,
  the MLP is pre-fit on (action, mu);
- ``adaworld_motion``: the same pretrained model with adapters that also see the motion context (the LAM's ``mu``
  of the last history transition; ``adaworld adapt --motion``), fitted on the same labelled set;
- ``vq``: the same with a VQ LAM (and a world model trained on its codes);
- ``action_agnostic``: the twin, made action-conditioned (zero-initialised ``z`` weights) with a random adapter.

Metrics: PSNR (pooled MSE over the held-out windows, on [0, 255]) and SSIM of 1-step predictions (the true
history, ``z`` = adapter(true action)) after each of ``eval_at`` finetuning steps, all within one finetuning run;
the same held-out windows for every model and seed. Without any labels, ``options``: k-means centres of the
labelled set's ``mu`` as latent options (``LatentOptions``), each held-out transition given the centre nearest to
its own ``mu``, on the pretrained model (0 steps); ``copy_last`` (repeat the last frame) is the floor.

A model whose directories are not given is skipped, and ``skipped`` says why (no number is made up).

Presets:

- ``full``: the paper's budget: 100 samples per action / 100 trajectories, 800 steps of 32, 300 held-out windows.
- ``cpu``: 2 CPU cores, <= 90 minutes for 3 models x 5 envs x 2 seeds (30 runs, 2 side by side at one thread;
  ``adaworld_motion`` adds 10 runs, ~21 minutes):
  batch 4 instead of 32 (8x fewer samples), 64 held-out windows, everything else as ``full``. Measured on this
  machine with both cores busy with two other trainings, the ``small`` world model trains at 6.7 samples/s (batch 4,
  0.60 s/step) and predicts 25 / 8 frames/s at 1 / 3 denoising steps (batch 32); on free cores ~2x that (~15
  samples/s, as in ``training/world_model.py``). Per run: 800 x 4 / 15 = 213 s of training + 6 x 64 predictions
  at 3 steps (~25 s) + labelling, k-means and data (~15 s): ~250 s, so 15 runs per core take ~63 minutes
  (50.9 min measured on a 2-core Xeon with AMX). A CPU without native bf16 trains in fp32 and takes longer: ~9.4
  min a run on an AVX2-only AMD EPYC, ~144 minutes for the 30 (README, "Adapting to a real action space").
- ``smoke``: tiny random models and tiny data (one freshly collected game, synthetic push-like episodes),
  finetune steps (0, 2): for tests, not a measurement.

``results["average"]`` holds each model's PSNR averaged over the envs (the issue's bars are stated on it) and
the margins ``adaworld_minus_<model>_at_<steps>``; ``results["run_minutes"]`` sums the runs' own times (a run
resumed from the checkpoint of a killed session counts its last session; ``results["resumed_runs"]`` counts them).

Writes ``results.json`` and ``results.md`` after every run (each finished run also leaves
``runs/<env>/<model>/seed<s>/result.json``, so an interrupted benchmark resumes), and ``psnr_vs_steps.png`` at the end.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaworld_gym.data.episodes import EpisodeStore, atomic_write_bytes
from adaworld_gym.sims.games import ADAPTATION_GAMES
from benchmarks import _common

MODELS = ("adaworld", "adaworld_motion", "vq", "action_agnostic")
PAPER_STEPS = (0, 100, 200, 400, 800)

# The paper's protocol (one GPU).
FULL: dict[str, Any] = dict(
    samples_per_action=100,
    trajectories=100,
    eval_at=PAPER_STEPS,
    batch_size=32,
    lr=5e-4,
    eval_samples=300,
    eval_episodes=20,
    denoise_steps=3,
    mlp_fit_steps=3000,
    options_k=8,
    seeds=2,
    jobs=1,
)
PRESETS: dict[str, dict[str, Any]] = {
    "full": FULL,
    # 2 cores, <= 90 min: batch 4 instead of 32, 64 held-out windows (measurements in the module docstring).
    "cpu": {**FULL, "batch_size": 4, "eval_samples": 64, "jobs": 2},
    # Tests: tiny random models, one game, a handful of windows.
    "smoke": {
        **FULL,
        "samples_per_action": 3,
        "trajectories": 2,
        "eval_at": (0, 2),
        "batch_size": 2,
        "eval_samples": 4,
        "eval_episodes": 1,
        "denoise_steps": 1,
        "mlp_fit_steps": 20,
        "options_k": 2,
        "games": 1,
    },
}


@dataclass
class Args:
    preset: str = "cpu"
    seed: int = 0  # seeds are seed, seed + 1, ...
    out: Path = Path("out/adaptation")
    data: Path = Path("data")
    adaworld: str = ""  # pretrained kl-LAM-conditioned world model (smoke: tiny random)
    adaworld_lam: str = ""  # its LAM
    vq: str = ""  # pretrained world model trained on VQ-LAM latents
    vq_lam: str = ""  # its (vq) LAM
    action_agnostic: str = ""  # pretrained action-agnostic twin
    models: str = ",".join(MODELS)  # run only these (the others are recorded as skipped)
    envs: str = ""  # comma list of env keys (procgen-<game>, push); empty: all
    seeds: int = 0  # 0: the preset's
    jobs: int = 0  # runs side by side; 0: the preset's
    threads: int = 1  # torch threads per run


def env_keys(p: dict[str, Any]) -> list[str]:
    games = ADAPTATION_GAMES[: p.get("games", len(ADAPTATION_GAMES))]
    return [*(f"procgen-{g}" for g in games), "push"]


# ------------------------------------------------------------------------------------------------------ data
def env_data(data: Path, env: str) -> tuple[Path, Path | None]:
    """(training episodes, held-out episodes or None = the last episodes of the training directory)."""
    if env == "push":
        return data / "push", data / "push-test" / "push"
    return data / "procgen-adapt" / env, None


def check_data(data: Path, envs: list[str]) -> None:
    for env in envs:
        for path in env_data(data, env):
            if path is not None and not (path / "manifest.json").is_file():
                hint = (
                    "adaworld collect push --episodes 700 --out DATA; ... --episodes 40 --seed 1 --out DATA/push-test"
                    if env == "push"
                    else "adaworld collect procgen --games adaptation --out DATA/procgen-adapt"
                )
                raise SystemExit(f"no episodes at {path}: collect them first ({hint})")


def smoke_data(data: Path, p: dict[str, Any]) -> None:
    """Tiny fresh Procgen episodes of the adaptation games and synthetic push-like episodes."""
    from adaworld_gym.data.collect import collect_procgen
    from benchmarks.world_model import synthetic_push_like

    games = ADAPTATION_GAMES[: p["games"]]
    collect_procgen(games, 3, 20, data / "procgen-adapt", seed=0)
    synthetic_push_like(data, 3, 6, seed=0)
    synthetic_push_like(data / "push-test", 2, 6, seed=1)


def split_sets(job: dict[str, Any]) -> tuple[Any, Any]:
    """The labelled training windows (seeded) and the held-out windows (the same for every model and seed)."""
    from adaworld_gym.training.adapt import labelled_windows

    p, seed = job["p"], job["seed"]
    train_dir, held_dir = (Path(d) if d else None for d in job["data"])
    store = EpisodeStore(train_dir)
    names = store.names()
    if held_dir is None:  # hold out the last episodes of the directory
        names, held_names = names[: -p["eval_episodes"]], names[-p["eval_episodes"] :]
        held_store = store
    else:
        held_store = EpisodeStore(held_dir)
        held_names = held_store.names()
    held = labelled_windows([held_store.read(n) for n in held_names], samples=p["eval_samples"], seed=10_000)
    if job["env"] == "push":  # read only the chosen trajectories
        chosen = np.random.default_rng(seed).choice(len(names), p["trajectories"], replace=False)
        train = labelled_windows([store.read(names[i]) for i in sorted(chosen)], trajectories=len(chosen))
    else:
        train = labelled_windows(
            [store.read(n) for n in names], samples_per_action=p["samples_per_action"], seed=seed
        )
    return train, held


# ------------------------------------------------------------------------------------------------------ runs
def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Adapt one pretrained model to one env with one seed; a top-level function for worker processes."""
    from adaworld_gym.training.adapt import AdaptConfig, adapt
    from adaworld_gym.training.checkpoint import list_checkpoints

    torch.set_num_threads(job["threads"])
    run_dir = Path(job["run_dir"])
    done = run_dir / "result.json"
    provenance = run_provenance(job)
    earlier = earlier_run(run_dir, provenance)
    if earlier is not None:
        return earlier
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "provenance.json", json.dumps(provenance, indent=1).encode())
    start = time.time()
    p = job["p"]
    train, held = split_sets(job)
    options = None
    motion = job["name"] == "adaworld_motion"
    if job["lam"] is not None and not motion:  # options do not depend on the adapter: scored once
        options = evaluate_options(job, train, held)
    cfg = AdaptConfig(
        max_steps=max(p["eval_at"]),
        batch_size=p["batch_size"],
        lr=p["lr"],
        samples_per_action=p["samples_per_action"],
        trajectories=p["trajectories"],
        mlp_fit_steps=p["mlp_fit_steps"],
        seed=job["seed"],
        eval_at=list(p["eval_at"]),
        eval_denoise_steps=p["denoise_steps"],
        keep_checkpoints=False,
        motion=motion,
    )
    # adapt() resumes from a checkpoint of a killed session; "minutes" then times only this last session.
    resumed = bool(list_checkpoints(run_dir / "checkpoints"))
    adapt(job["model"], job["lam"], train, run_dir, cfg, eval_data=held, progress=job["progress"])
    summary = json.loads((run_dir / "summary.json").read_text())
    evals = {str(e["step"]): e for e in summary["evals"]}
    result = {
        "steps": {s: {"psnr": e["psnr_1step"], "ssim": e["ssim_1step"]} for s, e in evals.items()},
        "copy_last": evals[str(p["eval_at"][0])]["psnr_copy_last"],
        "options": options,
        "labelled_transitions": summary["labelled_transitions"],
        "held_out_windows": len(held),
        "samples_per_s": summary["samples_per_s"],
        "minutes": (time.time() - start) / 60,
        "resumed": resumed,
        "provenance": provenance,
    }
    atomic_write_bytes(done, json.dumps(result, indent=1).encode())
    return result


# What aggregate() and the progress line read from a finished run's result.json.
RESULT_KEYS = ("steps", "copy_last", "options", "provenance")


def earlier_run(run_dir: Path, provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The finished result in ``run_dir`` if it was computed under ``provenance``, None if there is none.

    Raises ValueError (naming the file) for a record of another run or one that lacks what a result holds, and
    for checkpoints of another run: never taken over, never trained over; exits naming an unreadable record.
    """
    done = run_dir / "result.json"
    if done.is_file():
        earlier = _common.read_json(done, "run record")
        if not isinstance(earlier, dict) or earlier.get("provenance") != provenance:
            raise ValueError(
                f"{done} was computed for another model, LAM, data or protocol (or before session 19, when runs "
                "began to record them): use a new --out, or delete that run to redo it"
            )
        missing = [key for key in RESULT_KEYS if key not in earlier]
        steps = earlier.get("steps")
        if missing or not isinstance(steps, dict) or not steps:
            raise ValueError(f"{done} is not a finished run's record (lacks {missing or 'steps'}): delete it")
        return earlier
    if (run_dir / "checkpoints").is_dir() and (run_dir / "provenance.json").is_file():
        if _common.read_json(run_dir / "provenance.json", "run provenance") != provenance:
            raise ValueError(f"{run_dir} holds checkpoints of another run: use a new --out, or delete it")
    return None


def run_provenance(job: dict[str, Any]) -> dict[str, Any]:
    """What a run's result depends on: digests of the world model and LAM weights, the data directories and
    their episodes, env, model name, seed, preset settings and adapt's own defaults. A finished run is taken
    over only when all of them match (a recollected data set or another adapt recipe reruns it)."""
    from adaworld_gym.data.clips import episodes_digest
    from adaworld_gym.models.loading import directory_digest
    from adaworld_gym.training.adapt import AdaptConfig

    return json.loads(
        json.dumps(
            {
                "model": directory_digest(job["model"]),
                "lam": directory_digest(job["lam"]) if job["lam"] else None,
                "data": job["data"],
                "episodes": [episodes_digest(d) if d else None for d in job["data"]],
                "env": job["env"],
                "name": job["name"],
                "seed": job["seed"],
                "settings": job["p"],
                "adapt_defaults": asdict(AdaptConfig()),
            }
        )
    )


def evaluate_options(job: dict[str, Any], train: Any, held: Any) -> dict[str, float]:
    """Label-free control: k-means options of the labelled set's mu, the nearest one per held-out transition."""
    from adaworld_gym.latent import kmeans
    from adaworld_gym.models.adapters import LatentOptions
    from adaworld_gym.training.adapt import EVAL_BATCH, evaluate_adapted, transition_latents
    from adaworld_gym.training.world_model import fixed_windows, label_actions, load_lam, load_world_model

    p = job["p"]
    lam, model = load_lam(job["lam"]), load_world_model(job["model"])
    k = model.config.num_history
    centres = kmeans(transition_latents(lam, train), p["options_k"], seed=job["seed"])
    batches = fixed_windows(replace(held, history=k), k, EVAL_BATCH, len(held), model.device)
    for batch in batches:
        mu = label_actions(lam, batch["history"][:, -1], batch["next"])
        batch["action"] = torch.cdist(mu, torch.from_numpy(centres)).argmin(dim=1)
    metrics = evaluate_adapted(model, LatentOptions(centres), batches, p["denoise_steps"], job["seed"])
    return {"psnr": metrics["psnr_1step"], "ssim": metrics["ssim_1step"], "k": p["options_k"]}


# --------------------------------------------------------------------------------------------------- models
def pretrained_models(args: Args, tmp: Path) -> tuple[dict[str, tuple[str, str | None]], dict[str, str]]:
    """(world model dir, LAM dir or None) per model to run, and a reason per model that is skipped."""
    from adaworld_gym.training.world_model import load_lam, load_world_model

    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    given = {
        "adaworld": (args.adaworld, args.adaworld_lam),
        "adaworld_motion": (args.adaworld, args.adaworld_lam),
        "vq": (args.vq, args.vq_lam),
        "action_agnostic": (args.action_agnostic, ""),
    }
    if args.preset == "smoke":
        given = {name: smoke_model(name, tmp, wm, lam, args.seed) for name, (wm, lam) in given.items()}
        given["adaworld_motion"] = given["adaworld"]  # the same pretrained model, another adapter
    models, skipped = {}, {}
    for name in MODELS:
        wm, lam = given[name]
        flag = "--adaworld" if name == "adaworld_motion" else f"--{name.replace('_', '-')}"
        if name not in chosen:
            skipped[name] = "not selected (--models)"
        elif not wm:
            skipped[name] = f"no pretrained model: {flag} not given"
        elif name != "action_agnostic" and not lam:
            raise SystemExit(f"{flag} needs its LAM: pass {flag}-lam DIR")
        else:
            agnostic = load_world_model(wm).config.action_agnostic
            if agnostic != (name == "action_agnostic"):
                kind = "an action-agnostic" if name == "action_agnostic" else "a LAM-conditioned"
                raise SystemExit(f"{flag} {wm}: expected {kind} world model")
            if lam and (load_lam(lam).config.regularizer == "vq") != (name == "vq"):
                raise SystemExit(f"{flag}-lam {lam}: expected {'a vq' if name == 'vq' else 'a kl'} LAM")
            models[name] = (wm, lam or None)
    return models, skipped


def smoke_model(name: str, tmp: Path, wm: str, lam: str, seed: int) -> tuple[str, str]:
    """A tiny random pretrained model (and LAM) for ``name`` unless one was given."""
    from adaworld_gym.models.bundle import tiny_random_bundle
    from adaworld_gym.models.latent_action import LatentActionModel, lam_preset

    if wm:
        return wm, lam
    bundle = tiny_random_bundle("latent", seed=seed, action_agnostic=name == "action_agnostic")
    bundle.world_model.save_pretrained(tmp / name / "wm")
    if name == "action_agnostic":
        return str(tmp / name / "wm"), ""
    torch.manual_seed(seed)
    regularizer = "vq" if name == "vq" else "kl"
    LatentActionModel(**{**lam_preset("tiny"), "regularizer": regularizer}).save_pretrained(
        tmp / name / "lam"
    )
    return str(tmp / name / "wm"), str(tmp / name / "lam")


# -------------------------------------------------------------------------------------------------- results
def _stats(values: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("psnr", "ssim"):
        x = np.array([v[key] for v in values], np.float64)
        out[key] = float(x.mean())
        out[f"{key}_std"] = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    out["per_seed"] = values
    return out


def aggregate(
    runs: dict[tuple[str, str, int], dict[str, Any]],
    envs: list[str],
    seeds: list[int],
    skipped: dict[str, str],
) -> dict[str, Any]:
    """Means and std over seeds: ``results[env][model][steps]``, ``results["options"][env][model]``, floors."""
    results: dict[str, Any] = {"options": {}, "copy_last": {}}
    for env in envs:
        results[env], results["options"][env] = {}, {}
        for name in MODELS:
            done = [runs[(env, name, s)] for s in seeds if (env, name, s) in runs]
            if name in skipped or not done:
                results[env][name] = results["options"][env][name] = None
                continue
            steps = done[0]["steps"]
            results[env][name] = {
                step: {
                    **_stats([r["steps"][step] for r in done]),
                    "seeds": [s for s in seeds if (env, name, s) in runs],
                }
                for step in steps
            }
            opts = [r["options"] for r in done if r["options"] is not None]
            results["options"][env][name] = {**_stats(opts), "k": opts[0]["k"]} if opts else None
            results["copy_last"][env] = done[0]["copy_last"]
    results["average"] = average_over_envs(results, envs)
    results["run_minutes"] = float(sum(r.get("minutes", 0.0) for r in runs.values()))
    results["resumed_runs"] = sum(bool(r.get("resumed")) for r in runs.values())
    return results


def average_over_envs(results: dict[str, Any], envs: list[str]) -> dict[str, Any]:
    """PSNR per model and step averaged over envs (what the bars are judged on), and the bar margins.

    A model missing from any env gets None, so a partial run never reads as an average.
    """
    mean: dict[str, Any] = {}
    for name in MODELS:
        per_env = [results[env][name] for env in envs]
        if any(r is None for r in per_env):
            mean[name] = None
            continue
        steps = [s for s in per_env[0] if all(s in r for r in per_env)]
        mean[name] = {s: float(np.mean([r[s]["psnr"] for r in per_env])) for s in steps}
    margins: dict[str, float | None] = {}
    for lead in ("adaworld", "adaworld_motion"):
        for other, step in (("action_agnostic", "800"), ("vq", "800"), ("action_agnostic", "0")):
            a, b = mean.get(lead), mean.get(other)
            ok = a is not None and b is not None and step in a and step in b
            margins[f"{lead}_minus_{other}_at_{step}"] = a[step] - b[step] if ok else None
    return {"psnr": mean, "margins": margins}


def markdown_table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    steps = [str(s) for s in meta["eval_at"]]
    rows = []
    for env in meta["envs"]:
        rows += [
            f"### {env}",
            "",
            "| model | " + " | ".join(f"PSNR@{s}" for s in steps) + f" | SSIM@{steps[-1]} | options@0 PSNR |",
            "|---|" + "---|" * (len(steps) + 2),
        ]
        for name in MODELS:
            r = results[env][name]
            if r is None:
                rows.append(
                    f"| {name} | "
                    + " | ".join("—" for _ in steps)
                    + f" | — | — (skipped: {results['skipped'][name] or 'not run'}) |"
                )
                continue
            cells = [f"{r[s]['psnr']:.2f} ± {r[s]['psnr_std']:.2f}" if s in r else "—" for s in steps]
            opt = results["options"][env][name]
            opt_cell = f"{opt['psnr']:.2f} ± {opt['psnr_std']:.2f}" if opt else "—"
            ssim = f"{r[steps[-1]]['ssim']:.3f}" if steps[-1] in r else "—"
            rows.append(f"| {name} | " + " | ".join(cells) + f" | {ssim} | {opt_cell} |")
        floor = results["copy_last"].get(env)
        if floor is not None:
            rows.append(f"| copy_last | {floor:.2f} |" + " |" * (len(steps) + 1))
        rows.append("")
    avg = results.get("average")
    if avg and any(v is not None for v in avg["psnr"].values()):
        rows += [
            "### average over envs",
            "",
            "| model | " + " | ".join(f"PSNR@{s}" for s in steps) + " |",
            "|---|" + "---|" * len(steps),
        ]
        for name, r in avg["psnr"].items():
            if r is not None:
                rows.append(
                    f"| {name} | " + " | ".join(f"{r[s]:.2f}" if s in r else "—" for s in steps) + " |"
                )
        margins = [f"{k.replace('_', ' ')}: {v:+.2f} dB" for k, v in avg["margins"].items() if v is not None]
        rows += ["", "; ".join(margins), ""] if margins else [""]
    rows.append(
        f"`{meta['preset']}` preset, seeds {meta['seeds']}: mean ± std over seeds of 1-step PSNR (dB, pooled MSE on "
        f"[0, 255]) on {meta['eval_samples']} held-out windows per env after each number of finetuning steps "
        f"(batch {meta['batch_size']}, adapter lr {meta['lr']}, pretrained weights at a tenth); labelled set: "
        f"{meta['samples_per_action']} samples per action (Procgen) / {meta['trajectories']} trajectories (push); "
        f"options: k-means with k={meta['options_k']} of the labelled set's mu, nearest centre to each held-out "
        f"mu, no finetuning; {meta['denoise_steps']} denoising steps; {meta['wall_minutes']:.1f} min of wall time in this "
        f"invocation, {results.get('run_minutes', 0.0):.1f} min summed over the runs' own times ({meta['jobs']} side by side"
        + (
            f"; {results['resumed_runs']} run(s) resumed from a checkpoint count only their last session)."
            if results.get("resumed_runs")
            else ")."
        )
    )
    return "\n".join(rows) + "\n"


def plot_psnr(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = results["meta"]["envs"]
    fig, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for i, name in enumerate(MODELS):
            r = results[env][name]
            if r is None:
                continue
            steps = sorted(r, key=int)
            x = [int(s) for s in steps]
            y, err = np.array([r[s]["psnr"] for s in steps]), np.array([r[s]["psnr_std"] for s in steps])
            ax.plot(x, y, marker="o", markersize=3, label=name, color=f"C{i}")
            ax.fill_between(x, y - err, y + err, alpha=0.2, color=f"C{i}")
            opt = results["options"][env][name]
            if opt is not None:
                ax.plot(
                    [0], [opt["psnr"]], marker="x", color=f"C{i}", linestyle="none", label=f"{name} options"
                )
        floor = results["copy_last"].get(env)
        if floor is not None:
            ax.axhline(floor, color="gray", linestyle=":", label="copy_last")
        ax.set(title=env, xlabel="finetuning steps", ylabel="1-step PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------ main
def main(args: Args) -> dict[str, Any]:
    import tempfile

    if args.preset not in PRESETS:
        raise SystemExit(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    p = dict(PRESETS[args.preset])
    envs = env_keys(p)
    if args.envs:
        chosen = [e.strip() for e in args.envs.split(",") if e.strip()]
        unknown = sorted(set(chosen) - set(envs))
        if unknown:
            raise SystemExit(f"unknown env(s) {', '.join(unknown)}; choose from {', '.join(envs)}")
        envs = [e for e in envs if e in chosen]
    seeds = [args.seed + i for i in range(args.seeds or p["seeds"])]
    jobs = args.jobs or p["jobs"]
    torch.set_num_threads(args.threads)
    start = time.time()
    args.out = Path(args.out)
    _common.make_out_dir(args.out)
    data = args.out / "data" if args.preset == "smoke" else Path(args.data)

    with tempfile.TemporaryDirectory(prefix="adaptation_") as tmp:
        models, skipped = pretrained_models(args, Path(tmp))
        if args.preset == "smoke":
            smoke_data(data, p)
        check_data(data, envs)
        todo = [
            dict(
                env=env,
                name=name,
                seed=seed,
                model=wm,
                lam=lam,
                p=p,
                data=[str(d) if d else "" for d in env_data(data, env)],
                run_dir=str(args.out / "runs" / env / name / f"seed{seed}"),
                threads=args.threads,
                progress=jobs == 1,
            )
            for env in envs
            for name, (wm, lam) in models.items()
            for seed in seeds
        ]
        # Every run directory's record is checked before any run starts: a stale or unreadable one stops the
        # benchmark at once (in worker processes it would surface only after the other runs had finished).
        try:
            for job in todo:
                earlier_run(Path(job["run_dir"]), run_provenance(job))
        except ValueError as e:  # its message says what differs and what to do
            raise SystemExit(str(e)) from None
        # A results file of other envs, seeds or models would be replaced by this run's (the runs stay in runs/).
        if (args.out / "results.json").is_file():
            was = _common.read_json(args.out / "results.json", "results file").get("meta", {})
            then = {
                "envs": was.get("envs"),
                "seeds": was.get("seeds"),
                "models": sorted(was.get("pretrained", {})),
            }
            now = {"envs": envs, "seeds": seeds, "models": sorted(models)}
            changed = [k for k in now if then[k] != now[k]]
            if changed:
                _common.supersede(args.out, f"its results cover other {' and '.join(changed)}")
        runs: dict[tuple[str, str, int], dict[str, Any]] = {}

        def snapshot(complete: bool) -> dict[str, Any]:
            results = aggregate(runs, envs, seeds, skipped)
            results["skipped"] = {name: skipped.get(name) for name in MODELS}
            results["runs"] = {f"{e}/{m}/seed{s}": r for (e, m, s), r in sorted(runs.items())}
            results["meta"] = {
                **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
                **p,
                "eval_at": list(p["eval_at"]),
                "jobs": jobs,
                "envs": envs,
                "seeds": seeds,
                "pretrained": {name: {"world_model": wm, "lam": lam} for name, (wm, lam) in models.items()},
                "psnr": "pooled MSE over held-out windows, uint8 [0, 255]",
                "cpu_count": os.cpu_count(),
                "complete": complete,
                "wall_minutes": (time.time() - start) / 60,
            }
            return results

        def finished(job: dict[str, Any], result: dict[str, Any]) -> None:
            runs[(job["env"], job["name"], job["seed"])] = result
            write_results(args.out, snapshot(complete=False), plot=False)
            last = max(result["steps"], key=int)
            print(
                f"[{job['env']} {job['name']} seed {job['seed']}] PSNR@{last} {result['steps'][last]['psnr']:.2f}"
            )

        if jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(run_one, job): job for job in todo}
                for future in as_completed(futures):
                    finished(futures[future], future.result())
        else:
            for job in todo:
                finished(job, run_one(job))
        results = snapshot(complete=True)
        write_results(args.out, results)
    print(markdown_table(results))
    return results


def write_results(out: Path, results: dict[str, Any], plot: bool = True) -> None:
    _common.write_results(out, results, markdown_table)
    if plot:
        plot_psnr(results, out / "psnr_vs_steps.png")


def parse_args(argv: list[str] | None = None) -> Args:
    return _common.parse_dataclass_args(Args, __doc__, argv, choices={"preset": PRESETS})


if __name__ == "__main__":
    main(parse_args())
