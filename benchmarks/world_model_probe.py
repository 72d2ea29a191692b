"""A quick 1-step check of saved world models against copy-last, to follow a long training run between
full benchmark runs (``benchmarks.world_model`` also does rollouts, the shuffled-z control and speed).

    python -m benchmarks.world_model_probe --models out/wm_res_adaworld/model runs/wm-long/model --windows 256

Samples ``--windows`` held-out windows per env with a fixed seed (``push``: ``DATA/push-test/push``;
``procgen``: test levels of the pretraining games, ``DATA/procgen-test``), labels each transition with the LAM's
mu (zeros for an action-agnostic model) and prints, per env, copy-last PSNR and each model's 1-step PSNR at
``--denoise-steps`` (pooled MSE on [0, 255]), keyed ``MODEL@STEPS``; with ``--guidance`` scales other than 1
(classifier-free guidance on z) also ``MODEL@STEPS/gSCALE``. ``--envs push`` probes push only;
``--push-dir`` points it at other held-out push episodes. Writes ``--out`` (JSON) when given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adaworld_gym.metrics import psnr_pooled
from adaworld_gym.training.world_model import load_lam, load_world_model
from benchmarks._common import check_out_file, parse_dataclass_args, write_json
from benchmarks.world_model import latent_actions, predict_rollouts, pretrain_subsets, sample_windows


@dataclass
class Args:
    models: list[str] = field(default_factory=list)  # saved world model directories
    lam: str = "adaworld_gym/assets/lam"
    data: Path = Path("data")
    windows: int = 256  # per env
    denoise_steps: list[int] = field(default_factory=lambda: [1, 3])  # Euler steps per frame, each scored
    guidance: list[float] = field(default_factory=lambda: [1.0])  # classifier-free guidance scales on z
    envs: list[str] = field(default_factory=lambda: ["push", "procgen"])  # push and/or procgen
    push_dir: str = ""  # held-out push episodes; default DATA/push-test/push
    seed: int = 0
    threads: int = 1
    out: str = ""  # optional JSON path


def probe(args: Args) -> dict[str, dict[str, float]]:
    if not args.models:
        raise SystemExit("give --models: one or more saved world model directories")
    if args.out:  # a bad path fails now, not after every model has been scored
        check_out_file(args.out)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # a GPU run probes on its GPU
    lam = load_lam(args.lam).to(device)
    models = {path: load_world_model(path).to(device) for path in args.models}
    lengths = {m.config.num_history for m in models.values()}
    if len(lengths) != 1:
        raise SystemExit(
            f"the models take different history lengths {sorted(lengths)}; probe them separately"
        )
    (history,) = lengths
    unknown = set(args.envs) - {"push", "procgen"}
    if unknown or not args.envs:
        raise SystemExit(f"--envs takes push and/or procgen, got {args.envs}")
    push = Path(args.push_dir) if args.push_dir else args.data / "push-test" / "push"
    results: dict[str, dict[str, float]] = {}
    for env in args.envs:
        subsets = [push] if env == "push" else pretrain_subsets(args.data / "procgen-test")
        windows = sample_windows(subsets, args.windows, 1, history, np.random.default_rng(args.seed))
        z, target = latent_actions(lam, windows["frames"]), windows["frames"][:, 1]
        row = {"copy_last": psnr_pooled(windows["history"][:, -1], target)}
        for path, model in models.items():
            drive = np.zeros_like(z) if model.config.action_agnostic else z
            # The twin has no z to guide: one entry per step count.
            scales = [1.0] if model.config.action_agnostic else args.guidance
            for steps in args.denoise_steps:
                for scale in scales:
                    pred = predict_rollouts(model, windows, drive, steps, args.seed, scale)[:, 0]
                    key = f"{path}@{steps}" + ("" if scale == 1.0 else f"/g{scale:g}")
                    row[key] = psnr_pooled(pred, target)
        results[env] = row
        print(env, json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
    if args.out:
        meta = {
            "windows": args.windows,
            "seed": args.seed,
            "lam": args.lam,
            "push_dir": str(push),
            "metric": "1-step PSNR, dB",
        }
        write_json(args.out, {**results, "meta": meta})
    return results


if __name__ == "__main__":
    probe(parse_dataclass_args(Args, __doc__))
