"""AdaWorld's Procgen planning benchmark (Table 3): goal-image CEM on Heist, Jumper, Maze and CaveFlyer with the
simulator oracle, AdaWorld (finetuned and zero-shot), its action-agnostic twin and random actions.

    python -m benchmarks.procgen_planning --preset cpu --seed 0 --out out/procgen_planning \\
        --adaworld BUNDLES --adaworld-zero-shot BUNDLES --action-agnostic BUNDLES

A bundle option names a directory holding one adapted bundle per game, ``BUNDLES/procgen-<game>/`` (the layout of
the shipped bundles, ``adaworld_gym/assets/bundles/procgen-<game>``), each over Procgen's ``Discrete(15)``.
``--adaworld-zero-shot`` defaults to the shipped bundles (adapted, not finetuned) where they exist.

Scenes (:func:`find_scenes`): held-out test levels (9000-9999, easy mode) are tried in an order drawn from the seed
and the game; a level is kept when the real simulator finds, from its start state and with the four movement
actions, a way to complete it in 2 to 20 steps. The search is a breadth-first search that merges identical frames
(``bfs_budget`` simulated steps), then, if that found nothing, ``rollouts`` "sticky" random move sequences (each
step repeats the previous move with probability 0.75); the shortest completing sequence found is replayed from
the start state and the goal image is the last frame before the completing step. Levels with no completion found
(or a 1-step one, whose goal would be the start frame) are rejected; ``results.json`` records how many.

Episodes (AdaWorld's protocol): reset to the scene's start state, then CEM over LEFT, DOWN, UP, RIGHT under the
best RGB cosine similarity to the goal along the imagined trajectory (``ADAWORLD_COST``), execute the first 5
actions, replan, at most 20 steps. Success = the level is completed within 20 steps (``procgen_success``). Every
model gets the same scenes, planner settings and per-episode planner seeds. ``--cost adaworld_tiebreak`` breaks
ties of the best similarity by the mean one: the oracle repeats the goal frame after completing a level, so under
the plain score completing ties with passing the goal frame and then walking away (on three 3-step Maze scenes x 3
seeds the oracle completed 4/9 with the plain score, 9/9 with the tie-break, at 3-5 steps).

Models: ``oracle`` (the real simulator restored to the current state), ``adaworld`` (adapted and finetuned,
AdaWorld: 500 steps), ``adaworld_zero_shot`` (adapted, not finetuned), ``action_agnostic`` (the adapted twin that
ignores actions), ``random`` (uniform random moves). A model without a bundle for a game is skipped there: its
numbers are ``null`` and ``skipped`` says why. ``average`` is over the games; ``null`` for a model that did not
run on all of them.

Presets:

- ``full``: the paper's: 30 scenes x 5 planner seeds per game, CEM 100 sequences x 15, top 10, 2 iterations,
  3 denoising steps (a GPU for the world models).
- ``cpu``: for 2 shared CPU cores within 60 minutes with all three bundles: 4 scenes x 1 seed per game,
  CEM 20 x 10, top 4, 2 iterations (400 predicted frames per replan instead of 3000), 1 denoising step, the
  oracle in one worker. Sizing: a ``small`` world model predicts ~22 ms/frame at one idle thread (bfloat16; vp2_push's
  measurement), so ~9 s per replan, ~4 replans per episode, 3 learned models x 16 episodes: ~29 min. Measured
  here while two training runs held both cores (niced): 109 ms/frame (bfloat16; 230 fp32), ~44 s per replan,
  which would take ~2.3 h: on a loaded machine pass ``--scenes 2`` or fewer models. The oracle replans in
  ~0.25 s (400 simulated steps, scaled from 1.8 s measured loaded for the paper's 3000); scene search ~0.5-5 s per
  candidate level.
- ``cpu-cem100``: the ``cpu`` preset (same scene search, so the same scenes for a seed, and 1 denoising step) with
  the paper's CEM sizes, 100 x 15, top 10: what the reduced planner costs a model (7.5x the frames per replan).
- ``smoke``: 1 scene per game, CEM 2 x 5, 1 iteration, tiny random-weight bundles: for tests, not a measurement.

Writes ``results.json`` (after every game and model), ``results.md`` and GIFs of the first episodes
(goal | real | the learned model's one-step prediction of each executed action).

Resuming and splitting (as ``vp2_push``): a game's model already finished in ``--out`` or in a ``--reuse``
directory under the same protocol (preset settings, seed, cost, the same scenes, and the same bundle for a learned
model) is taken from there with its GIFs instead of being run again. Every episode is seeded by the run seed, the
game and the scene, so the merged file holds the numbers one run would; e.g. ``--models oracle,random,adaworld
--out A`` and ``--models adaworld_zero_shot,action_agnostic --out B`` side by side, then the full command with
``--reuse A B``. ``meta.reused`` names what was taken over and ``meta.model_minutes`` each model's own wall time.
A ``--reuse`` directory without a ``results.json`` or run under another protocol is refused with the reason.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from tqdm.auto import tqdm

from adaworld_gym.models.bundle import bundle_digest
from adaworld_gym.plan import RandomPlanner, episode_video, imagine_one_step
from adaworld_gym.planning import (
    ADAWORLD_COST,
    ADAWORLD_TIEBREAK_COST,
    PROCGEN_MOVE_ACTIONS,
    CEMPlanner,
    SimulatorDynamics,
    WorldModelDynamics,
    procgen_success,
    run_mpc_episode,
)
from adaworld_gym.registration import procgen_env_id
from adaworld_gym.sims.games import PROCGEN_GAMES, TEST_LEVELS
from adaworld_gym.sims.procgen import NUM_ACTIONS, ProcgenEnv
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

GAMES = ("heist", "jumper", "maze", "caveflyer")
MODELS = ("oracle", "adaworld", "adaworld_zero_shot", "action_agnostic", "random")
LEARNED = ("adaworld", "adaworld_zero_shot", "action_agnostic")
EPISODE_STEPS = 20
EXECUTE = 5
MIN_REACH_STEPS = 2
DISTRIBUTION_MODE = "easy"
COSTS = {"adaworld": ADAWORLD_COST, "adaworld_tiebreak": ADAWORLD_TIEBREAK_COST}
PAPER = {  # AdaWorld Table 3, success %
    "random": (19.33, 22.00, 41.33, 22.00, 26.17),
    "action_agnostic": (20.67, 20.67, 39.33, 23.33, 26.00),
    "adaworld_zero_shot": (38.67, 68.00, 41.33, 31.33, 44.83),
    "adaworld": (66.67, 58.67, 68.00, 33.33, 56.67),
}

PRESETS: dict[str, dict[str, Any]] = {
    # AdaWorld's protocol: 30 scenes x 5 seeds, CEM 100 x 15, top 10, 2 iterations, 3 denoising steps.
    "full": dict(
        scenes=30, seeds=5, samples=100, horizon=15, elites=10, iterations=2, denoise_steps=3, workers=8,
        max_candidates=1000, bfs_budget=500, rollouts=64, gifs=3,
    ),
    # 2 shared cores, <= 60 min with all bundles (sizing in the module docstring).
    "cpu": dict(
        scenes=4, seeds=1, samples=20, horizon=10, elites=4, iterations=2, denoise_steps=1, workers=1,
        max_candidates=200, bfs_budget=500, rollouts=64, gifs=1,
    ),
    # The cpu preset's scenes and steps with the paper's CEM sizes: how much the reduced planner costs.
    "cpu-cem100": dict(
        scenes=4, seeds=1, samples=100, horizon=15, elites=10, iterations=2, denoise_steps=1, workers=1,
        max_candidates=200, bfs_budget=500, rollouts=64, gifs=1,
    ),
    # Tests: tiny random-weight bundles, the simulator in-process.
    "smoke": dict(
        scenes=1, seeds=1, samples=2, horizon=5, elites=1, iterations=1, denoise_steps=1, workers=0,
        max_candidates=40, bfs_budget=300, rollouts=16, gifs=1,
    ),
}  # fmt: skip


@dataclass
class Args:
    preset: str = "cpu"
    seed: int = 0
    out: Path = Path("out/procgen_planning")
    adaworld: str = ""  # directory of procgen-<game>/ finetuned bundles
    adaworld_zero_shot: str = ""  # procgen-<game>/ adapted, not finetuned bundles (default: the shipped ones)
    action_agnostic: str = ""  # directory of procgen-<game>/ adapted action-agnostic twins
    games: str = ",".join(GAMES)  # comma list
    models: str = ",".join(MODELS)  # comma list: run only these (the others are recorded as skipped)
    scenes: int = 0  # scenes per game; 0: the preset's
    seeds: int = 0  # planner seeds per scene; 0: the preset's
    workers: int = -1  # oracle simulator processes; -1: the preset's
    threads: int = 1  # torch threads
    cost: str = "adaworld"  # adaworld (the paper's) or adaworld_tiebreak (ties broken by the mean similarity)
    # Earlier runs' directories whose finished games and models are taken over (see "Resuming" below).
    reuse: list[Path] = field(default_factory=list)
    # NAME=MODULE:FACTORY or NAME=FILE.py:FACTORY: your own Dynamics, FACTORY(env_id) per game, planned with
    # beside the built-in models (same planner, cost, scenes and seeds); run every time, never taken over.
    dynamics: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- scenes
@dataclass
class Scene:
    """A start state and the goal frame of a level completable within 20 moves.

    Attributes:
        game, level: the Procgen game and test level.
        reset_seed: the ``ProcgenEnv.reset`` seed that built the start state.
        init_state: ``get_state()`` right after that reset.
        start_frame: the observation there.
        goal_image: the last frame before the completing step of ``reaching_actions``.
        reaching_actions: the shortest completing move sequence the search found.
    """

    game: str
    level: int
    reset_seed: int
    init_state: np.ndarray
    start_frame: np.ndarray
    goal_image: np.ndarray
    reaching_actions: tuple[int, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "reset_seed": self.reset_seed,
            "reaching_steps": len(self.reaching_actions),
        }


def make_env(game: str) -> ProcgenEnv:
    """The benchmark's env (held-out test levels, easy mode); picklable as a ``functools.partial``."""
    return ProcgenEnv(game, distribution_mode=DISTRIBUTION_MODE, levels="test")


