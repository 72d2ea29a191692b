"""VP2-style push benchmark: goal-image MPC on RobosuitePush with the simulator oracle, AdaWorld, its action-agnostic
twin and random actions, under one planner and one cost.

    python -m benchmarks.vp2_push --preset cpu --seed 0 --out out/vp2_push --adaworld BUNDLE --action-agnostic BUNDLE

Tasks are ``make_push_tasks(n, seed)`` (VP2's scripted pushes, goal = the demo's final state and frame;
``--task-start contact`` starts them with the pusher touching its object instead of 0.22 m behind it). Every
model runs the same closed loop on every task (``adaworld_gym.plan.run_push_episode``): reset to the task's
start state, one zero action, then MPPI replans every step under VP2's summed pixel-MSE cost, 15 steps in all.
Success = at some visited state every object is within 0.05 m of its goal position (``push_success``);
``mean_best_distance`` averages the best (lowest) ``max_object_distance`` of each episode.

Models:

- ``oracle``: the real simulator restored to the current state (``SimulatorDynamics``), the upper bound;
- ``adaworld``: an adapted AdaWorld bundle over the push action space (``--adaworld``; default: the shipped
  push bundle, when there is one);
- ``action_agnostic``: the adapted action-agnostic twin (``--action-agnostic``); it cannot tell actions apart,
  so MPPI's weights are uniform and its plan is a random walk around the previous one;
- ``random``: uniform random actions (gripper 0), no model.

A model without a bundle is skipped: its numbers are ``null`` and ``skipped`` says why (no number is made up).
Each candidate draws its planner noise from the same per-task seed for every model.

Presets:

- ``full``: VP2's settings: 100 tasks, MPPI 200 samples x horizon 10, 16 simulator workers, 3 denoising steps.
- ``cpu``: 2 cores: 10 tasks, MPPI 32 samples x VP2's horizon 10 (everything else as VP2: gamma 0.05, beta 0.5,
  init std (0.5, 0.5, 0.5, 0), one update, replan every step), 2 simulator workers, 1 denoising step. The horizon
  is not cut: from a task's start the object only moves 5-7 steps into the demo, so over 5 frames lifting the arm
  out of view costs less than the demo itself and even the oracle learns to hide the arm (measured; see
  ``tests/test_push.py::test_vp2_cost_prefers_the_demo_at_the_benchmark_horizon``). One oracle replan simulates
  320 steps with rendering (21.8 s over 2 workers in the canonical run); a `small` world model predicts the 320
  frames in 10-11 s at one thread and 1 denoising step. Measured: oracle 51 min; the two learned models 50 min
  in a second process beside it (``--reuse``, started 12 min later): 63 min from start to merged results.
- ``smoke``: 1 task, 2 samples x horizon 2, the simulator in-process, tiny random-weight bundles (saved to a
  temporary directory and loaded back) for the learned models: for tests, not a measurement.

``--samples N`` changes only the number of MPPI candidates (a planner-budget study, e.g. a learned model at the
oracle's seconds per replan); it is part of the protocol, so runs at other budgets are never taken over.

Writes ``results.json`` (after every model, so an interrupted run keeps what it finished), ``results.md`` and
GIFs of the first few episodes of each model (goal | real | the learned model's one-step prediction).

Resuming and splitting: a model already finished in ``--out`` (or in a ``--reuse`` directory) under the same
protocol (preset settings, seed, tasks, and the same bundle for a learned model) is taken from there instead of
being run again, with its GIFs. Everything is seeded per task, so this gives the numbers a single run would;
it lets a killed run resume and lets the learned models run in a second process beside the oracle, e.g.
``--models adaworld,action_agnostic --out DIR2``, then the full command with ``--reuse DIR2``. ``meta.reused``
names the models taken over and ``meta.model_minutes`` gives each model's own wall time. A ``--reuse``
directory without a ``results.json`` or run under another protocol is refused with the reason. The protocol
includes the tasks themselves (``meta.task_digest``): one seed can give other tasks on another kind of CPU
(MuJoCo's rounding), and their results are never merged.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from adaworld_gym.models.bundle import bundle_digest, tiny_random_bundle
from adaworld_gym.plan import (
    PUSH_ENV_ID,
    VP2_STEPS,
    RandomPlanner,
    episode_video,
    imagine_one_step,
    load_push_bundle,
    make_env,
    make_planner,
    run_push_episode,
)
from adaworld_gym.planning import SimulatorDynamics, WorldModelDynamics
from adaworld_gym.sims.push import SUCCESS_THRESHOLD, TASK_STARTS, make_push_tasks, push_tasks_digest
from adaworld_gym.viz import save_gif
from benchmarks import _common
from benchmarks._common import (
    check_bundle_kind,
    close_dynamics,
    copy_gifs,
    derived_seed,
    earlier_plugins,
    earlier_results,
    imagining_dynamics,
    jsonable_args,
    kept_plugins,
    load_plugin,
    parse_dataclass_args,
    parse_plugins,
    reseed,
    select_models,
    skip_other_bundle,
    wilson,
)

MODELS = ("oracle", "adaworld", "action_agnostic", "random")

PRESETS: dict[str, dict[str, Any]] = {
    # VP2's protocol: 100 tasks, MPPI 200 x 10 (a GPU for the world models, many cores for the simulator).
    "full": dict(tasks=100, samples=200, horizon=10, workers=16, denoise_steps=3, gifs=5),
    # 2 cores, VP2's horizon (a shorter one makes hiding the arm the cheapest plan; module docstring):
    # oracle ~9 s/replan idle x 14 replans x 10 tasks, each learned model ~13 s/replan at one thread x 140.
    "cpu": dict(tasks=10, samples=32, horizon=10, workers=2, denoise_steps=1, gifs=3),
    # Tests: one task, 2 x 2 candidates, simulator in-process, tiny random-weight bundles.
    "smoke": dict(tasks=1, samples=2, horizon=2, workers=0, denoise_steps=1, gifs=1),
}


@dataclass
class Args:
    preset: str = "cpu"
    seed: int = 0
    out: Path = Path("out/vp2_push")
    adaworld: str = ""  # adapted AdaWorld push bundle (default: the shipped one, if any; smoke: tiny random)
    action_agnostic: str = ""  # adapted action-agnostic twin bundle (smoke: tiny random)
    tasks: int = 0  # tasks from make_push_tasks(n, seed); 0: the preset's
    samples: int = 0  # MPPI candidates per replan; 0: the preset's (a planner-budget study changes only this)
    # where a task starts in its demo: approach (0.22 m behind the object) or contact (make_push_tasks)
    task_start: str = "approach"
    workers: int = -1  # simulator processes for the oracle; -1: the preset's
    threads: int = 1  # torch threads (1 is the fastest per core on a shared 2-core machine)
    models: str = ",".join(MODELS)  # comma list: run only these (the others are recorded as skipped)
    # Earlier runs' directories whose finished models are taken over (see "Resuming and splitting" below).
    reuse: list[Path] = field(default_factory=list)
    # NAME=MODULE:FACTORY or NAME=FILE.py:FACTORY: your own Dynamics, FACTORY(env_id), planned with beside the
    # built-in models (same planner, cost, tasks and seeds); run every time, never taken over from --reuse.
    dynamics: list[str] = field(default_factory=list)


def task_seed(seed: int, index: int) -> int:
    """The planner's (and world model's) seed for task ``index``: the same for every model."""
    return derived_seed(seed, index)


# ---------------------------------------------------------------------------------------------------- models
def learned_bundles(args: Args, tmp: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Bundle directory per learned model, and a reason per learned model that has none."""
    paths: dict[str, str] = {}
    skipped: dict[str, str] = {}
    if args.preset == "smoke":
        for name, agnostic in (("adaworld", False), ("action_agnostic", True)):
            given = args.adaworld if name == "adaworld" else args.action_agnostic
            if given:
                paths[name] = given
            else:
                tiny_random_bundle(
                    "continuous", seed=args.seed, action_size=4, action_agnostic=agnostic
                ).save_pretrained(tmp / name)
                paths[name] = str(tmp / name)
        return paths, skipped
    from adaworld_gym.envs.shipped import shipped_bundle_dir

    shipped = shipped_bundle_dir("RobosuitePush")
    if args.adaworld:
        paths["adaworld"] = args.adaworld
    elif (shipped / "bundle.json").is_file():
        paths["adaworld"] = str(shipped)
    else:
        skipped["adaworld"] = f"no bundle: --adaworld not given and none shipped at {shipped}"
    if args.action_agnostic:
        paths["action_agnostic"] = args.action_agnostic
    else:
        skipped["action_agnostic"] = "no bundle: --action-agnostic not given (none is shipped)"
    return paths, skipped


