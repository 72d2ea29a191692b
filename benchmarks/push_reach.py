"""Can VP2's planner reach the push tasks at all? Its first-replan candidates, run in the real simulator.

MPPI (VP2: one update, replan every step) only ever weighs the candidates it samples around its previous plan.
If none of them moves an object toward its goal, no cost, however good its model, can steer the arm there. This
measures that for each task start of ``make_push_tasks`` (``--starts``, default both): from a task's start and
the benchmark's one zero action, ``--candidates`` action sequences are drawn from the first replan's
distribution (VP2's correlated noise, init std (0.5, 0.5, 0.5, 0), beta 0.5, clipped to [-1, 1]) over VP2's
horizon, and each is run in the simulator. Per start, averaged over tasks:

- ``moved_closer``: fraction of candidates that bring the max object distance to the goal 5 mm or more below
  the start's at some step;
- ``reached``: fraction that reach the success threshold (every object within 0.05 m) at some step;
- ``cheapest_progress_m``: the progress (start distance minus best distance) of the candidate with the lowest
  VP2 cost, the one MPPI's weights favour most; ``cheapest_moves``: the fraction of tasks where it is > 5 mm;
- ``demo_rank``: the rank (0 = cheapest) by VP2 cost among the candidates of the demo's own actions from the
  task's start (one step late, after the zero action; zeros once they run out).

    python -m benchmarks.push_reach --tasks 10 --candidates 32 --seed 0 --out out/push_reach

Writes ``results.json`` (``{"<start>": {"moved_closer":..., ..., "per_task": [...]}, "meta": {...}}``) and
``results.md``. One task costs ``candidates x horizon`` simulator steps with rendering (~20 s at 32 x 10).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from adaworld_gym.planning import PUSH_INIT_STD, VP2_COST, correlated_noise
from adaworld_gym.sims.push import (
    SUCCESS_THRESHOLD,
    TASK_STARTS,
    RobosuitePushEnv,
    make_push_tasks,
    max_object_distance,
    push_tasks_digest,
)
from benchmarks import _common

MOVED = 0.005  # m: less than this is noise from the arm brushing past, not a push


@dataclass
class Args:
    tasks: int = 10  # make_push_tasks(n, seed)
    candidates: int = 32  # sequences per task (the cpu preset's MPPI samples)
    horizon: int = 10  # VP2's
    starts: str = ",".join(TASK_STARTS)  # comma list of make_push_tasks starts
    seed: int = 0
    out: Path = Path("out/push_reach")


def measure_task(env: RobosuitePushEnv, task: Any, candidates: np.ndarray) -> dict[str, Any]:
    """Run the demo's remaining actions and every candidate from the task's start (after one zero action)."""
    zero = np.zeros(env.action_space.shape, np.float32)
    env.set_state(task.init_state)
    env.step(zero)
    state = env.get_state()
    start = max_object_distance(state, task.goal_state)
    horizon = candidates.shape[1]
    demo = np.zeros((1, horizon, candidates.shape[2]), np.float32)
    rest = task.demo_actions[:horizon]  # the demo one step late, after the benchmark's zero action
    demo[0, : len(rest)] = rest
    sequences = np.concatenate([demo, candidates])
    frames = np.empty((len(sequences), horizon, *env.observation_space.shape), np.uint8)
    best = np.empty(len(sequences))
    for i, sequence in enumerate(sequences):
        env.set_state(state)
        best[i] = start
        for t, action in enumerate(sequence):
            frames[i, t] = env.step(action)[0]
            best[i] = min(best[i], max_object_distance(env.get_state(), task.goal_state))
    costs = VP2_COST(frames, task.goal_image)
    progress = start - best[1:]
    cheapest = int(np.argmin(costs[1:]))
    return {
        "target_object": int(task.target_object),
        "start_distance": float(start),
        "moved_closer": float(np.mean(progress >= MOVED)),
        "reached": float(np.mean(best[1:] < SUCCESS_THRESHOLD)),
        "max_progress_m": float(progress.max()),
        "cheapest_progress_m": float(progress[cheapest]),
        "demo_progress_m": float(start - best[0]),
        "demo_rank": int(np.sum(costs[1:] < costs[0])),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("moved_closer", "reached", "start_distance")}
    return {
        **mean,
        "cheapest_progress_m": float(np.mean([r["cheapest_progress_m"] for r in rows])),
        "cheapest_moves": float(np.mean([r["cheapest_progress_m"] >= MOVED for r in rows])),
        "demo_rank_median": float(np.median([r["demo_rank"] for r in rows])),
        "tasks_with_a_reaching_candidate": int(sum(r["reached"] > 0 for r in rows)),
        "per_task": rows,
    }


def markdown_table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "| task start | start distance (m) | candidates moving an object closer | candidates reaching the goal "
        "| tasks with a reaching candidate | cheapest candidate moves an object | its progress (m) "
        "| demo's rank by cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for start in meta["starts"]:
        r = results[start]
        lines.append(
            f"| {start} | {r['start_distance']:.3f} | {r['moved_closer']:.0%} | {r['reached']:.1%} | "
            f"{r['tasks_with_a_reaching_candidate']}/{meta['tasks']} | {r['cheapest_moves']:.0%} | "
            f"{r['cheapest_progress_m']:.3f} | {r['demo_rank_median']:.0f} of {meta['candidates']} (median) |"
        )
    lines += [
        "",
        f"make_push_tasks({meta['tasks']}, {meta['seed']}) per start (digests "
        + ", ".join(f"{s} `{meta['task_digests'][s][:12]}`" for s in meta["starts"])
        + f"); {meta['candidates']} candidates per task from VP2's first-replan noise over horizon "
        f"{meta['horizon']}, after one zero action; means over tasks; {meta['wall_minutes']:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def main(args: Args) -> dict[str, Any]:
    starts = [s.strip() for s in args.starts.split(",") if s.strip()]
    unknown = [s for s in starts if s not in TASK_STARTS]
    if unknown or not starts:
        raise SystemExit(f"--starts: choose from {', '.join(TASK_STARTS)}, got {args.starts!r}")
    if min(args.tasks, args.candidates, args.horizon) < 1:
        raise SystemExit("--tasks, --candidates and --horizon must be >= 1")
    out = _common.make_out_dir(Path(args.out))
    began = time.time()
    results: dict[str, Any] = {}
    digests: dict[str, str] = {}
    env = RobosuitePushEnv()
    try:
        for start in starts:
            tasks = make_push_tasks(args.tasks, args.seed, env=env, start=start)
            digests[start] = push_tasks_digest(tasks)
            rows = []
            for index, task in enumerate(tqdm(tasks, desc=start, unit="task")):
                # The same candidates for a task index under every start: only the start differs.
                rng = np.random.default_rng(_common.derived_seed(args.seed, index))
                noise = correlated_noise(
                    rng, (args.candidates, args.horizon, 4), np.asarray(PUSH_INIT_STD), beta=0.5
                )
                rows.append(measure_task(env, task, np.clip(noise, -1.0, 1.0).astype(np.float32)))
            results[start] = summarise(rows)
    finally:
        env.close()
    results["meta"] = {
        **_common.jsonable_args(args),
        "starts": starts,
        "task_digests": digests,
        "wall_minutes": (time.time() - began) / 60,
        **_common.machine_info(),
    }
    _common.write_results(out, results, markdown_table)
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main(_common.parse_dataclass_args(Args, __doc__))
