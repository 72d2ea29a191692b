"""Build the adapted bundles that ship in ``adaworld_gym/assets/bundles`` (the registered world-model envs).

For every Procgen game and RobosuitePush: collect a small labelled set from the real simulator, initialise the
adapter from it (``adaworld adapt --steps 0``: a codebook of each action's mean latent action, or an MLP pre-fit
on (action, latent action) pairs), and save a bundle that *shares* the package's world model and LAM instead of
copying them, so each bundle costs the repository an adapter and 16 start frames. Zero finetuning steps: the
world model is the shipped pretrained one, which the adaptation benchmark measures at 0 steps.

    python scripts/build_shipped_bundles.py                      # all 17 (about 1 min each on one core)
    python scripts/build_shipped_bundles.py --envs Procgen-heist RobosuitePush

Collected data and the full (unshared) bundles go to ``--work`` (default ``out/shipped_bundles``); a rerun
reuses the data already there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from adaworld_gym import defaults
from adaworld_gym.envs.shipped import SHIPPED_WORLD_MODELS, shipped_bundle_dir
from adaworld_gym.models.bundle import AdaWorldBundle
from adaworld_gym.training.adapt import adapt, adaptation_space, collect_adaptation_data


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
    shared = {"world_model": defaults.DEFAULT_WORLD_MODEL, "lam": defaults.DEFAULT_LAM}
    bundle.save_pretrained(shipped_bundle_dir(name), shared=shared)
    return {
        "env_id": env_id,
        "labelled_transitions": bundle.meta["labelled_transitions"],
        "seconds": round(time.monotonic() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--envs", nargs="+", default=list(SHIPPED_WORLD_MODELS), choices=list(SHIPPED_WORLD_MODELS)
    )
    parser.add_argument("--work", type=Path, default=Path("out/shipped_bundles"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.envs:
        print(json.dumps({name: build(name, args.work, args.seed)}), flush=True)


if __name__ == "__main__":
    main()