def load_learned(name: str, path: str) -> Any:
    bundle = load_push_bundle(path)
    check_bundle_kind(name, path, bundle)
    return bundle


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate_model(
    name: str, env: Any, tasks: list, p: dict[str, Any], args: Args, bundle: Any = None, plugin: Any = None
) -> list[dict[str, Any]]:
    """Run ``name`` on every task; write GIFs of the first ``p['gifs']`` episodes; per-task summaries.

    ``bundle``: a learned model's bundle; ``plugin``: a loaded plug-in :class:`Dynamics` (``--dynamics``)."""
    dynamics: Any = plugin
    if name == "oracle":
        dynamics = SimulatorDynamics(oracle_env_factory(), workers=p["workers"])
    elif bundle is not None:
        dynamics = WorldModelDynamics(bundle, steps=p["denoise_steps"])
    per_task = []
    try:
        with tqdm(total=len(tasks), desc=name, unit="task") as bar:
            for i, task in enumerate(tasks):
                seed = task_seed(args.seed, i)
                if dynamics is None:
                    planner = RandomPlanner(horizon=1, seed=seed)
                else:
                    reseed(dynamics, seed)
                    planner = make_planner("mppi", dynamics, p["samples"], p["horizon"], seed)
                result = run_push_episode(env, task, planner)
                if i < p["gifs"]:
                    imaginer = imagining_dynamics(dynamics, bundle, p["denoise_steps"], seed + 1)
                    if imaginer is not None:
                        frames, actions = result.episode.frames, result.episode.actions
                        result.imagined = imagine_one_step(imaginer, frames, actions)
                    video = episode_video(task.goal_image, result.episode.frames, result.imagined)
                    save_gif(video, args.out / f"{name}_task{i:03d}.gif", fps=2)
                per_task.append({"task": i, "target_object": task.target_object, **result.summary()})
                bar.set_postfix(success=sum(r["success"] for r in per_task), refresh=False)
                bar.update(1)
    finally:
        close_dynamics(dynamics)
    return per_task


