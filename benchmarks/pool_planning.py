"""Pool Procgen planning runs of several seeds into one table, with one-sided Fisher exact tests.

    python -m benchmarks.pool_planning benchmarks/results/procgen_planning.json \
        benchmarks/results/procgen_planning_seed1.json --out out/procgen_planning_pooled

Each input is a ``results.json`` of :mod:`benchmarks.procgen_planning`. They must be distinct seeds of one
protocol (preset, scenes, games, planner and cost settings); the models' bundles are listed per file, not
required to match. Every episode counts once: a game's cell is successes over episodes summed over the files.
Writes ``DIR/results.json`` (``{"seeds": [...], "games": {"<game>": {"<model>": [k, n]}}, "all": {"<model>":
{"successes": k, "episodes": n, "rate": r, "per_seed": {...}}}, "tests": {"<a>_vs_<b>": {"ratio": ..., "p": ...}},
"meta": {...}}``) and ``DIR/results.md``. The test is one-sided (is ``a``'s success rate above ``b``'s?).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from benchmarks._common import read_json, write_results

# Settings that must agree for episodes to be pooled (what procgen_planning.PROTOCOL_SETTINGS and its preset fix).
POOLED_SETTINGS = (
    "preset", "scenes", "game_list", "distribution_mode", "levels", "episode_steps", "samples", "horizon",
    "elites", "iterations", "execute", "denoise_steps", "actions", "cost", "cost_fn", "scene_search",
    "seeds", "max_candidates", "bfs_budget", "rollouts",
)  # fmt: skip
MODELS = ("oracle", "adaworld", "adaworld_zero_shot", "action_agnostic", "random")
TESTS = (
    ("adaworld", "random"),
    ("adaworld_zero_shot", "random"),
    ("action_agnostic", "random"),
    ("oracle", "random"),
    ("adaworld", "action_agnostic"),
    ("adaworld", "adaworld_zero_shot"),
    ("oracle", "adaworld"),
)


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact test: P(at least ``k1`` successes in group 1) given the margins, i.e. the p-value
    of "group 1's success rate is above group 2's" (hypergeometric upper tail)."""
    total, successes = n1 + n2, k1 + k2
    top = min(n1, successes)
    tail = sum(math.comb(successes, x) * math.comb(total - successes, n1 - x) for x in range(k1, top + 1))
    return tail / math.comb(total, n1)


