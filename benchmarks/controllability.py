"""How much does a model's next frame depend on the action? Adapted world models against the real simulator.

From the same real states, every model runs each of a few fixed actions (Procgen: the four moves LEFT, DOWN, UP,
RIGHT; RobosuitePush, ``push``: a unit step of the end effector along +-x, +-y, +-z) for ``--horizon`` steps through the one ``Dynamics`` interface the planners use; the action spread at step h is the
mean RMS pixel distance ([0, 255]) between the frames that two different moves give, over all pairs of moves and
all states. The real simulator's spread is what a planner could exploit; a model's spread over the real one
(``ratio``) says how much of that its imagined frames keep. Every model sees the same states, context frames and
diffusion seeds (common noise across the moves, as in planning), so its spread comes from the actions alone.

Spread says how much the moves change the imagined frames, not whether they change them the right way: the
*move agreement* (:func:`move_agreement`) is the mean cosine between the imagined and the real frame difference
of every pair of moves. Each world model is also driven by its LAM's latent actions of the real frames
(``true_z``: what a perfect adapter could hand it), with the LAM decoder's own first step beside it, which tells
where the direction of a move is lost: in the latent, the world model or the adapter. ``--guidance`` applies
classifier-free guidance on z to every learned model.

    python -m benchmarks.controllability --bundles shipped=adaworld_gym/assets/bundles \\
        adaworld=out/planning_bundles_s16/adaworld twin=out/planning_bundles_s16/action_agnostic \\
        --out out/controllability

States: Procgen test levels (easy mode), reset with seeds drawn from ``--seed``, then 4-19 uniformly random
moves; push: a reset, then 0-5 random actions (a 15-step episode has room for the 5 measured steps). The last
frames before the state are the learned models' context. A bundle directory holds ``procgen-<game>/`` and
``robosuite-push/`` bundles (the shipped layout). Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from tqdm.auto import tqdm

from adaworld_gym.planning import PROCGEN_MOVE_ACTIONS, SimulatorDynamics, WorldModelDynamics
from adaworld_gym.sims.games import PROCGEN_GAMES, check_game
from adaworld_gym.sims.procgen import NUM_ACTIONS, ProcgenEnv
from benchmarks import _common


@dataclass
class Args:
    # NAME=DIR pairs; DIR holds procgen-<game>/ adapted bundles (the shipped ones: adaworld_gym/assets/bundles)
    bundles: list[str] = field(default_factory=lambda: ["shipped=adaworld_gym/assets/bundles"])
    games: str = "chaser,heist,jumper,maze,caveflyer,push"  # comma list: Procgen games and/or push
    states: int = 16  # per game
    horizon: int = 5  # steps of the same move (the Procgen planner executes 5 before replanning)
    denoise_steps: int = 1  # Euler steps per predicted frame (planning uses 1)
    guidance: float = 1.0  # classifier-free guidance on z for the learned models (1: off, as in planning)
    seed: int = 0
    threads: int = 1
    out: Path = Path("out/controllability")


def action_spread(frames: np.ndarray) -> np.ndarray:
    """Mean over pairs of candidates of the RMS pixel distance of their frames, per step: ``[A, H, ...] -> [H]``."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim < 3 or len(frames) < 2:
        raise ValueError(f"need frames [A>=2, H, ...] for at least two actions, got shape {frames.shape}")
    pairs = itertools.combinations(range(len(frames)), 2)
    axes = tuple(range(1, frames.ndim - 1))  # per step: over everything but the action and step axes
    return np.mean([np.sqrt(((frames[a] - frames[b]) ** 2).mean(axis=axes)) for a, b in pairs], axis=0)


PUSH_MOVES = np.concatenate([np.eye(3), -np.eye(3)]).astype(np.float32)
PUSH_MOVES = np.hstack([PUSH_MOVES, np.zeros((6, 1), np.float32)])  # gripper still