# Preset settings that change a model's numbers; a finished model is reused only when these, the seed and the
# episode length all match.
PROTOCOL_SETTINGS = ("tasks", "samples", "horizon", "denoise_steps")


def finished_models(directory: Path, protocol: dict[str, Any], bundles: dict[str, str]) -> dict[str, Any]:
    """Per model, ``(per_task rows, minutes, where it ran)`` of the models finished in ``directory`` under
    ``protocol``, plug-ins included. A learned model also needs the same bundle. A missing, unreadable or
    other-protocol file gives nothing.
    """
    earlier = earlier_results(directory, protocol)
    if earlier is None or not isinstance(earlier.get("per_task"), dict):
        return {}
    meta, per_task = earlier["meta"], earlier["per_task"]
    found = {}
    for name in (*MODELS, *earlier_plugins(meta)[0]):
        rows = per_task.get(name)
        if not rows or len(rows) != protocol["tasks"]:
            continue
        recorded = meta.get("bundles", {}).get(name)
        if name in ("adaworld", "action_agnostic") and skip_other_bundle(
            directory, name, recorded, bundles.get(name)
        ):
            continue
        ran_in = meta.get("reused", {}).get(name, str(directory))  # taken over there too: keep where it ran
        found[name] = (rows, meta.get("model_minutes", {}).get(name), ran_in)
    return found