def _frame_key(frame: np.ndarray) -> bytes:
    return hashlib.blake2b(frame.tobytes(), digest_size=16).digest()


def _bfs(env: ProcgenEnv, start: np.ndarray, frame: np.ndarray, max_steps: int, budget: int) -> tuple | None:
    """Breadth-first over the moves, merging identical frames; the first (shortest) completing path, or None."""
    frontier, seen, sims = [(start, ())], {_frame_key(frame)}, 0
    for _ in range(max_steps):
        following = []
        for state, path in frontier:
            for action in PROCGEN_MOVE_ACTIONS:
                if sims >= budget:
                    return None
                env.set_state(state)
                obs, _, terminated, _, info = env.step(action)
                sims += 1
                if terminated:
                    if info.get("level_complete"):
                        return (*path, action)
                    continue  # died: a dead end
                key = _frame_key(obs)
                if key not in seen:
                    seen.add(key)
                    following.append((env.get_state(), (*path, action)))
        frontier = following
        if not frontier:
            return None
    return None


def _shoot(env: ProcgenEnv, start: np.ndarray, max_steps: int, rollouts: int, rng: np.random.Generator):
    """Sticky random move sequences (repeat the previous move w.p. 0.75); the shortest completing one, or None."""
    best: tuple | None = None
    for _ in range(rollouts):
        env.set_state(start)
        path: list[int] = []
        move = int(rng.choice(PROCGEN_MOVE_ACTIONS))
        limit = max_steps if best is None else len(best) - 1
        for t in range(limit):
            if t and rng.random() >= 0.75:
                move = int(rng.choice(PROCGEN_MOVE_ACTIONS))
            path.append(move)
            _, _, terminated, _, info = env.step(move)
            if terminated:
                if info.get("level_complete"):
                    best = tuple(path)
                break
    return best


