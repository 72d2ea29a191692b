"""Do imagined frames show the events a bundle's reward head pays for?

RL in imagination (``agents/ppo_imagination.py``) can only learn from rewards that the world model's frames
make the reward head pay. This measures that directly, one step at a time, from real states: on held-out
random-play episodes of Procgen's test levels, every rewarded transition (aligned as the head was trained:
:func:`~adaworld_gym.training.reward.reward_targets`) is an *event*. From the real frames before it, each
bundle's world model makes the next frame under the real action, and the head scores the pair (real frame,
imagined frame). Per game and bundle:

- ``recall``: the share of events where the head pays at least half the real reward with the same sign;
  ``recall_real_frames`` is the same with the real next frame (the head's own ceiling);
- ``false_events``: the share of as many non-event transitions where the head pays at least half the median
  event reward in magnitude (``false_events_real_frames`` likewise on real frames);
- ``mean_paid``: the head's mean payment at events on imagined and on real frames, beside the real reward.

    python -m benchmarks.imagined_events --bundles shipped=adaworld_gym/assets/bundles --out out/imagined_events

A bundle directory holds ``procgen-<game>/`` bundles; games whose bundle has no reward head are skipped. Writes
``results.json`` and ``results.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from tqdm.auto import tqdm

from adaworld_gym.data.collect import collect_procgen
from adaworld_gym.planning import WorldModelDynamics
from adaworld_gym.sims.games import PROCGEN_GAMES, check_game
from adaworld_gym.sims.procgen import NUM_ACTIONS
from adaworld_gym.training.adapt import read_episodes
from adaworld_gym.training.reward import reward_targets
from benchmarks import _common


@dataclass
class Args:
    # NAME=DIR pairs; DIR holds procgen-<game>/ adapted bundles (the shipped ones: adaworld_gym/assets/bundles)
    bundles: list[str] = field(default_factory=lambda: ["shipped=adaworld_gym/assets/bundles"])
    games: str = "chaser,coinrun,leaper,ninja,plunder"  # comma list of Procgen games
    episodes: int = 300  # held-out random-play episodes per game (test levels)
    steps: int = 200  # actions per episode at most
    max_events: int = 64  # events (and as many non-events) measured per game
    denoise_steps: int = 1  # Euler steps per predicted frame
    seed: int = 0
    threads: int = 1
    out: Path = Path("out/imagined_events")


@dataclass
class Transitions:
    """Chosen transitions ``frames[t] -> frames[t + 1]`` with their real-frame context and reward."""

    context: np.ndarray  # uint8 [N, k, 64, 64, 3], the last frame is frames[t]
    actions: np.ndarray  # int64 [N]
    next_frames: np.ndarray  # uint8 [N, 64, 64, 3]
    rewards: np.ndarray  # float32 [N], aligned as the reward head was trained


def choose_transitions(
    episodes: list[Any], k: int, max_events: int, rng: np.random.Generator
) -> tuple[Transitions, Transitions]:
    """Up to ``max_events`` rewarded transitions and as many unrewarded ones, each with ``k`` real frames before."""
    events, others = [], []
    for e, episode in enumerate(episodes):
        t_prev, t_next, rewards, _ = reward_targets(episode)
        for a, b, r in zip(t_prev, t_next, rewards, strict=True):
            if a >= k - 1 and b == a + 1:
                (events if r != 0 else others).append((e, int(a), float(r)))
    picked = []
    for pool in (events, others):
        n = min(max_events, len(events), len(pool))
        rows = [pool[i] for i in np.sort(rng.choice(len(pool), n, replace=False))] if n else []
        picked.append(
            Transitions(
                context=np.stack([episodes[e].frames[t - k + 1 : t + 1] for e, t, _ in rows])
                if rows
                else np.zeros((0, k, 64, 64, 3), np.uint8),
                actions=np.array([episodes[e].actions[t] for e, t, _ in rows], np.int64),
                next_frames=np.stack([episodes[e].frames[t + 1] for e, t, _ in rows])
                if rows
                else np.zeros((0, 64, 64, 3), np.uint8),
                rewards=np.array([r for *_, r in rows], np.float32),
            )
        )
    return picked[0], picked[1]


def paid_events(paid: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Events the head reproduces: same sign as the real reward and at least half its magnitude."""
    paid, real = np.asarray(paid, np.float64), np.asarray(real, np.float64)
    return (np.sign(paid) == np.sign(real)) & (np.abs(paid) >= 0.5 * np.abs(real))


def score(bundle: Any, chosen: Transitions, imagined: np.ndarray) -> np.ndarray:
    """The head's rewards for (last context frame, ``imagined``), given the action's latent if it takes one."""
    head = bundle.reward_head
    if not len(imagined):
        return np.zeros(0, np.float32)
    z = None
    if head.config.latent_dim:
        lengths = np.full(len(imagined), chosen.context.shape[1])
        z = bundle.latents(chosen.actions, chosen.context, lengths)
    return head.predict(chosen.context[:, -1], imagined, z)[0]