def pool(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The pooled counts and tests of ``runs`` (parsed results files; ``names`` label them in errors)."""
    seeds = []
    for run, name in zip(runs, names, strict=True):
        meta = run.get("meta") if isinstance(run, dict) else None
        games = meta.get("game_list") if isinstance(meta, dict) else None
        # Another benchmark's results (e.g. vp2_push) failed later with a bare KeyError: 'game_list'.
        if not isinstance(games, list) or not all(
            isinstance(run.get(g), dict) and isinstance(run[g].get("per_episode"), dict) for g in games
        ):
            raise SystemExit(
                f"{name}: not a results.json of benchmarks.procgen_planning (no per-game episodes)"
            )
    first = runs[0]["meta"]
    for run, name in zip(runs, names, strict=True):
        meta = run["meta"]
        if not meta.get("complete", False):
            raise SystemExit(f"{name}: an unfinished run (meta.complete is not true)")
        changed = [key for key in POOLED_SETTINGS if meta.get(key) != first.get(key)]
        if changed:
            raise SystemExit(
                f"{name}: another protocol than {names[0]} ({', '.join(changed)}): its episodes cannot be pooled"
            )
        if meta.get("seed") in seeds:
            raise SystemExit(f"{name}: seed {meta.get('seed')} is given twice; each episode may count once")
        seeds.append(meta.get("seed"))
    games: dict[str, dict[str, list[int]]] = {}
    overall: dict[str, dict[str, Any]] = {}
    # Plug-in models (--dynamics): pooled when every file ran the same code under the same name (the digest
    # of its module file where every file records one, else the same target).
    targets: dict[str, list[str | None]] = {}
    for run in runs:
        for plugin in run["meta"].get("plugins") or {}:
            targets.setdefault(plugin, [(r["meta"].get("plugins") or {}).get(plugin) for r in runs])
    plugins = []
    for name, given in targets.items():
        digests = [(r["meta"].get("plugin_digests") or {}).get(name) for r in runs]
        same = len(set(digests)) == 1 if None not in digests else len(set(given)) == 1 and None not in given
        if same:
            plugins.append(name)
        else:
            print(f"[{name}] left out of the pool: not the same plug-in in every file (targets {given})")
    candidates = [*MODELS, *targets]
    # A model enters the pool only with episodes of every game in every file (else its row would mix games).
    pooled = [
        model
        for model in (*MODELS, *plugins)
        if all(run[game]["per_episode"].get(model) for run in runs for game in first["game_list"])
    ]
    for game in first["game_list"]:
        for model in pooled:
            rows = [run[game]["per_episode"][model] for run in runs]
            k, n = sum(sum(bool(e["success"]) for e in r) for r in rows), sum(len(r) for r in rows)
            games.setdefault(game, {})[model] = [k, n]
            entry = overall.setdefault(model, {"successes": 0, "episodes": 0, "per_seed": {}})
            entry["successes"] += k
            entry["episodes"] += n
            for seed, r in zip(seeds, rows, strict=True):
                cell = entry["per_seed"].setdefault(str(seed), [0, 0])
                cell[0] += sum(bool(e["success"]) for e in r)
                cell[1] += len(r)
    for entry in overall.values():
        entry["rate"] = entry["successes"] / entry["episodes"]
    tests = {}
    for a, b in (*TESTS, *((name, "random") for name in plugins)):
        if a in overall and b in overall:
            (ka, na), (kb, nb) = ((overall[m]["successes"], overall[m]["episodes"]) for m in (a, b))
            # None where the ratio is undefined (no success on b's side): JSON has no NaN or infinity.
            ratio = (ka / na) / (kb / nb) if kb else None
            tests[f"{a}_vs_{b}"] = {"ratio": ratio, "p": fisher_greater(ka, na, kb, nb)}
    return {
        "seeds": seeds,
        "games": games,
        "all": overall,
        "tests": tests,
        "meta": {
            "files": names,
            "left_out": [model for model in candidates if model not in pooled],
            # Per plug-in, its target in each file (None: not run there); one that differs is left out.
            "plugins": targets,
            **{key: first.get(key) for key in POOLED_SETTINGS},
            "bundles": {str(seed): run["meta"].get("bundles") for seed, run in zip(seeds, runs, strict=True)},
        },
    }


def markdown_table(results: dict[str, Any]) -> str:
    games, overall, seeds = results["games"], results["all"], results["seeds"]
    game_names = list(games)
    header = ["model", *game_names, *(f"seed {s}" for s in seeds), "all seeds"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for model, entry in overall.items():
        cells = [f"{games[g][model][0]}/{games[g][model][1]}" for g in game_names]
        per_seed = [f"{100 * k / n:.1f}%" for k, n in entry["per_seed"].values()]
        total = f"{entry['successes']}/{entry['episodes']} = {100 * entry['rate']:.1f}%"
        lines.append("| " + " | ".join([model, *cells, *per_seed, total]) + " |")
    lines += ["", "| comparison | ratio of success rates | one-sided Fisher exact p |", "|---|---|---|"]
    for name, test in results["tests"].items():
        ratio = "—" if test["ratio"] is None else f"{test['ratio']:.2f}x"
        lines.append(f"| {name.replace('_vs_', ' > ')} | {ratio} | {test['p']:.3f} |")
    left_out = results["meta"].get("left_out")
    if left_out:
        lines += [
            "",
            f"Left out (not in every file, or another plug-in under one name): {', '.join(left_out)}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "files", nargs="+", type=Path, help="procgen_planning results.json files, one per seed"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and results.md")
    args = parser.parse_args(argv)
    runs = [read_json(path, "results file") for path in args.files]
    results = pool(runs, [str(path) for path in args.files])
    write_results(args.out, results, markdown_table)
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