def reaching_actions(
    env: ProcgenEnv, max_steps: int, bfs_budget: int, rollouts: int, rng: np.random.Generator
) -> tuple[int, ...] | None:
    """Moves that complete the level from the env's current state within ``max_steps``, or None if the search
    found none. Leaves the env in an arbitrary state."""
    start, frame = env.get_state(), env.render()
    path = _bfs(env, start, frame, max_steps, bfs_budget)
    return path if path is not None else _shoot(env, start, max_steps, rollouts, rng)


def find_scenes(
    game: str,
    n: int,
    seed: int,
    max_candidates: int = 1000,
    bfs_budget: int = 500,
    rollouts: int = 64,
    max_steps: int = EPISODE_STEPS,
    env: ProcgenEnv | None = None,
) -> tuple[list[Scene], dict[str, Any]]:
    """The first ``n`` test levels (in a seeded order) completable in ``MIN_REACH_STEPS..max_steps`` moves.

    Returns the scenes and ``{"tried", "rejected", "found", "seconds"}``. Deterministic in ``(game, seed)``.
    """
    own = env is None
    env = env or make_env(game)
    start_time = time.time()
    order = np.random.default_rng([seed, PROCGEN_GAMES.index(game)]).permutation(np.arange(*TEST_LEVELS))
    scenes: list[Scene] = []
    tried = 0
    try:
        for level in order[:max_candidates]:
            if len(scenes) == n:
                break
            tried += 1
            level, reset_seed = int(level), derived_seed(seed, PROCGEN_GAMES.index(game), int(level))
            start_frame, _ = env.reset(seed=reset_seed, options={"level": level})
            init_state = env.get_state()
            path = reaching_actions(env, max_steps, bfs_budget, rollouts, np.random.default_rng(reset_seed))
            if path is None or len(path) < MIN_REACH_STEPS:
                continue
            # Replay from the start state: the goal is the frame before the completing step.
            frame, _ = env.reset(seed=reset_seed, options={"level": level, "state": init_state})
            for i, action in enumerate(path):
                goal = frame
                frame, _, terminated, _, info = env.step(action)
                if terminated != (i == len(path) - 1):
                    raise RuntimeError(f"{game} level {level}: the reaching path did not replay exactly")
            assert info.get("level_complete"), f"{game} level {level}: replay ended without completion"
            scenes.append(Scene(game, level, reset_seed, init_state, start_frame, goal, tuple(path)))
    finally:
        if own:
            env.close()
    stats = {
        "tried": tried,
        "rejected": tried - len(scenes),
        "found": len(scenes),
        "seconds": time.time() - start_time,
    }
    return scenes, stats


