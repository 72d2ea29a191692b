"""Does a world model underfit or overfit? Its denoising loss on training windows beside held-out ones.

    python -m benchmarks.world_model_fit --models adaworld_gym/assets/world_model \\
        benchmarks/weights/world_model_agnostic --out benchmarks/results/world_model_fit.json

For each model and each pair of window sets (push: ``DATA/push`` vs the held-out ``DATA/push-test``; procgen:
``DATA/procgen-train`` vs the test levels of the same games in ``DATA/procgen-test``), the EDM training loss
(the same loss, weighting and draws as in training: history length, augmentation, sigma, noise, condition
dropout) averaged over ``--batches`` batches of 64 windows. Every model sees the same windows and the same draws
(one generator per set, reseeded for each model). A held-out loss far above the training one means overfitting;
about equal means the model fits no better what it trained on than what it never saw: more training or
capacity, not more data, is what it lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adaworld_gym.precision import bf16_is_fast
from adaworld_gym.training.world_model import (
    _actions,
    load_lam,
    load_world_model,
    window_batches,
    window_loss,
)
from benchmarks._common import check_out_file, parse_dataclass_args, write_json
from benchmarks.world_model import pretrain_subsets

BATCH = 64


@dataclass
class Args:
    models: list[str] = field(default_factory=list)  # saved world model directories
    lam: str = "adaworld_gym/assets/lam"
    data: Path = Path("data")
    batches: int = 8  # per window set
    seed: int = 0
    threads: int = 2
    out: str = ""  # optional JSON path


def window_sets(data: Path) -> dict[str, list[Path] | Path]:
    return {
        "push_train": data / "push",
        "push_held_out": data / "push-test",
        "procgen_train": data / "procgen-train",
        "procgen_held_out": pretrain_subsets(data / "procgen-test"),
    }


@torch.no_grad()
def set_losses(model, lam, spec, batches: int, seed: int) -> list[float]:
    stream = window_batches(spec, model.config.num_history, BATCH, seed=seed)
    draws = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(batches):
        batch = next(stream)
        z = _actions(None if model.config.action_agnostic else lam, batch, model.config.action_dim, True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_is_fast("cpu")):
            loss = window_loss(model, batch, z, draws)  # training's own draw of the history length, too
        losses.append(float(loss))
    return losses


def fit(args: Args) -> dict:
    if not args.models:
        raise SystemExit("give --models: one or more saved world model directories")
    if args.out:  # a bad path fails now, not after every model has been scored
        check_out_file(args.out)
    torch.set_num_threads(args.threads)
    lam = load_lam(args.lam)
    results: dict = {}
    for path in args.models:
        model = load_world_model(path).eval()
        row = {}
        for name, spec in window_sets(args.data).items():
            losses = set_losses(model, lam, spec, args.batches, args.seed)
            row[name] = {
                "loss": float(np.mean(losses)),
                "stderr": float(np.std(losses, ddof=1) / np.sqrt(len(losses))),
            }
        for env in ("push", "procgen"):
            row[f"{env}_held_out_over_train"] = row[f"{env}_held_out"]["loss"] / row[f"{env}_train"]["loss"]
        results[path] = row
        print(
            path, json.dumps({k: v["loss"] if isinstance(v, dict) else v for k, v in row.items()}), flush=True
        )
    if args.out:
        meta = {"batches": args.batches, "batch_size": BATCH, "seed": args.seed, "lam": args.lam}
        write_json(args.out, {**results, "meta": meta})
    return results


if __name__ == "__main__":
    fit(parse_dataclass_args(Args, __doc__))