@dataclass(frozen=True)
class EnvSpec:
    """What the measurement needs to know about one env."""

    bundle_dir: str  # its bundle's folder under a bundles directory
    action_space: spaces.Space
    make_env: Any  # picklable env factory
    moves: np.ndarray  # the compared actions [A, ...]
    warmup: tuple[int, int]  # random actions before a state: [low, high)

    def random_action(self, rng: np.random.Generator) -> Any:
        if isinstance(self.action_space, spaces.Discrete):
            return int(rng.choice(PROCGEN_MOVE_ACTIONS))
        return rng.uniform(-1, 1, self.action_space.shape).astype(np.float32)


def env_spec(name: str) -> EnvSpec:
    if name == "push":
        from adaworld_gym.plan import PUSH_ENV_ID, make_env, push_action_space

        factory = functools.partial(make_env, PUSH_ENV_ID)
        return EnvSpec("robosuite-push", push_action_space(), factory, PUSH_MOVES, (0, 6))
    game = check_game(name)
    factory = functools.partial(ProcgenEnv, game, levels="test")
    moves = np.array(PROCGEN_MOVE_ACTIONS)
    return EnvSpec(f"procgen-{game}", spaces.Discrete(NUM_ACTIONS), factory, moves, (4, 20))


def real_states(spec: EnvSpec, n: int, seed: int, context: int) -> list[tuple[np.ndarray, Any]]:
    """``n`` (context frames uint8 [<=context, 64, 64, 3], simulator state) pairs."""
    env = spec.make_env()
    rng = np.random.default_rng(seed)
    out = []
    try:
        for _ in range(n):
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            frames = [obs]
            for _ in range(int(rng.integers(*spec.warmup))):
                obs, _, terminated, truncated, _ = env.step(spec.random_action(rng))
                frames.append(obs)
                if terminated or truncated:  # start a fresh level rather than stand on a finished one
                    obs, _ = env.reset(seed=int(rng.integers(2**31)))
                    frames = [obs]
            # As in closed-loop planning: the frames seen so far, fewer than ``context`` just after a reset.
            out.append((np.stack(frames[-context:]), env.unwrapped.get_state()))
    finally:
        env.close()
    return out


def move_rollouts(
    dynamics: Any, states: list[tuple[np.ndarray, Any]], moves: np.ndarray, horizon: int
) -> np.ndarray:
    """Frames uint8 [S, A, H, 64, 64, 3] of one dynamics: from each state, each move held for ``horizon`` steps."""
    moves = np.repeat(np.asarray(moves)[:, None], horizon, axis=1)
    out = []
    for context, state in states:
        batch_context = np.repeat(context[None], len(moves), axis=0)
        out.append(dynamics.rollout(batch_context, moves, state=state))
    return np.stack(out)


def spreads(rollouts: np.ndarray) -> np.ndarray:
    """Mean action spread per step over states: ``[S, A, H, ...] -> [H]``."""
    return np.mean([action_spread(per_state) for per_state in rollouts], axis=0)


