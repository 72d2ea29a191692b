"""Interleaved A/B of world-model sampling on a CPU: the cached bf16 UNet copy vs autocast.

    python scripts/ab_cpu_bf16.py --threads 2

Both paths run alternately in one process, 3 rounds, medians (absolute frames/s on a shared VM drift
between runs, so only a ratio measured this way is claimed). Prints frames/s per batch size and the mean
absolute difference between the two paths' frames in uint8 levels.
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = DiffusionWorldModel.from_pretrained(defaults.DEFAULT_WORLD_MODEL).eval()
    rng = np.random.default_rng(0)
    for batch in args.batches:
        hist = rng.integers(0, 256, (batch, 4, 64, 64, 3), dtype=np.uint8)
        z = rng.standard_normal((batch, 32)).astype(np.float32)
        times: dict[str, list[float]] = {"autocast": [], "bf16_copy": []}
        frames = {}
        for _ in range(3):
            for name in times:
                world_model.CPU_BF16_COPY = name == "bf16_copy"
                frames[name] = model.predict_next(
                    hist, z, steps=1, generator=torch.Generator().manual_seed(0)
                )
                calls = max(1, 16 // batch)
                start = time.perf_counter()
                for _ in range(calls):
                    model.predict_next(hist, z, steps=1, generator=torch.Generator().manual_seed(0))
                times[name].append((time.perf_counter() - start) / calls)
        fps = {name: round(batch / float(np.median(t)), 1) for name, t in times.items()}
        diff = float(np.abs(frames["autocast"].astype(int) - frames["bf16_copy"]).mean())
        print(
            f"batch {batch}: {fps} frames/s, speedup {fps['bf16_copy'] / fps['autocast']:.2f}x, "
            f"mean |difference| {diff:.3f} uint8 levels",
            flush=True,
        )


if __name__ == "__main__":
    main()
