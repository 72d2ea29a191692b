"""Adapt the shipped world model to one Procgen game on reward-labelled episodes, rewarded steps oversampled.

An experiment for RL in imagination (docs/environments_and_rl.md, "Rewarded events in imagined frames (session
22)"): the shipped world model does not draw the events a reward head pays for (a hit ship vanishing, a
level's end), so this finetunes it on every transition of a game's reward-head collection, with the transitions
the head is trained to pay on (:func:`~adaworld_gym.training.reward.reward_targets`) repeated until they make up
``--event-share`` of the set. The bundle it writes carries the shipped head of that game;
``benchmarks.imagined_events`` says whether its frames now make the head pay.

    python scripts/finetune_on_events.py --game plunder \\
        --data out/shipped_bundles/Procgen-plunder/reward-data --out out/event_ft/plunder
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from adaworld_gym import defaults
from adaworld_gym.cli import positive_int
from adaworld_gym.data.clips import valid_targets
from adaworld_gym.envs.shipped import shipped_bundles_root
from adaworld_gym.sims.games import PROCGEN_GAMES
from adaworld_gym.training.adapt import LabelledWindows, adapt, adaptation_space, read_episodes
from adaworld_gym.training.reward import attach_reward_head, reward_targets


def event_windows(episodes: list, event_share: float) -> tuple[LabelledWindows, dict[str, int]]:
    """Every usable transition once, plus the rewarded or terminal ones repeated to ``event_share`` of the set."""
    every, events = [], []
    for e, episode in enumerate(episodes):
        usable = set(valid_targets(episode).tolist())
        every += [(e, t) for t in sorted(usable)]
        t_prev, _, rewards, terminated = reward_targets(episode)
        events += [
            (e, int(t))
            for t, r, d in zip(t_prev, rewards, terminated, strict=True)
            if (r or d) and t in usable
        ]
    if not events:
        raise SystemExit("the episodes hold no rewarded or terminal transition to oversample")
    repeats = math.ceil(event_share * len(every) / ((1 - event_share) * len(events)))
    index = np.array(every + events * repeats, np.int64)
    return LabelledWindows(episodes, index), {
        "transitions": len(every),
        "events": len(events),
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", required=True, choices=PROCGEN_GAMES)
    parser.add_argument("--data", type=Path, required=True, help="episodes with real rewards (reward-data)")
    parser.add_argument(
        "--max-episodes", type=positive_int, default=None, help="use the first N episodes only"
    )
    parser.add_argument("--steps", type=positive_int, default=800)
    parser.add_argument("--event-share", type=float, default=0.25)
    parser.add_argument("--pretrained-lr-scale", type=float, default=0.1)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 0 < args.event_share < 1:
        raise SystemExit(f"--event-share must lie in (0, 1), got {args.event_share}")
    torch.set_num_threads(args.threads)
    env_id = f"AdaWorld/Procgen-{args.game}-v0"
    head = shipped_bundles_root() / f"procgen-{args.game}" / "reward"
    if not head.is_dir():
        raise SystemExit(f"the shipped procgen-{args.game} bundle has no reward head to attach")
    try:
        episodes = read_episodes(args.data)[: args.max_episodes]
    except ValueError as e:  # a missing or empty --data: one line, not a traceback
        raise SystemExit(f"--data: {e}") from None
    windows, counts = event_windows(episodes, args.event_share)
    print(f"{args.game}: {counts}", flush=True)
    start = time.monotonic()
    bundle = adapt(
        defaults.DEFAULT_WORLD_MODEL,
        defaults.DEFAULT_LAM,
        windows,
        args.out,
        max_steps=args.steps,
        seed=0,
        pretrained_lr_scale=args.pretrained_lr_scale,
        expected_action_space=adaptation_space(env_id),
        # The real transitions it was built from (each once): the equal-data budget of real-env baselines.
        meta={
            "env_id": env_id,
            "event_share": args.event_share,
            **counts,
            "labelled_transitions": counts["transitions"],
        },
    )
    attach_reward_head(bundle, head)
    print(f"bundle with the shipped head: {bundle} ({(time.monotonic() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
