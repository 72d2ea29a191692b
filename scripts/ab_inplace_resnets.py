"""Interleaved A/B of CPU sampling: the bf16 UNet copy with in-place resnet blocks vs diffusers' own blocks.

    python scripts/ab_inplace_resnets.py --threads 2

Both run alternately in one process, ``--rounds`` rounds, medians (absolute frames/s drift on a shared VM, so
only a ratio measured this way is claimed). Prints frames/s per batch size, the speed-up, and whether the two
give the same frames (they must: same arithmetic, fewer passes over memory).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaworld_gym import defaults
from adaworld_gym.cli import positive_int
from adaworld_gym.models import world_model
from adaworld_gym.models.world_model import DiffusionWorldModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--steps", type=positive_int, default=1, help="denoising steps per frame")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = DiffusionWorldModel.from_pretrained(defaults.DEFAULT_WORLD_MODEL).eval()
    rng = np.random.default_rng(0)
    for batch in args.batches:
        hist = rng.integers(0, 256, (batch, 4, 64, 64, 3), dtype=np.uint8)
        z = rng.standard_normal((batch, 32)).astype(np.float32)
        times: dict[str, list[float]] = {"diffusers": [], "in_place": []}
        frames = {}
        for _ in range(args.rounds):
            for name in times:
                world_model.CPU_INPLACE_RESNETS = name == "in_place"
                model.invalidate_sampling_cache()  # the blocks are chosen when the bf16 copy is made
                frames[name] = model.predict_next(  # also the warm-up of this side's copy
                    hist, z, steps=args.steps, generator=torch.Generator().manual_seed(0)
                )
                calls = max(1, 32 // batch)
                start = time.perf_counter()
                for _ in range(calls):
                    model.predict_next(hist, z, steps=args.steps, generator=torch.Generator().manual_seed(0))
                times[name].append((time.perf_counter() - start) / calls)
        fps = {name: round(batch / float(np.median(t)), 1) for name, t in times.items()}
        same = bool(np.array_equal(frames["diffusers"], frames["in_place"]))
        print(
            f"batch {batch}: {fps} frames/s, speedup {fps['in_place'] / fps['diffusers']:.2f}x, "
            f"identical frames: {same}",
            flush=True,
        )
    world_model.CPU_INPLACE_RESNETS = True


if __name__ == "__main__":
    main()