# ---------------------------------------------------------------------------------------------------- models
class RandomMoves(RandomPlanner):
    """Uniform random moves (LEFT, DOWN, UP, RIGHT) in the same harness; no model is queried."""

    def __init__(self, horizon: int, seed: int) -> None:
        super().__init__(horizon, seed, spaces.Discrete(NUM_ACTIONS))  # type: ignore[arg-type]

    def _resolve_default(self, default_action: Any) -> np.ndarray:
        return np.array(PROCGEN_MOVE_ACTIONS[0], np.int64)

    def _optimise(self, dynamics, context, goal, state, previous):  # type: ignore[no-untyped-def]
        return self.rng.choice(np.array(PROCGEN_MOVE_ACTIONS, np.int64), self.horizon), {"best_cost": np.nan}


def bundle_dirs(
    args: Args, games: list[str], tmp: Path, models: Sequence[str] = LEARNED
) -> tuple[dict, dict]:
    """``paths[game][model]`` bundle directories and ``skipped[game][model]`` reasons for the learned models.

    A folder given for one of ``models`` (the models to run) must hold a bundle of every game, of that game.
    """
    paths: dict[str, dict[str, str]] = {g: {} for g in games}
    skipped: dict[str, dict[str, str]] = {g: {} for g in games}
    given = {"adaworld": args.adaworld, "adaworld_zero_shot": args.adaworld_zero_shot}
    given["action_agnostic"] = args.action_agnostic
    for name in LEARNED:
        for game in games:
            if given[name]:
                path = Path(given[name]) / f"procgen-{game}"
            elif args.preset == "smoke":
                path = tmp / name / f"procgen-{game}"
                tiny_procgen_bundle(
                    seed=args.seed, action_agnostic=name == "action_agnostic"
                ).save_pretrained(path)
            elif name == "adaworld_zero_shot":  # the shipped bundles have zero finetuning steps
                from adaworld_gym.envs.shipped import shipped_bundle_dir

                path = shipped_bundle_dir(f"Procgen-{game}")
            else:
                skipped[game][name] = f"no bundle: --{name.replace('_', '-')} not given"
                continue
            flag = f"--{name.replace('_', '-')}"
            if (path / "bundle.json").is_file():
                _check_bundle_game(path, game, flag)
                paths[game][name] = str(path)
            elif given[name] and name in models:  # a folder the user named holds no bundle for the game
                raise SystemExit(
                    f"{flag} {given[name]}: no bundle for {game} at {path} (bundle.json missing); the folder holds "
                    f"one bundle per game as procgen-<game>/ (e.g. link {path} to an `adaworld adapt --out` "
                    "folder's bundle/)"
                )
            else:
                skipped[game][name] = f"no bundle at {path}" + ("" if given[name] else f" ({flag} not given)")
    return paths, skipped


def _check_bundle_game(path: Path, game: str, flag: str) -> None:
    """Refuse a bundle adapted to another game: its codebook holds that game's moves, so its plans mean others."""
    try:
        recorded = json.loads((path / "bundle.json").read_text()).get("meta", {}).get("env_id")
    except (ValueError, AttributeError):
        return  # a damaged bundle.json: load_bundle names the problem
    expected = f"AdaWorld/Procgen-{game}-v0"
    if isinstance(recorded, str) and recorded != expected:
        raise SystemExit(f"{flag}: the bundle at {path} was adapted to {recorded}, not {expected}")


def tiny_procgen_bundle(seed: int = 0, action_agnostic: bool = False, preset: str = "tiny") -> Any:
    """A random-weight bundle over Procgen's ``Discrete(15)``, for tests and the smoke preset."""
    from adaworld_gym.models.adapters import ActionCodebook
    from adaworld_gym.models.bundle import tiny_random_bundle

    bundle = tiny_random_bundle("discrete", seed=seed, preset=preset, action_agnostic=action_agnostic)
    generator = torch.Generator().manual_seed(seed)
    bundle.adapter = ActionCodebook(NUM_ACTIONS, bundle.adapter.latent_dim, generator=generator).eval()
    return bundle