def measure(bundle: Any, events: Transitions, others: Transitions, denoise_steps: int, seed: int) -> dict:
    dynamics = WorldModelDynamics(bundle, steps=denoise_steps, generator_seed=seed, common_noise=False)
    paid: dict[str, dict[str, np.ndarray]] = {}
    for name, chosen in (("events", events), ("others", others)):
        imagined = (
            dynamics.rollout(chosen.context, chosen.actions[:, None])[:, 0]
            if len(chosen.actions)
            else chosen.next_frames
        )
        paid[name] = {
            "imagined": score(bundle, chosen, imagined),
            "real": score(bundle, chosen, chosen.next_frames),
        }
    threshold = 0.5 * float(np.median(np.abs(events.rewards))) if len(events.rewards) else np.inf

    def mean_or_none(values: np.ndarray) -> float | None:  # a share for masks, a mean for rewards
        return float(np.mean(values)) if len(values) else None

    return {
        "recall": mean_or_none(paid_events(paid["events"]["imagined"], events.rewards)),
        "recall_real_frames": mean_or_none(paid_events(paid["events"]["real"], events.rewards)),
        "false_events": mean_or_none(np.abs(paid["others"]["imagined"]) >= threshold),
        "false_events_real_frames": mean_or_none(np.abs(paid["others"]["real"]) >= threshold),
        "mean_paid": {
            "imagined": mean_or_none(paid["events"]["imagined"]),
            "real_frames": mean_or_none(paid["events"]["real"]),
            "real_reward": mean_or_none(events.rewards),
        },
    }


def _cell(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def markdown_table(results: dict[str, Any]) -> str:
    lines = [
        "| game | bundle | events | recall (imagined) | recall (real frames) | false events (imagined) "
        "| false events (real frames) | mean paid at events: imagined / real frames / real |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for game in results["meta"]["game_list"]:
        row = results[game]
        for name, r in row["bundles"].items():
            paid = r["mean_paid"]
            money = " / ".join(
                "n/a" if paid[k] is None else f"{paid[k]:.2f}"
                for k in ("imagined", "real_frames", "real_reward")
            )
            cells = [
                _cell(r[k])
                for k in ("recall", "recall_real_frames", "false_events", "false_events_real_frames")
            ]
            lines.append(f"| {game} | {name} | {row['events']} | {' | '.join(cells)} | {money} |")
        for name, why in row["skipped"].items():
            lines.append(f"| {game} | {name} | | skipped: {why} | | | | |")
    return "\n".join(lines) + "\n"


def main(args: Args) -> dict[str, Any]:
    from adaworld_gym.models.bundle import AdaWorldBundle

    models = _common.parse_bundles(args.bundles)
    games = [check_game(g.strip()) for g in args.games.split(",") if g.strip()]
    if not games or args.episodes < 1 or args.steps < 1 or args.max_events < 1:
        raise SystemExit("need at least one game, --episodes, --steps and --max-events >= 1")
    _common.make_out_dir(Path(args.out))
    torch.set_num_threads(args.threads)
    start = time.time()
    results: dict[str, Any] = {}
    for game in tqdm(games, desc="games", unit="game"):
        space = spaces.Discrete(NUM_ACTIONS)  # a real env made only for its space would stay open
        loaded, skipped = {}, {}
        for name, root in models.items():
            path = root / f"procgen-{game}"
            if not (path / "bundle.json").is_file():
                skipped[name] = f"no bundle at {path}"
                continue
            bundle = AdaWorldBundle.from_pretrained(path, expected_action_space=space)
            if bundle.reward_head is None:
                skipped[name] = "no reward head"
                continue
            loaded[name] = bundle
        row: dict[str, Any] = {"bundles": {}, "skipped": skipped, "events": 0}
        if loaded:
            data = Path(args.out) / "data"
            seed = _common.derived_seed(args.seed, PROCGEN_GAMES.index(game))
            try:
                collect_procgen([game], args.episodes, args.steps, data, levels="test", seed=seed)
            except ValueError as e:  # OUT/data holds the episodes of another --seed or --steps
                raise SystemExit(f"{e}\n(another --seed or --steps needs another --out)") from None
            episodes = read_episodes(data / f"procgen-{game}")[: args.episodes]
            k = max(b.world_model.config.num_history for b in loaded.values())
            events, others = choose_transitions(episodes, k, args.max_events, np.random.default_rng(seed))
            row["events"] = len(events.rewards)
            for name, bundle in loaded.items():
                row["bundles"][name] = measure(bundle, events, others, args.denoise_steps, args.seed)
        results[game] = row
    results["meta"] = {
        **_common.jsonable_args(args),
        "models": list(models),
        "game_list": games,
        "wall_minutes": (time.time() - start) / 60,
    }
    _common.write_results(Path(args.out), results, markdown_table)
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main(_common.parse_dataclass_args(Args, __doc__))
