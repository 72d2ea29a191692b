"""Interleaved A/B of world-model sampling on a CPU: a speed-up of the sampling path against what it replaced.

    python scripts/ab_cpu_sampling.py --threads 2                               # bf16 UNet copy vs autocast
    python scripts/ab_cpu_sampling.py --threads 2 --compare in-place-resnets    # in-place resnet blocks vs diffusers'

Both sides run alternately in one process, ``--rounds`` rounds, medians (absolute frames/s on a shared VM drift
between runs, so only a ratio measured this way is claimed). Prints frames/s per batch size, the speed-up, and
how the two sides' frames differ: the bf16 copy rounds differently from autocast (mean |difference| in uint8
levels); the in-place blocks must give the same frames.
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

# --compare -> (module flag, name of the side with it off, name with it on)
COMPARISONS = {
    "bf16-copy": ("CPU_BF16_COPY", "autocast", "bf16_copy"),
    "in-place-resnets": ("CPU_INPLACE_RESNETS", "diffusers", "in_place"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--compare", choices=list(COMPARISONS), default="bf16-copy")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--steps", type=positive_int, default=1, help="denoising steps per frame")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flag, off, on = COMPARISONS[args.compare]
    model = DiffusionWorldModel.from_pretrained(defaults.DEFAULT_WORLD_MODEL).eval()
    rng = np.random.default_rng(0)

    def sample(hist: np.ndarray, z: np.ndarray) -> np.ndarray:
        return model.predict_next(hist, z, steps=args.steps, generator=torch.Generator().manual_seed(0))

    for batch in args.batches:
        hist = rng.integers(0, 256, (batch, 4, 64, 64, 3), dtype=np.uint8)
        z = rng.standard_normal((batch, 32)).astype(np.float32)
        times: dict[str, list[float]] = {off: [], on: []}
        frames = {}
        for _ in range(args.rounds):
            for name in times:
                setattr(world_model, flag, name == on)
                model.invalidate_sampling_cache()  # the sampling copy is built with the flags of its time
                frames[name] = sample(hist, z)  # also this side's warm-up
                calls = max(1, 32 // batch)
                start = time.perf_counter()
                for _ in range(calls):
                    sample(hist, z)
                times[name].append((time.perf_counter() - start) / calls)
        setattr(world_model, flag, True)
        fps = {name: round(batch / float(np.median(t)), 1) for name, t in times.items()}
        diff = float(np.abs(frames[off].astype(int) - frames[on]).mean())
        print(
            f"batch {batch}: {fps} frames/s, speedup {fps[on] / fps[off]:.2f}x, "
            f"mean |difference| {diff:.3f} uint8 levels (identical: {np.array_equal(frames[off], frames[on])})",
            flush=True,
        )


if __name__ == "__main__":
    main()