def load_bundle(name: str, path: str) -> Any:
    from adaworld_gym.models.bundle import AdaWorldBundle

    try:
        bundle = AdaWorldBundle.from_pretrained(path, expected_action_space=spaces.Discrete(NUM_ACTIONS))
    except ValueError as e:
        raise SystemExit(f"--{name.replace('_', '-')}: {e}") from None
    check_bundle_kind(name, path, bundle)
    return bundle


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate_model(
    name: str,
    game: str,
    scenes: list[Scene],
    p: dict[str, Any],
    args: Args,
    bundle: Any = None,
    plugin: Any = None,
) -> list[dict[str, Any]]:
    """Run ``name`` on every scene and planner seed of ``game``; GIFs of the first ``p['gifs']`` episodes.

    ``bundle``: a learned model's bundle; ``plugin``: a loaded plug-in :class:`Dynamics` (``--dynamics``)."""
    dynamics: Any = plugin
    if name == "oracle":
        dynamics = SimulatorDynamics(functools.partial(make_env, game), workers=p["workers"])
    elif bundle is not None:
        dynamics = WorldModelDynamics(bundle, steps=p["denoise_steps"])
    env = make_env(game)
    rows: list[dict[str, Any]] = []
    try:
        total = len(scenes) * p["seeds"]
        with tqdm(total=total, desc=f"{game}/{name}", unit="episode") as bar:
            for i, scene in enumerate(scenes):
                for s in range(p["seeds"]):
                    seed = derived_seed(args.seed, PROCGEN_GAMES.index(game), i, s)
                    if dynamics is None:
                        planner: Any = RandomMoves(p["horizon"], seed)
                    else:
                        reseed(dynamics, seed)
                        planner = CEMPlanner(
                            dynamics,
                            COSTS[args.cost],
                            samples=p["samples"],
                            horizon=p["horizon"],
                            elites=p["elites"],
                            iterations=p["iterations"],
                            execute=EXECUTE,
                            allowed_actions=PROCGEN_MOVE_ACTIONS,
                            seed=seed,
                        )
                    episode = run_mpc_episode(
                        env,
                        planner,
                        None,
                        scene.goal_image,
                        max_steps=EPISODE_STEPS,
                        replan_every=EXECUTE,
                        state=scene.init_state,
                        seed=scene.reset_seed,
                        reset_options={"level": scene.level},
                        success_fn=procgen_success,
                    )
                    if len(rows) < p["gifs"]:
                        imagined = None
                        imaginer = imagining_dynamics(dynamics, bundle, p["denoise_steps"], seed + 1)
                        if imaginer is not None:
                            imagined = imagine_one_step(imaginer, episode.frames, episode.actions)
                        video = episode_video(scene.goal_image, episode.frames, imagined)
                        save_gif(video, args.out / f"{game}_{name}_scene{i:03d}_seed{s}.gif", fps=2)
                    rows.append(
                        {
                            "scene": i,
                            "level": scene.level,
                            "planner_seed": seed,
                            "success": episode.succeeded,
                            "steps": len(episode.actions),
                            "actions": [int(a) for a in episode.actions],
                            "seconds_per_replan": episode.seconds_per_replan,
                            "replans": len(episode.replan_seconds),
                        }
                    )
                    bar.set_postfix(success=sum(r["success"] for r in rows), refresh=False)
                    bar.update(1)
    finally:
        env.close()
        close_dynamics(dynamics)
    return rows


# Preset settings that change a model's numbers; finished episodes are reused only when these, the seed, the
# cost and the game's scenes all match.
PROTOCOL_SETTINGS = (
    "scenes", "seeds", "samples", "horizon", "elites", "iterations", "denoise_steps", "max_candidates",
    "bfs_budget", "rollouts",
)  # fmt: skip


def finished_models(
    directory: Path, protocol: dict[str, Any], bundles: dict[str, dict[str, str]]
) -> dict[str, dict[str, Any]]:
    """``found[game][model] = (per-episode rows, scene summaries, minutes, where it ran)`` for the models (plug-ins
    included) that finished every episode of a game in ``directory`` under ``protocol``; a learned model also needs the same
    bundle (``bundles[game][model]``). A missing, unreadable or other-protocol file gives nothing.
    """
    earlier = earlier_results(directory, protocol)
    if earlier is None:
        return {}
    meta = earlier["meta"]
    found: dict[str, dict[str, Any]] = {}
    for game, wanted in bundles.items():
        g = earlier.get(game)
        if not isinstance(g, dict) or not isinstance(g.get("per_episode"), dict):
            continue
        for name in (*MODELS, *earlier_plugins(meta)[0]):
            rows = g["per_episode"].get(name)
            if not rows or len(rows) != g.get("n_episodes"):
                continue
            recorded = meta.get("bundles", {}).get(game, {}).get(name)
            if name in LEARNED and skip_other_bundle(directory, f"{game}/{name}", recorded, wanted.get(name)):
                continue
            minutes = meta.get("model_minutes", {}).get(game, {}).get(name)
            ran_in = meta.get("reused", {}).get(game, {}).get(name, str(directory))  # keep where it ran
            found.setdefault(game, {})[name] = (rows, g.get("scenes"), minutes, ran_in)
    return found