def move_agreement(model: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per step, how alike the imagined and the real difference between two moves are: ``[S, A, H, ...] x2 -> [H]``.

    For every state and pair of moves (a, b), the cosine between the imagined frame difference (a minus b) and the
    real one, averaged over states and pairs: 1 when every imagined pair differs the way the real pair does (at any
    scale), 0 when the differences are unrelated or the imagined frames do not differ at all, negative when moves
    are imagined the wrong way round. Spread says how far apart the imagined frames of two moves lie; agreement
    says whether they lie apart the way the real ones do, which is what a planner ranking candidates needs.
    """
    if model.shape != real.shape:
        raise ValueError(f"model frames {model.shape} and real frames {real.shape} differ in shape")
    s, a, h = model.shape[:3]
    if a < 2:
        raise ValueError(f"need at least two moves, got {a}")
    first, second = np.triu_indices(a, k=1)

    def unit_differences(frames: np.ndarray) -> np.ndarray:
        x = frames.astype(np.float32).reshape(s, a, h, -1)
        d = x[:, first] - x[:, second]  # [S, pairs, H, D]
        norm = np.linalg.norm(d, axis=-1, keepdims=True)
        return np.where(norm > 1e-6, d / np.maximum(norm, 1e-6), 0.0)

    cos = (unit_differences(model) * unit_differences(real)).sum(axis=-1)  # [S, pairs, H]
    return cos.mean(axis=(0, 1))


def true_latent_rollouts(
    bundle: Any,
    states: list[tuple[np.ndarray, Any]],
    real: np.ndarray,
    steps: int,
    seed: int,
    guidance: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's world model driven by its LAM's latent actions of the real frames of each move, [S, A, H, ...],
    and the LAM decoder's own first step from the same latents, [S, A, 1, ...].

    What a perfect adapter could give: the adapter's only job is to produce these latents from the action. The
    decoder's step tells whether what is missing was lost in the latent or in the world model. Common noise over
    the moves, as in :func:`move_rollouts`.
    """
    from adaworld_gym.training.world_model import label_actions

    model, k = bundle.world_model, bundle.world_model.config.num_history
    out, decoded = np.empty_like(real), np.empty_like(real[:, :, :1])
    moves, horizon = real.shape[1:3]
    for i, (context, _) in enumerate(states):
        seq = np.concatenate([np.repeat(context[None, -1:], moves, axis=0), real[i]], axis=1)
        frames_t, frames_t1 = (x.reshape(-1, *seq.shape[2:]) for x in (seq[:, :-1], seq[:, 1:]))
        z = label_actions(bundle.lam, frames_t, frames_t1).reshape(moves, horizon, -1)
        history = np.ascontiguousarray(np.repeat(context[None, -k:], moves, axis=0))
        generators = [torch.Generator().manual_seed(seed) for _ in range(moves)]
        out[i] = model.rollout(history, z, steps=steps, generator=generators, guidance_scale=guidance)
        decoded[i, :, 0] = bundle.lam.decode(np.ascontiguousarray(seq[:, 0]), z[:, 0])
    return out, decoded


def _first_last(x: list[float], fmt: str = ".2f") -> str:
    """A per-step series as "after 1 step / after the horizon"."""
    return f"{x[0]:{fmt}} / {x[-1]:{fmt}}"


def _game_table(intro: str, columns: list[str], games: list[str], cells: Any) -> list[str]:
    """An intro line and a markdown table with one row per game; ``cells(game)`` gives the row's cells."""
    rows = [intro, "", "| game | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    return rows + [f"| {game} | " + " | ".join(cells(game)) + " |" for game in games]


def markdown_table(results: dict[str, Any]) -> str:
    meta, games = results["meta"], results["meta"]["game_list"]
    names, horizon = meta["models"], meta["horizon"]

    def spread_cells(game: str) -> list[str]:
        real = results[game]["real"]
        cells = [_first_last(real)]
        for name in names:
            s = results[game].get(name)
            if s is None:
                cells.append("—")
                continue
            ratios = " / ".join(
                f"{m / r:.0%}" if r > 0 else "—" for m, r in ((s[0], real[0]), (s[-1], real[-1]))
            )
            cells.append(f"{_first_last(s)} ({ratios})")
        return cells

    def agreement_cells(game: str) -> list[str]:
        agreement = results[game].get("agreement", {})
        return [_first_last(agreement[n]) if n in agreement else "—" for n in names]

    def true_z_cells(game: str) -> list[str]:
        real, true_z = results[game]["real"], results[game].get("true_z", {})
        cells = []
        for n in names:
            if n not in true_z:
                cells.append("—")
                continue
            sp, dec = true_z[n]["spread"], true_z[n]["lam_decoder_agreement"]
            spread = f"{sp[0] / real[0]:.0%} / {sp[-1] / real[-1]:.0%}" if min(real[0], real[-1]) > 0 else "—"
            cells.append(f"{spread}; {_first_last(true_z[n]['agreement'])} ({dec:.2f})")
        return cells

    rows = _game_table(
        f"Action spread after 1 and {horizon} steps of the same move (mean RMS pixel distance between two "
        "moves' frames, [0, 255]); in brackets the fraction of the real simulator's spread:",
        ["real", *names],
        games,
        spread_cells,
    )
    rows += [""] + _game_table(
        f"Move agreement after 1 and {horizon} steps: the mean cosine, over states and pairs of moves, between "
        "the imagined and the real frame difference of the two moves (1: every pair differs the real way; 0: "
        "unrelated or no difference):",
        names,
        games,
        agreement_cells,
    )
    rows += [""] + _game_table(
        "The same world models driven by their LAM's latent actions of the real frames (what a perfect adapter "
        "could give; bundles without a LAM, and twins, have none), spread (fraction of real) and agreement after 1 "
        f"and {horizon} steps; in brackets the LAM decoder's own agreement at the first step:",
        names,
        games,
        true_z_cells,
    )
    skipped = [f"{g}/{n}: {why}" for g in games for n, why in results[g].get("skipped", {}).items()]
    if skipped:
        rows += ["", "Skipped: " + "; ".join(skipped) + "."]
    rows += [
        "",
        f"{meta['states']} states per game (test levels, easy), {meta['denoise_steps']} denoising step(s), "
        f"guidance {meta.get('guidance', 1.0):g}, seed {meta['seed']}; {meta['wall_minutes']:.1f} min.",
    ]
    return "\n".join(rows) + "\n"


def main(args: Args) -> dict[str, Any]:
    from adaworld_gym.models.bundle import AdaWorldBundle

    models = _common.parse_bundles(args.bundles)
    # A game's row holds these beside one list per model: a model of that name would overwrite them (or be
    # overwritten) after the whole measurement.
    taken = sorted(set(models) & {"agreement", "true_z", "skipped"})
    if taken:
        raise SystemExit(f"--bundles: the name {taken[0]!r} is taken (a key of each game's results)")
    names = [g.strip() for g in args.games.split(",") if g.strip()]
    if not names or args.states < 1 or args.horizon < 1:
        raise SystemExit("need at least one game, --states >= 1 and --horizon >= 1")
    try:
        specs = {name: env_spec(name) for name in names}
    except ValueError as e:  # an unknown game: the message lists the known ones
        raise SystemExit(f"--games: {e}") from None
    games = list(specs)
    _common.make_out_dir(Path(args.out))
    torch.set_num_threads(args.threads)
    start = time.time()
    results: dict[str, Any] = {}
    for game, spec in tqdm(specs.items(), desc="envs", unit="env"):
        loaded, skipped = {}, {}
        for name, root in models.items():
            path = root / spec.bundle_dir
            if not (path / "bundle.json").is_file():
                skipped[name] = f"no bundle at {path}"
                continue
            loaded[name] = AdaWorldBundle.from_pretrained(path, expected_action_space=spec.action_space)
        context = max([b.world_model.config.num_history for b in loaded.values()], default=1)
        index = PROCGEN_GAMES.index(game) if game in PROCGEN_GAMES else len(PROCGEN_GAMES)
        states = real_states(spec, args.states, _common.derived_seed(args.seed, index), context)
        with SimulatorDynamics(spec.make_env, workers=0) as sim:
            real = move_rollouts(sim, states, spec.moves, args.horizon)
        row: dict[str, Any] = {"real": spreads(real).tolist(), "agreement": {}, "true_z": {}}
        for name, bundle in loaded.items():
            dynamics = WorldModelDynamics(
                bundle, steps=args.denoise_steps, generator_seed=args.seed, guidance_scale=args.guidance
            )
            imagined = move_rollouts(dynamics, states, spec.moves, args.horizon)
            row[name] = spreads(imagined).tolist()
            row["agreement"][name] = move_agreement(imagined, real).tolist()
            if bundle.lam is not None and not bundle.world_model.config.action_agnostic:
                true_z, decoded = true_latent_rollouts(
                    bundle, states, real, args.denoise_steps, args.seed, args.guidance
                )
                row["true_z"][name] = {
                    "spread": spreads(true_z).tolist(),
                    "agreement": move_agreement(true_z, real).tolist(),
                    "lam_decoder_agreement": float(move_agreement(decoded, real[:, :, :1])[0]),
                }
        row["skipped"] = skipped
        results[game] = row
    results["meta"] = {
        **_common.jsonable_args(args),
        "models": list(models),
        "game_list": games,
        "actions": {game: spec.moves.tolist() for game, spec in specs.items()},
        "wall_minutes": (time.time() - start) / 60,
    }
    _common.write_results(Path(args.out), results, markdown_table)
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main(_common.parse_dataclass_args(Args, __doc__))