def oracle_env_factory() -> Any:
    """The oracle's env factory (picklable, for spawned workers)."""
    import functools

    return functools.partial(make_env, PUSH_ENV_ID)


def aggregate(
    per_task: dict[str, list[dict[str, Any]] | None], names: tuple[str, ...] = MODELS
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {
        "success": {},
        "mean_best_distance": {},
        "seconds_per_replan": {},
        "blind_replan_fraction": {},
    }
    for name in names:
        rows = per_task.get(name)
        if not rows:
            for key in out:
                out[key][name] = None
            continue
        out["success"][name] = float(np.mean([r["success"] for r in rows]))
        out["mean_best_distance"][name] = float(np.mean([r["best_distance"] for r in rows]))
        # Mean over all replans (every episode has the same number).
        out["seconds_per_replan"][name] = float(np.mean([r["seconds_per_replan"] for r in rows]))
        # MPPI replans whose candidates all cost the same (random has no planner: 0).
        replans = sum(r["replans"] for r in rows)
        out["blind_replan_fraction"][name] = sum(r.get("blind_replans", 0) for r in rows) / max(replans, 1)
    return out


def markdown_table(results: dict[str, Any]) -> str:
    meta, n = results["meta"], results["n_tasks"]
    rows = [
        "| model | success | 95% CI | mean best distance (m) | s / replan | blind replans |",
        "|---|---|---|---|---|---|",
    ]
    for name in results["success"]:  # the built-in models, then any plug-ins
        rate = results["success"][name]
        if rate is None:
            reason = results["skipped"][name]
            rows.append(
                f"| {name} | — | — | — | — | — ({f'skipped: {reason}' if reason else 'not run yet'}) |"
            )
            continue
        k = int(round(rate * n))
        low, high = wilson(k, n)
        rows.append(
            f"| {name} | {rate:.3f} ({k}/{n}) | {low:.2f}-{high:.2f} | "
            f"{results['mean_best_distance'][name]:.3f} | {results['seconds_per_replan'][name]:.2f} | "
            f"{results['blind_replan_fraction'][name]:.0%} |"
        )
    wall = f"{meta['wall_minutes']:.1f} min in all"
    if meta.get("reused"):  # the models taken over ran (and were timed) in their own processes
        wall = f"{meta['wall_minutes']:.1f} min in this process"
    rows += [
        "",
        f"`{meta['preset']}` preset, seed {meta['seed']}: {n} tasks from make_push_tasks({n}, {meta['seed']}"
        f"{task_start_arg(meta)}), "
        f"{VP2_STEPS}-step episodes (one zero action, then MPPI every step: {meta['samples']} samples x horizon "
        f"{meta['horizon']}, VP2 cost), success = best-step max object distance < {SUCCESS_THRESHOLD} m; oracle "
        f"with {meta['workers']} simulator worker(s), learned models with {meta['denoise_steps']} denoising "
        f"step(s) at {meta['threads']} thread(s); {wall}. Blind replans: MPPI "
        "replans whose candidates all had the same cost (the plan is then the mean of the noise).",
    ]
    if meta.get("reused"):
        taken = ", ".join(f"{name} (from `{source}`)" for name, source in meta["reused"].items())
        rows.append(f"\nFinished earlier under the same protocol and taken over: {taken}.")
    return "\n".join(rows) + "\n"


def task_start_arg(meta: dict[str, Any]) -> str:
    """``, start="contact"`` for tasks with a non-default start (results written before the option: the default)."""
    start = meta.get("task_start", "approach")
    return "" if start == "approach" else f', start="{start}"'


def write_results(out: Path, results: dict[str, Any]) -> None:
    _common.write_results(out, results, markdown_table)


# ------------------------------------------------------------------------------------------------------ main
def main(args: Args) -> dict[str, Any]:
    if args.preset not in PRESETS:
        raise SystemExit(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    plugins = parse_plugins(args.dynamics, MODELS)
    chosen = select_models(args.models, MODELS, plugins)
    names = (*MODELS, *plugins)
    p = dict(PRESETS[args.preset])
    if args.tasks < 0 or args.samples < 0:
        raise SystemExit(
            f"--tasks and --samples must be >= 0 (0: the preset's), got {args.tasks}, {args.samples}"
        )
    if args.task_start not in TASK_STARTS:
        raise SystemExit(f"--task-start must be one of {', '.join(TASK_STARTS)}, got {args.task_start!r}")
    if args.tasks:
        p["tasks"] = args.tasks
    if args.samples:
        p["samples"] = args.samples
    if args.workers >= 0:
        p["workers"] = args.workers
    torch.set_num_threads(args.threads)
    start = time.time()
    args.out = Path(args.out)
    protocol = {k: p[k] for k in PROTOCOL_SETTINGS}
    protocol.update(preset=args.preset, seed=args.seed, episode_steps=VP2_STEPS)
    env = make_env(PUSH_ENV_ID)
    try:
        tasks = make_push_tasks(p["tasks"], args.seed, env=env.unwrapped, start=args.task_start)
        # The tasks themselves, not only their seed: MuJoCo's rounding differs between CPU kinds, so one seed
        # can give other start states on another machine, whose results must not be merged with these.
        protocol["task_digest"] = push_tasks_digest(tasks)
        _common.check_reuse_dirs(args.out, args.reuse, protocol, notes={"task_digest": TASK_DIGEST_NOTE})
        args.out.mkdir(parents=True, exist_ok=True)
        return _run(args, p, protocol, plugins, chosen, names, env, tasks, start)
    finally:
        env.close()


TASK_DIGEST_NOTE = (
    "the push tasks differ: the same seed gives other tasks on another kind of CPU (MuJoCo's rounding), with "
    "another renderer (the goal images) or other task code, and results written before the tasks were "
    "fingerprinted carry no digest; run those models again here"
)


def _run(
    args: Args,
    p: dict[str, Any],
    protocol: dict[str, Any],
    plugins: dict[str, str],
    chosen: Any,
    names: tuple[str, ...],
    env: Any,
    tasks: list[Any],
    start: float,
) -> dict[str, Any]:
    """The benchmark proper, once the tasks are made and the --reuse directories checked against them."""
    reuse_dirs = [args.out, *(Path(d) for d in args.reuse)]
    with tempfile.TemporaryDirectory(prefix="vp2_push_") as tmp:
        paths, skipped = learned_bundles(args, Path(tmp))
        for name in MODELS:
            if name not in chosen:
                skipped.setdefault(name, "not selected (--models)")
        bundles = {name: load_learned(name, path) for name, path in paths.items() if name not in skipped}
        given = {"adaworld": args.adaworld, "action_agnostic": args.action_agnostic}
        # A bundle is identified by its path and a digest of its weights, so that a result is never taken
        # over for another model behind the same path.
        bundle_meta = {
            name: (path if given[name] else f"{path} ({bundles[name].meta.get('source', 'shipped')})")
            + f" sha256:{bundle_digest(path)}"
            for name, path in paths.items()
            if name in bundles
        }

        loaded: dict[str, Any] = {}  # plug-ins loaded and not yet run: closed at the end whatever happens
        try:
            per_task: dict[str, list[dict[str, Any]] | None] = {}
            minutes: dict[str, float | None] = {}
            reused: dict[str, str] = {}
            results: dict[str, Any] = {}
            # Read once, before anything runs: earlier runs' finished models, the out directory's first.
            finished = {d: finished_models(d, protocol, bundle_meta) for d in reuse_dirs}
            # Plug-ins are checked before any model runs. Those --out finished earlier are kept (with the target
            # and digest they ran) until a plug-in given now replaces them: a rerun never drops rows it had.
            for name, target in plugins.items():
                loaded[name] = load_plugin(name, target, PUSH_ENV_ID, env.action_space)
            earlier = earlier_results(args.out, protocol)
            targets, digests = kept_plugins(earlier and earlier["meta"], finished[args.out])
            names = (*names, *(n for n in targets if n not in names))

            def snapshot(complete: bool) -> dict[str, Any]:
                return {
                    **aggregate(per_task, names),
                    "n_tasks": len(tasks),
                    "skipped": {name: skipped.get(name) for name in names},
                    "per_task": {name: per_task.get(name) for name in names},
                    "meta": {
                        **jsonable_args(args),
                        **p,
                        "env": PUSH_ENV_ID,
                        "episode_steps": VP2_STEPS,
                        "task_digest": protocol["task_digest"],
                        "planner": "mppi (VP2: gamma 0.05, beta 0.5, init std (0.5, 0.5, 0.5, 0), 1 update)",
                        "cost": "VP2 mse_rgb: squared error summed over predicted frames, pixels in [0, 1]",
                        "success_threshold_m": SUCCESS_THRESHOLD,
                        "bundles": bundle_meta,
                        "plugins": dict(targets),  # of the plug-in rows present (kept or run)
                        "plugin_digests": dict(digests),
                        "cpu_count": os.cpu_count(),
                        "complete": complete,
                        "wall_minutes": (time.time() - start) / 60,
                        "model_minutes": {name: minutes.get(name) for name in names},
                        "reused": reused,
                    },
                }

            # Take over every finished model before running any, so that each snapshot written below holds
            # them: a snapshot without them would replace the only record of them in --out.
            for name in targets:
                per_task[name], minutes[name], reused[name] = finished[args.out][name]
                print(
                    f"[{name}] a plug-in finished earlier in --out: "
                    + (
                        "running it again (its rows stay until the new ones are written)"
                        if name in loaded
                        else "kept"
                    )
                )
            for name in MODELS:
                source = next((d for d, done in finished.items() if name in done), None)
                if name in skipped:
                    # Not selected: what --out already holds for it stays (a run on other models rewrote it as null).
                    if source != args.out or skipped[name] != "not selected (--models)":
                        print(f"[{name}] skipped: {skipped[name]}")
                        continue
                    del skipped[name]
                    if name in given:  # a learned model: its rows keep the bundle they ran
                        bundle_meta[name] = earlier["meta"].get("bundles", {}).get(name)
                if source is not None:
                    per_task[name], minutes[name], reused[name] = finished[source][name]
                    copy_gifs(source, args.out, f"{name}_task*.gif")
                    print(f"[{name}] finished earlier under the same protocol: taken from {reused[name]}")
            for name in MODELS:
                if name in skipped or name in per_task:
                    continue
                model_start = time.time()
                per_task[name] = evaluate_model(name, env, tasks, p, args, bundles.get(name))
                minutes[name] = (time.time() - model_start) / 60
                results = snapshot(complete=False)
                write_results(args.out, results)
            for name in list(loaded):
                model_start = time.time()
                plugin = loaded.pop(name)
                per_task[name] = evaluate_model(name, env, tasks, p, args, plugin=plugin)
                minutes[name] = (time.time() - model_start) / 60
                targets[name], digests[name] = plugins[name], plugin.digest
                reused.pop(name, None)
                results = snapshot(complete=False)
                write_results(args.out, results)
            results = snapshot(complete=True)
            write_results(args.out, results)
        finally:
            for plugin in loaded.values():
                close_dynamics(plugin)
    print(markdown_table(results))
    return results


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_dataclass_args(Args, __doc__, argv, choices={"preset": PRESETS})


if __name__ == "__main__":
    main(parse_args())