def take_over(
    game: str,
    g: dict[str, Any],
    summaries: list[dict[str, Any]],
    finished: dict[Path, dict[str, dict[str, Any]]],
    out: Path,
    kept: dict[str, str],
    rerun: dict[str, str],
) -> None:
    """Fill a game's record ``g`` with the episodes earlier runs finished on these very scenes (``summaries``):
    built-in models from ``--out`` or a ``--reuse`` directory (one not selected now from ``--out`` only, so that
    a run of other models keeps it), and the ``kept`` plug-ins from ``--out`` (until those in ``rerun`` run)."""
    skipped = g["skipped"]
    for name in MODELS:
        done = {d: f[game][name] for d, f in finished.items() if name in f.get(game, {})}
        source = next((d for d, entry in done.items() if entry[1] == summaries), None)
        if name in skipped:
            # Not selected: what --out already holds for it stays (a run on other models rewrote it as null).
            if source != out or skipped[name] != "not selected (--models)":
                continue
            del skipped[name]
        if source is not None:
            g["rows"][name], _, g["minutes"][name], g["reused"][name] = done[source]
            copy_gifs(source, out, f"{game}_{name}_scene*.gif")
            print(f"[{game}/{name}] finished earlier under the same protocol: taken from {source}")
    for name in kept:
        entry = finished[out].get(game, {}).get(name)
        if entry is not None and entry[1] == summaries:
            g["rows"][name], _, g["minutes"][name], g["reused"][name] = entry
            what = (
                "running it again (its rows stay until the new ones are written)" if name in rerun else "kept"
            )
            print(f"[{game}/{name}] a plug-in finished earlier in --out: {what}")


def aggregate(rows: list[dict[str, Any]] | None) -> tuple[float | None, float | None]:
    """(success rate, seconds per replan averaged over all replans) of one model on one game."""
    if not rows:
        return None, None
    replans = sum(r["replans"] for r in rows)
    seconds = sum(r["seconds_per_replan"] * r["replans"] for r in rows) / replans if replans else None
    return float(np.mean([r["success"] for r in rows])), seconds


def markdown_table(results: dict[str, Any]) -> str:
    meta, games = results["meta"], results["meta"]["game_list"]
    head = "| model | " + " | ".join(games) + " | avg |"
    rule = "|---" * (len(games) + 2) + "|"
    rows = [
        "Success (level completed within 20 steps; k/n episodes, 95% Wilson interval over scenes: the planner "
        "seeds of one scene are not independent trials):",
        "",
        head,
        rule,
    ]
    names = list(results["average"]["success"])  # the built-in models, then any plug-ins
    for name in names:
        cells = []
        for game in games:
            rate, n = results[game]["success"][name], results[game]["n_episodes"]
            if rate is None:
                cells.append("—")
                continue
            k = int(round(rate * n))
            scenes = results.get("n_scenes", {}).get(game) or n
            low, high = wilson(rate * scenes, scenes)
            cells.append(f"{100 * rate:.1f}% ({k}/{n}, {100 * low:.0f}-{100 * high:.0f})")
        avg = results["average"]["success"][name]
        rows.append(
            f"| {name} | " + " | ".join(cells) + f" | {'—' if avg is None else f'{100 * avg:.1f}%'} |"
        )
    rows += ["", "Seconds per replan (planning only; world models vs the simulator):", "", head, rule]
    for name in names:
        cells = [results[g]["seconds_per_replan"][name] for g in games]
        avg = results["average"]["seconds_per_replan"][name]
        rows.append(
            f"| {name} | "
            + " | ".join("—" if c is None else f"{c:.2f}" for c in cells)
            + f" | {'—' if avg is None else f'{avg:.2f}'} |"
        )
    skipped = sorted({f"{name}: {r}" for g in games for name, r in results[g]["skipped"].items() if r})
    if skipped:
        rows += ["", "Skipped: " + "; ".join(skipped) + "."]
    rows += [
        "",
        "Paper (AdaWorld Table 3, success %, heist / jumper / maze / caveflyer / avg; oracle avg 80.67):",
    ]
    rows += [f"- {name}: " + " / ".join(f"{v:.2f}" for v in values) for name, values in PAPER.items()]
    searched = [g for g in games if results[g]["scene_search"]]  # a partial snapshot lacks the later games
    found = ", ".join(
        f"{g} {results[g]['scene_search']['found']}/{results[g]['scene_search']['tried']}" for g in searched
    )
    rows += [
        "",
        f"`{meta['preset']}` preset, seed {meta['seed']}: scenes kept / test levels tried: {found}; "
        f"{meta['seeds']} planner seed(s) per scene; CEM {meta['samples']} x {meta['horizon']}, top "
        f"{meta['elites']}, {meta['iterations']} iteration(s), execute {EXECUTE} then replan, cost "
        f"{meta['cost']} (best RGB cosine to the goal); {meta['denoise_steps']} denoising step(s) at "
        f"{meta['threads']} thread(s), oracle with "
        f"{meta['workers']} worker(s); {meta['wall_minutes']:.1f} min "
        + ("in this process." if meta.get("reused") else "in all."),
    ]
    if meta.get("reused"):  # the episodes taken over ran (and were timed) in their own processes
        by_source: dict[str, dict[str, list[str]]] = {}
        for game, models in meta["reused"].items():
            for name, source in models.items():
                by_source.setdefault(source, {}).setdefault(name, []).append(game)
        taken = "; ".join(
            ", ".join(
                name if len(g) == len(games) else f"{name} ({', '.join(g)})" for name, g in named.items()
            )
            + f" from `{source}`"
            for source, named in sorted(by_source.items())
        )
        rows.append(f"\nFinished earlier under the same protocol and scenes and taken over: {taken}.")
    return "\n".join(rows) + "\n"


