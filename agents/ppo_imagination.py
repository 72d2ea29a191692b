"""PPO trained only inside the world model, evaluated in the real Procgen simulator.

For each game and seed, three policies are scored by their mean return on held-out real levels:

- ``imagination``: stable-baselines3 PPO trained in :class:`WorldModelVectorEnv` over the game's adapted bundle
  (reward and termination from the bundle's reward head); the real simulator is never stepped in training;
- ``real``: the same PPO trained on the real simulator for as many frames as the bundle's adapter was built from
  (``meta["labelled_transitions"]``: the labelled transitions of the adaptation set; with ``--starts real``, every
  frame of the adaptation collection). Not counted: the real play the reward head learned from (for the shipped
  heads 200-2,500 random-play episodes of up to 200 steps, ``assets/bundles/rewards.json``) and the world model's
  pretraining data, so the imagination agent has had more real frames behind it than this agent gets;
- ``random``: uniform random actions.

The run also measures ``vector_speedup_n16``: frames/s of one 16-row vector env over 16 single envs stepped in
turn, same bundle and denoising steps.

    python -m agents.ppo_imagination --preset cpu --seeds 0 1 --out out/imagination

writes ``DIR/results.json`` (the shape of ``benchmarks/results/imagination.json``; rewritten after every game),
``DIR/results.md`` and tensorboard logs under ``DIR/tb``. Each finished game also leaves
``DIR/games/procgen-<game>.json``; a rerun into the same ``DIR`` takes those over (``"reused"``) when the bundle,
preset settings and seeds match and refuses a record of other ones, so a killed run resumes with the numbers one
run would give. ``wall_seconds`` times this invocation, ``game_minutes`` each game's own run.

Bundles come from ``--bundles DIR`` (``DIR/procgen-<game>``; default: the shipped ones); a game without a bundle or
reward head is skipped and listed under ``"skipped"``, so by default every game whose bundle pays rewards is
tried.

Imagined episodes start from the bundle's start contexts (``--starts bundle``: first frames of real levels) or,
with ``--starts real``, from every k-frame window of the real random-play episodes the bundle's adapter was
built from (recollected with the bundle's recipe and seed), so imagination branches off states met anywhere in
a level, as Dyna and DIAMOND do. For a bundle adapted with ``adaworld adapt`` these are the frames it was
built from; the real-env agent gets as many as the larger of the two counts. ``--start-data DIR`` takes the
windows of other real episodes instead (e.g. those a finetuned world model was built from).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from adaworld_gym.cli import positive_int, seed_int
from adaworld_gym.data.episodes import atomic_write_bytes
from adaworld_gym.envs.shipped import shipped_bundles_root
from adaworld_gym.envs.world_model_env import SB3VecEnvAdapter, WorldModelVectorEnv
from adaworld_gym.models.bundle import AdaWorldBundle
from adaworld_gym.sims.games import PROCGEN_GAMES, check_game
from adaworld_gym.sims.procgen import NUM_ACTIONS, ProcgenEnv
from adaworld_gym.training.adapt import collect_adaptation_data, read_episodes
from benchmarks._common import machine_info, make_out_dir, read_json, write_results
from benchmarks.env_speed import vector_speedup


@dataclass(frozen=True)
class Preset:
    imagination_steps: int  # PPO timesteps inside the world model, per seed
    num_envs: int  # imagined rows per batched step
    denoise_steps: int
    horizon: int  # imagined episode length before truncation
    eval_episodes: int  # real-env episodes per policy and seed
    eval_max_steps: int  # real episodes are cut here (Procgen's own limit is 1000)
    n_steps: int  # PPO rollout length per env
    speed_steps: int  # vector steps timed for the speedup figure
    # "bundle": the bundle's start contexts; "real": windows of its adaptation episodes
    starts: str = "bundle"
    start_data: str | None = None  # with starts="real": windows of these episodes instead


PRESETS: dict[str, Preset] = {
    # 2-core CPU: the small world model steps at a few frames/s, so imagination gets ~10k frames per seed.
    "cpu": Preset(10_000, 16, 1, 50, 20, 200, 64, 4),
    "full": Preset(1_000_000, 64, 3, 200, 100, 1000, 256, 16),
    "smoke": Preset(64, 4, 1, 8, 2, 10, 8, 2),
}


def ppo(env: Any, seed: int, n_steps: int, num_envs: int, tb_dir: Path | None) -> Any:
    from stable_baselines3 import PPO

    return PPO(
        "CnnPolicy",
        env,
        n_steps=n_steps,
        batch_size=min(256, n_steps * num_envs),
        n_epochs=3,
        learning_rate=5e-4,
        ent_coef=0.01,
        gamma=0.99,
        gae_lambda=0.95,
        seed=seed,
        device="cpu",
        tensorboard_log=None if tb_dir is None else str(tb_dir),
        verbose=0,
    )


def evaluate(
    game: str, policy: Any | None, episodes: int, max_steps: int, seed: int
) -> tuple[float, list[float]]:
    """Mean return over ``episodes`` held-out real levels; ``policy=None`` acts uniformly at random."""
    env = ProcgenEnv(game, levels="test")
    rng = np.random.default_rng(seed)
    returns = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed * 10_000 + episode)
            total = 0.0
            for _ in range(max_steps):
                if policy is None:
                    action = int(rng.integers(env.action_space.n))
                else:
                    action = int(policy.predict(obs, deterministic=False)[0])
                obs, reward, terminated, truncated, _ = env.step(action)
                total += reward
                if terminated or truncated:
                    break
            returns.append(total)
    finally:
        env.close()
    return float(np.mean(returns)), returns


def episode_windows(episodes: Sequence[Any], k: int) -> tuple[np.ndarray, int]:
    """Every full k-frame window of ``episodes`` (uint8 ``[N, k, 64, 64, 3]``) and their transition count.

    Collected episodes end at a game's end; a Procgen episode ending in a termination stores the next try's first
    frame last (``meta["terminal_frame_is_reset"]``), which is left out, so no window spans two tries.
    """

    def playable(e: Any) -> np.ndarray:
        ends_in_reset = e.meta.get("terminal_frame_is_reset") and len(e.terminations) and e.terminations[-1]
        return e.frames[:-1] if ends_in_reset else e.frames

    windows = [
        np.lib.stride_tricks.sliding_window_view(f, k, axis=0).transpose(0, 4, 1, 2, 3)
        for f in map(playable, episodes)
        if len(f) >= k
    ]
    if not windows:
        raise ValueError(f"no episode holds the {k} frames a start context needs")
    return np.ascontiguousarray(np.concatenate(windows)), sum(e.num_transitions for e in episodes)


def real_start_contexts(
    game: str, bundle: AdaWorldBundle, root: Path, data: Path | None = None
) -> tuple[np.ndarray, int]:
    """Start windows from real episodes, and the real frames those episodes hold.

    From ``data`` (episode directories) if given, else from the bundle's adaptation episodes, recollected with
    the recipe of ``adaworld adapt`` (uniform random play until every action has ``labelled_transitions / n``
    transitions) and the bundle's seed under ``root``.
    """
    if data is None:
        n_actions = int(bundle.adapter.action_space.n)
        per_action = int(bundle.meta["labelled_transitions"]) // n_actions
        env_id = bundle.meta.get("env_id", f"AdaWorld/Procgen-{game}-v0")
        data = collect_adaptation_data(
            env_id, root, samples_per_action=per_action, seed=int(bundle.meta.get("seed", 0))
        )
    return episode_windows(read_episodes(data), bundle.world_model.config.num_history)


def run_game(game: str, bundle: AdaWorldBundle, p: Preset, seeds: Sequence[int], out: Path) -> dict[str, Any]:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecMonitor

    real_frames = int(bundle.meta.get("labelled_transitions", 0))
    if real_frames <= 0:
        raise ValueError(
            f"procgen-{game} bundle: meta['labelled_transitions'] is missing (adaworld adapt records it); "
            "the real-env baseline is trained on that many frames"
        )
    start_contexts = len(bundle.initial_frames)
    if p.starts == "real":
        data = None if p.start_data is None else Path(p.start_data.format(game=game))
        contexts, collected = real_start_contexts(game, bundle, out / "starts", data)
        bundle = dataclasses.replace(bundle, initial_frames=contexts)
        start_contexts, real_frames = len(contexts), max(real_frames, collected)
    rows: dict[str, list[float]] = {"imagination": [], "real": [], "random": []}
    real_seen, imagination_seen = (
        [],
        [],
    )  # SB3 collects whole rollouts: each agent may see a little more than asked
    for seed in seeds:
        venv = WorldModelVectorEnv(
            bundle, num_envs=p.num_envs, denoise_steps=p.denoise_steps, max_episode_steps=p.horizon
        )
        venv.reset(seed=seed)
        # VecMonitor logs the imagined episodes' returns (rollout/ep_rew_mean) to tensorboard.
        agent = ppo(VecMonitor(SB3VecEnvAdapter(venv)), seed, p.n_steps, p.num_envs, out / "tb" / game)
        agent.learn(p.imagination_steps, tb_log_name=f"imagination_seed{seed}")
        imagination_seen.append(int(agent.num_timesteps))
        rows["imagination"].append(evaluate(game, agent, p.eval_episodes, p.eval_max_steps, seed)[0])

        real_env = make_vec_env(lambda: ProcgenEnv(game), n_envs=p.num_envs, seed=seed)
        try:
            agent = ppo(real_env, seed, p.n_steps, p.num_envs, out / "tb" / game)
            agent.learn(real_frames, tb_log_name=f"real_seed{seed}")
        finally:  # Procgen envs are closed, not left to the garbage collector (see test_env_and_agent_user_paths)
            real_env.close()
        real_seen.append(int(agent.num_timesteps))
        rows["real"].append(evaluate(game, agent, p.eval_episodes, p.eval_max_steps, seed)[0])
        rows["random"].append(evaluate(game, None, p.eval_episodes, p.eval_max_steps, seed)[0])
    result: dict[str, Any] = {name: float(np.mean(v)) for name, v in rows.items()}
    # Sample standard deviation over seeds (ddof=1), as the adaptation benchmark reports it.
    result.update(
        {f"{name}_std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for name, v in rows.items()}
    )
    result.update(
        seeds=len(seeds),
        per_seed=rows,
        real_frames=real_frames,
        real_frames_seen=max(real_seen),
        start_contexts=start_contexts,
        imagination_frames=p.imagination_steps,  # asked; SB3 runs whole rollouts, so it sees a little more
        imagination_frames_seen=max(imagination_seen),
    )
    return result


def markdown_table(results: dict[str, Any]) -> str:
    lines = [
        f"vector env speedup at N=16: **{results['vector_speedup_n16']:.2f}x**",
        "",
        "| game | imagination PPO | real PPO | random | seeds | real frames (seen) |",
        "|---|---|---|---|---|---|",
    ]
    for game, r in results["ppo"].items():
        cells = [f"{r[k]:.2f} ± {r[k + '_std']:.2f}" for k in ("imagination", "real", "random")]
        frames = f"{r.get('real_frames', '?')} ({r.get('real_frames_seen', '?')})"
        lines.append(f"| {game} | {' | '.join(cells)} | {r['seeds']} | {frames} |")
    if results.get("skipped"):
        lines += ["", "skipped: " + "; ".join(f"{g} ({why})" for g, why in results["skipped"].items())]
    if results.get("reused"):  # played (and timed) by an earlier invocation into the same directory
        lines += [
            "",
            "finished earlier with the same bundle, settings and seeds: " + ", ".join(results["reused"]),
        ]
    return "\n".join(lines) + "\n"


def check_bundles_folder(folder: Path) -> None:
    """``--bundles`` is a folder of ``procgen-<game>`` bundles; say so for a missing folder or for one bundle (or an
    ``adaworld adapt`` output) given in its place, before anything runs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"--bundles {folder}: not found (a folder holding procgen-<game>/ bundles)")
    for bundle in (folder, folder / "bundle"):
        if (bundle / "bundle.json").is_file():
            raise SystemExit(
                f"--bundles {folder} is one bundle; it takes a folder of them, one per game, named "
                f"procgen-<game> (e.g. mkdir B && ln -s {bundle.resolve()} B/procgen-<game>; then --bundles B)"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument(
        "--games",
        nargs="+",
        default=list(PROCGEN_GAMES),
        help="default: all 16 (those without a head are skipped)",
    )
    parser.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1], help="one PPO run per seed")
    parser.add_argument(
        "--bundles", type=Path, default=None, help="holds procgen-<game>/ (default: the shipped bundles)"
    )
    parser.add_argument(
        "--imagination-steps",
        type=int,
        default=0,
        help="PPO timesteps in the world model per seed (0: the preset's)",
    )
    parser.add_argument(
        "--denoise-steps", type=int, default=0, help="sampler steps per imagined frame (0: the preset's)"
    )
    parser.add_argument(
        "--starts",
        choices=("bundle", "real"),
        default="bundle",
        help="imagined episodes start from the bundle's start contexts or from windows of its real adaptation episodes",
    )
    parser.add_argument(
        "--start-data",
        default=None,
        help="with --starts real: windows of the episodes under this directory ({game} is replaced by the game)",
    )
    parser.add_argument(
        "--horizon", type=int, default=0, help="imagined episode length before truncation (0: the preset's)"
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    parser.add_argument(
        "--out", type=Path, required=True, help="results directory (results.json, tensorboard runs)"
    )
    args = parser.parse_args(argv)
    args.bundles = args.bundles or shipped_bundles_root()
    torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    if args.imagination_steps < 0:
        raise SystemExit(f"--imagination-steps must be >= 0, got {args.imagination_steps}")
    if args.imagination_steps:
        p = dataclasses.replace(p, imagination_steps=args.imagination_steps)
    if not 0 <= args.denoise_steps <= 5:
        raise SystemExit(f"--denoise-steps must be in 1..5 (0: the preset's), got {args.denoise_steps}")
    if args.denoise_steps:
        p = dataclasses.replace(p, denoise_steps=args.denoise_steps)
    if args.horizon < 0:
        raise SystemExit(f"--horizon must be >= 0, got {args.horizon}")
    if args.horizon:
        p = dataclasses.replace(p, horizon=args.horizon)
    if args.start_data is not None and args.starts != "real":
        raise SystemExit("--start-data needs --starts real")
    p = dataclasses.replace(p, starts=args.starts, start_data=args.start_data)
    games = check_selection(args.games, args.seeds, args.start_data)
    check_bundles_folder(args.bundles)
    make_out_dir(args.out)

    start = time.perf_counter()
    results: dict[str, Any] = {"preset": args.preset, "seeds": args.seeds, "ppo": {}, "skipped": {}}
    results["settings"] = dataclasses.asdict(p)
    # What the timings (vector_speed, game_minutes) were measured with: they say nothing without the machine.
    results.update(reused=[], game_minutes={}, threads=args.threads, machine=machine_info())
    # A game finished earlier in --out is taken over; a record of other settings stops the run before any
    # game is played (not after hours of them).
    records = {game: args.out / "games" / f"procgen-{game}.json" for game in games}
    provenances = {
        game: game_provenance(game, args.bundles / f"procgen-{game}", p, args.seeds)
        for game in games
        if (args.bundles / f"procgen-{game}" / "bundle.json").is_file()
    }
    finished = {game: finished_game(records[game], prov) for game, prov in provenances.items()}
    for game in provenances:  # checked before any game runs, not when its turn comes hours later
        meta = read_json(args.bundles / f"procgen-{game}" / "bundle.json", "bundle file").get("meta", {})
        if finished[game] is None and not int(meta.get("labelled_transitions", 0)) > 0:
            raise SystemExit(
                f"procgen-{game} bundle: meta['labelled_transitions'] is missing (adaworld adapt records it); "
                "the real-env baseline is trained on that many frames"
            )
    speed = None
    for game in games:
        bundle_dir = args.bundles / f"procgen-{game}"
        if not (bundle_dir / "bundle.json").is_file():
            results["skipped"][game] = f"no bundle at {bundle_dir}"
            continue
        bundle = AdaWorldBundle.from_pretrained(
            bundle_dir,
            expected_action_space=spaces.Discrete(NUM_ACTIONS),  # no Procgen env opened for it
        )
        if bundle.reward_head is None:
            results["skipped"][game] = "bundle has no reward head (adaworld train-reward)"
            continue
        if speed is None:
            speed = vector_speedup(bundle, 16, p.speed_steps, p.denoise_steps, args.seeds[0])
            results["vector_speedup_n16"] = speed["speedup"]
            results["vector_speed"] = speed
        record = finished[game]
        if record is not None:  # every seed reseeds PPO and the envs: the numbers one run would give
            print(f"[{game}] finished earlier with the same bundle and settings: taken from {records[game]}")
            results["reused"].append(game)
        else:
            # A killed run's partial curves would take the names this run's get (imagination_seed0_1, ...).
            shutil.rmtree(args.out / "tb" / game, ignore_errors=True)
            game_start = time.perf_counter()
            row = run_game(game, bundle, p, args.seeds, args.out)
            record = {"provenance": provenances[game], "result": row}
            record["minutes"] = (time.perf_counter() - game_start) / 60
            records[game].parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(records[game], json.dumps(record, indent=1).encode())
        results["ppo"][game], results["game_minutes"][game] = record["result"], record.get("minutes")
        # After every game, so that a killed run keeps what it finished.
        results["wall_seconds"] = time.perf_counter() - start
        write_results(args.out, {**results, "complete": False}, markdown_table)
    if speed is None:
        raise SystemExit(f"no usable bundle under {args.bundles}: {results['skipped']}")
    results["wall_seconds"] = time.perf_counter() - start  # this invocation's; game_minutes: each game's own
    results["complete"] = True
    write_results(args.out, results, markdown_table)
    print(markdown_table(results))
    return results


def check_selection(games: list[str], seeds: list[int], start_data: str | None) -> list[str]:
    """The games, checked with the seeds and ``--start-data`` before any work: exits naming what is wrong."""
    try:
        checked = [check_game(g) for g in games]
    except ValueError as e:
        raise SystemExit(f"--games: {e}") from None
    for flag, values in (("--games", checked), ("--seeds", seeds)):
        if len(set(values)) != len(values):  # a repeated seed would pass for an independent run that agrees
            raise SystemExit(f"{flag}: each at most once, got {' '.join(map(str, values))}")
    for game in checked if start_data is not None else ():
        try:
            where = Path(start_data.format(game=game))
        except (KeyError, IndexError, ValueError, AttributeError):
            raise SystemExit(f"--start-data {start_data!r}: the only placeholder is {{game}}") from None
        if not where.is_dir():
            raise SystemExit(f"--start-data: no episode directory {where} (for {game})")
    return checked


def game_provenance(game: str, bundle_dir: Path, p: Preset, seeds: Sequence[int]) -> dict[str, Any]:
    """What a game's row depends on: the bundle's weights (not its path, which may be spelled another way),
    the preset settings, the seeds and, with ``--start-data``, the episodes it starts from."""
    from adaworld_gym.data.clips import episodes_digest
    from adaworld_gym.models.bundle import bundle_digest

    provenance = {
        "game": game,
        "bundle": f"sha256:{bundle_digest(bundle_dir)}",
        "settings": dataclasses.asdict(p),
        "seeds": list(seeds),
    }
    if p.start_data is not None:  # the path alone would not notice episodes recollected under it
        provenance["start_data"] = f"sha256:{episodes_digest(p.start_data.format(game=game))}"
    return json.loads(json.dumps(provenance))


# What markdown_table and the benchmark's readers take from a game's row.
ROW_KEYS = ("imagination", "real", "random", "imagination_std", "real_std", "random_std", "seeds")


def finished_game(path: Path, provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a game finished under ``provenance`` at ``path``, None if there is none; exits naming the
    file if it is unreadable, incomplete or was computed with another bundle, settings or seeds."""
    if not path.is_file():
        return None
    record = read_json(path, "game record")
    if not isinstance(record, dict) or record.get("provenance") != provenance:
        raise SystemExit(
            f"{path} was computed with another bundle, preset settings or seeds: use a new --out, or delete "
            "it to play that game again"
        )
    row = record.get("result")
    missing = [key for key in ROW_KEYS if not isinstance(row, dict) or key not in row]
    if missing:
        raise SystemExit(f"{path} is not a finished game's record (lacks {', '.join(missing)}): delete it")
    return record


if __name__ == "__main__":
    main()
