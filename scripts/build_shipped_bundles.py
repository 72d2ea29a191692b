"""Build the adapted bundles that ship in ``adaworld_gym/assets/bundles`` (the registered world-model envs).

For every Procgen game and RobosuitePush: collect a small labelled set from the real simulator, initialise the
adapter from it (``adaworld adapt --steps 0``: a codebook of each action's mean latent action, or an MLP pre-fit
on (action, latent action) pairs), and save a bundle that *shares* the package's world model and LAM instead of
copying them, so each bundle costs the repository an adapter and 16 start frames. Zero finetuning steps: the
world model is the shipped pretrained one, which the adaptation benchmark measures at 0 steps.

    python scripts/build_shipped_bundles.py                      # all 17 (about 1 min each on one core)
    python scripts/build_shipped_bundles.py --envs Procgen-heist RobosuitePush
    python scripts/build_shipped_bundles.py --rewards             # then reward heads for the Procgen bundles

``--rewards`` collects ``--reward-episodes`` random-play episodes per Procgen game, trains a reward /
termination head on them (``adaworld train-reward``) and attaches it to the shipped bundle only when, on its
held-out episodes, it explains at least ``MIN_R2`` of the reward variance (with at least ``MIN_EVAL_EVENTS``
rewarded transitions there); otherwise the bundle keeps paying 0, or keeps a head attached earlier (and its
record). ``assets/bundles/rewards.json`` records each game's held-out R^2 and why a head was or was not
attached. RobosuitePush has no head: its reward is the goal image's.

Collected data and the full (unshared) bundles go to ``--work`` (default ``out/shipped_bundles``); a rerun
reuses the data already there.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from adaworld_gym import defaults
from adaworld_gym.cli import positive_int
from adaworld_gym.data.collect import collect_procgen
from adaworld_gym.envs.shipped import SHIPPED_WORLD_MODELS, shipped_bundle_dir, shipped_bundles_root
from adaworld_gym.models.bundle import AdaWorldBundle
from adaworld_gym.models.reward import RewardHead
from adaworld_gym.registration import procgen_game
from adaworld_gym.training.adapt import adapt, adaptation_space, collect_adaptation_data
from adaworld_gym.training.common import write_json
from adaworld_gym.training.reward import (
    attach_refusal,
    attach_reward_head,
    held_out_r2,
    train_reward,
)


def build(name: str, work: Path, seed: int) -> dict:
    env_id = SHIPPED_WORLD_MODELS[name][1]
    start = time.monotonic()
    data = collect_adaptation_data(env_id, work / name / "data", seed=seed)
    full = adapt(
        defaults.DEFAULT_WORLD_MODEL,
        defaults.DEFAULT_LAM,
        data,
        work / name,
        max_steps=0,
        seed=seed,
        expected_action_space=adaptation_space(env_id),
        progress=False,
        meta={"env_id": env_id, "shipped": "scripts/build_shipped_bundles.py (zero finetuning steps)"},
    )
    bundle = AdaWorldBundle.from_pretrained(full)
    bundle.meta["pretrained_model"] = "adaworld_gym/assets/world_model (shared)"
    # Keep the reward head that --rewards attached (rewards.json records it): the rebuilt adapter does not
    # change what the head reads (frames and the LAM's z), and without it the README's rebuild (all bundles,
    # then --rewards) left bundles paying 0 that rewards.json called attached, for good where a retrain
    # failed its gate (that branch keeps "the head attached earlier").
    header = shipped_bundle_dir(name) / "bundle.json"
    if header.is_file() and json.loads(header.read_text()).get("has_reward_head"):
        bundle = replace(bundle, reward_head=RewardHead.from_pretrained(header.parent / "reward").eval())
    shared = {"world_model": defaults.DEFAULT_WORLD_MODEL, "lam": defaults.DEFAULT_LAM}
    bundle.save_pretrained(shipped_bundle_dir(name), shared=shared)
    return {
        "env_id": env_id,
        "labelled_transitions": bundle.meta["labelled_transitions"],
        "seconds": round(time.monotonic() - start, 1),
    }


def build_reward(name: str, work: Path, seed: int, episodes: int, steps: int, train_steps: int) -> dict:
    """Train ``name``'s reward head on fresh random play; attach it if it predicts held-out rewards."""
    game = procgen_game(SHIPPED_WORLD_MODELS[name][1])
    if game is None:
        return {"attached": False, "why": "goal-image reward (no reward head)"}
    start = time.monotonic()
    data = work / name / "reward-data"
    # Another seed than the adaptation set's, so these are other episodes of the training levels.
    collect_procgen([game], episodes, steps, data, seed=seed + 1)
    # The run resumes from its checkpoints, so its name must change with the data it is trained on.
    run = work / name / f"reward-{episodes}x{steps}-{train_steps}"
    head = train_reward([data / f"procgen-{game}"], run, max_steps=train_steps, seed=seed, progress=False)
    summary = json.loads((run / "summary.json").read_text())
    ev = summary["eval"]
    report = {
        "episodes": episodes,
        "train_steps": train_steps,
        "eval_events": ev["reward_events"],
        "eval_pairs": ev["pairs"],
        "eval_reward_r2": round(held_out_r2(ev), 3),
    }
    why = attach_refusal(summary)  # the rule `adaworld train-reward --bundle` applies too
    if why is None:
        attach_reward_head(shipped_bundle_dir(name), head)
        report.update(attached=True)
    else:
        report.update(attached=False, why=why)
    report["seconds"] = round(time.monotonic() - start, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--envs", nargs="+", default=list(SHIPPED_WORLD_MODELS), choices=list(SHIPPED_WORLD_MODELS)
    )
    parser.add_argument("--work", type=Path, default=Path("out/shipped_bundles"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument(
        "--rewards", action="store_true", help="train and attach reward heads (bundles must exist)"
    )
    parser.add_argument(
        "--reward-episodes", type=positive_int, default=200, help="random-play episodes per game"
    )
    parser.add_argument("--reward-episode-steps", type=positive_int, default=200)
    parser.add_argument("--reward-train-steps", type=positive_int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.rewards:
        for name in args.envs:
            print(json.dumps({name: build(name, args.work, args.seed)}), flush=True)
        return
    path = shipped_bundles_root() / "rewards.json"  # what each shipped bundle's reward is, and why
    for name in args.envs:
        report = build_reward(
            name,
            args.work,
            args.seed,
            args.reward_episodes,
            args.reward_episode_steps,
            args.reward_train_steps,
        )
        # Re-read before writing, under a lock: several processes may be training other games' heads.
        with open(path.with_name(".rewards.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            reports = json.loads(path.read_text()) if path.is_file() else {}
            if not report["attached"] and reports.get(name, {}).get("attached"):
                # A retrain that fails the gate leaves the attached head, and the record that explains it, alone.
                print(json.dumps({name: {**report, "kept": "the head attached earlier"}}), flush=True)
                continue
            reports[name] = report
            write_json(path, reports)
        print(json.dumps({name: report}), flush=True)


if __name__ == "__main__":
    main()