def write_results(out: Path, results: dict[str, Any]) -> None:
    _common.write_results(out, results, markdown_table)


def _selection(text: str, known: tuple[str, ...], what: str) -> list[str]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        raise SystemExit(f"unknown or no {what} {', '.join(unknown)}; choose from {', '.join(known)}")
    return [x for x in known if x in chosen]


# ------------------------------------------------------------------------------------------------------ main
def main(args: Args) -> dict[str, Any]:
    if args.preset not in PRESETS:
        raise SystemExit(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    if args.cost not in COSTS:
        raise SystemExit(f"unknown cost {args.cost!r}; choose from {', '.join(COSTS)}")
    plugins = parse_plugins(args.dynamics, MODELS)
    models = select_models(args.models, MODELS, plugins)
    names = (*MODELS, *plugins)
    games = _selection(args.games, GAMES, "game(s)")
    p = dict(PRESETS[args.preset])
    if args.scenes < 0 or args.seeds < 0:
        # -1 was taken: find_scenes(n=-1) never reached n and kept every reachable level it tried.
        raise SystemExit(
            f"--scenes and --seeds must be >= 0 (0: the preset's), got {args.scenes}, {args.seeds}"
        )
    for key in ("scenes", "seeds"):
        if getattr(args, key):
            p[key] = getattr(args, key)
    if args.workers >= 0:
        p["workers"] = args.workers
    torch.set_num_threads(args.threads)
    start = time.time()
    args.out = Path(args.out)
    reuse_dirs = [args.out, *(Path(d) for d in args.reuse)]
    protocol = {k: p[k] for k in PROTOCOL_SETTINGS}
    protocol.update(preset=args.preset, seed=args.seed, cost=args.cost, episode_steps=EPISODE_STEPS)
    _common.check_reuse_dirs(args.out, args.reuse, protocol)
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {}
    per_game: dict[str, dict[str, Any]] = {}

    def snapshot(complete: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for game in games:
            g = per_game.get(game, {})
            rows = g.get("rows", {})
            stats = {name: aggregate(rows.get(name)) for name in names}
            out[game] = {
                "success": {name: stats[name][0] for name in names},
                "seconds_per_replan": {name: stats[name][1] for name in names},
                "skipped": {name: g.get("skipped", {}).get(name) for name in names},
                "n_episodes": len(g.get("scenes", [])) * p["seeds"],
                "scene_search": g.get("search"),
                "scenes": [s.summary() for s in g.get("scenes", [])],
                "per_episode": {name: rows.get(name) for name in names},
            }
        average: dict[str, dict[str, float | None]] = {"success": {}, "seconds_per_replan": {}}
        for key in average:
            for name in names:
                values = [out[g][key][name] for g in games]
                ok = complete and all(v is not None for v in values)
                average[key][name] = float(np.mean(values)) if ok else None
        return {
            **out,
            "average": average,
            "n_scenes": {game: len(per_game.get(game, {}).get("scenes", [])) for game in games},
            "meta": {
                **jsonable_args(args),
                **p,
                "game_list": games,
                "distribution_mode": DISTRIBUTION_MODE,
                "levels": list(TEST_LEVELS),
                "episode_steps": EPISODE_STEPS,
                "execute": EXECUTE,
                "actions": list(PROCGEN_MOVE_ACTIONS),
                "cost_fn": repr(COSTS[args.cost]),
                "scene_search": f"BFS merging identical frames ({p['bfs_budget']} simulated steps), then "
                f"{p['rollouts']} sticky random move sequences; completion in {MIN_REACH_STEPS}-{EPISODE_STEPS} "
                "moves; goal = frame before the completing step",
                "bundles": bundle_meta,
                "plugins": dict(targets),  # of the plug-in rows present (the last run's where both)
                "plugin_digests": dict(digests),
                "cpu_count": os.cpu_count(),
                "complete": complete,
                "wall_minutes": (time.time() - start) / 60,
                "model_minutes": {game: dict(per_game.get(game, {}).get("minutes", {})) for game in games},
                "reused": {
                    g: dict(per_game[g]["reused"]) for g in games if per_game.get(g, {}).get("reused")
                },
            },
        }

    loaded: dict[tuple[str, str], Any] = {}  # (game, plug-in) loaded and not yet run
    try:
        with tempfile.TemporaryDirectory(prefix="procgen_planning_") as tmp:
            paths, skipped = bundle_dirs(args, games, Path(tmp), models)
            # A bundle is identified by its path and a digest of its weights, so that a result is never taken
            # over for another model behind the same path.
            bundle_meta = {
                game: {name: f"{path} sha256:{bundle_digest(path)}" for name, path in paths[game].items()}
                for game in games
            }
            # Read once, before anything runs: earlier runs' finished episodes, the out directory's first. A model
            # not run now wants no bundle: what --out holds for it stays, whatever bundle flag is given.
            wanted = {game: {n: b for n, b in bm.items() if n in models} for game, bm in bundle_meta.items()}
            finished = {d: finished_models(d, protocol, wanted) for d in reuse_dirs}
            # Plug-ins are made for every game and checked before any work (those not run are closed at the
            # end, whatever happens). Those --out finished earlier are kept, game by game where their scenes are
            # this run's, until a plug-in given now replaces them (meta.reused says which rows are earlier ones).
            space = spaces.Discrete(NUM_ACTIONS)
            for game in games:
                for name, target in plugins.items():
                    loaded[game, name] = load_plugin(name, target, procgen_env_id(game), space)
            earlier = earlier_results(args.out, protocol)
            targets, digests = kept_plugins(
                earlier and earlier["meta"], {n for f in finished[args.out].values() for n in f}
            )
            names = (*names, *(n for n in targets if n not in names))
            # Every game's scenes first, and every finished model taken over before any runs, so that each
            # snapshot written below holds them: a snapshot without them would replace their only record in --out.
            for game in games:
                for name in MODELS:
                    if name not in models:
                        skipped[game].setdefault(name, "not selected (--models)")
                scenes, search = find_scenes(
                    game, p["scenes"], args.seed, p["max_candidates"], p["bfs_budget"], p["rollouts"]
                )
                print(
                    f"[{game}] {search['found']} scenes from {search['tried']} levels ({search['seconds']:.0f} s)"
                )
                g = per_game[game] = {"scenes": scenes, "search": search, "skipped": skipped[game]}
                g.update(rows={}, minutes={}, reused={})
                take_over(
                    game, g, [scene.summary() for scene in scenes], finished, args.out, targets, plugins
                )
                recorded = earlier["meta"].get("bundles", {}).get(game, {}) if earlier else {}
                for name in set(LEARNED) - set(models):  # kept rows keep the bundle they ran; none, none
                    bundle_meta[game].pop(name, None)
                    if g["rows"].get(name) is not None:
                        bundle_meta[game][name] = recorded.get(name)
            for game in games:
                g, scenes = per_game[game], per_game[game]["scenes"]
                to_run = [n for n in MODELS if n not in skipped[game] and n not in g["rows"]]
                bundles = {n: load_bundle(n, path) for n, path in paths[game].items() if n in to_run}
                for name in MODELS:
                    if name in skipped[game]:
                        print(f"[{game}/{name}] skipped: {skipped[game][name]}")
                    if name not in to_run:
                        continue
                    model_start = time.time()
                    g["rows"][name] = evaluate_model(name, game, scenes, p, args, bundles.get(name))
                    g["minutes"][name] = (time.time() - model_start) / 60
                    results = snapshot(complete=False)
                    write_results(args.out, results)
                for name in plugins:
                    model_start = time.time()
                    plugin = loaded.pop((game, name))
                    g["rows"][name] = evaluate_model(name, game, scenes, p, args, plugin=plugin)
                    g["minutes"][name] = (time.time() - model_start) / 60
                    targets[name], digests[name] = plugins[name], plugin.digest
                    g["reused"].pop(name, None)
                    results = snapshot(complete=False)
                    write_results(args.out, results)
            results = snapshot(complete=True)
            write_results(args.out, results)
    finally:
        for plugin in loaded.values():  # not run (an earlier model failed): closed all the same
            close_dynamics(plugin)
    print(markdown_table(results))
    return results


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_dataclass_args(Args, __doc__, argv, choices={"preset": PRESETS, "cost": COSTS})


if __name__ == "__main__":
    main(parse_args())
