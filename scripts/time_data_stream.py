"""What the CPU side of a GPU training step costs, and what drawing batches ahead in a thread buys.

No GPU is needed: the GPU's part of a step is played by a stand-in that holds the GIL for ``--busy-ms``
(Python launching kernels) and then waits ``--wait-ms`` with it released (the GPU computing while the loop waits
for the loss). Reports, for batches of ``--batch`` windows of the given data:

- drawing a batch (sampling and collating the windows) once the episodes are decoded;
- drawing a step's diffusion noise from a CPU generator (the world model's training draws before session 28);
- steps/s of draw-then-step, with the batches drawn in the loop and drawn ahead (``PrefetchedBatches``),
  alternating, medians.

    python scripts/time_data_stream.py --data data/procgen-train data/push --shares 0.25 0.75 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from adaworld_gym.data.clips import PrefetchedBatches
from adaworld_gym.training.world_model import window_batches


def stand_in_step(busy_ms: float, wait_ms: float) -> None:
    end = time.perf_counter() + busy_ms / 1000
    while time.perf_counter() < end:  # holds the GIL, as Python dispatching kernels does
        pass
    time.sleep(wait_ms / 1000)  # releases it, as waiting for the GPU does


def steps_per_s(batches, steps: int, busy_ms: float, wait_ms: float) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
        stand_in_step(busy_ms, wait_ms)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--shares", nargs="+", type=float)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--history", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--busy-ms", type=float, default=10.0)
    parser.add_argument("--wait-ms", type=float, default=40.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = dict(zip(args.data, args.shares, strict=True)) if args.shares else args.data

    def stream(seed: int):
        return window_batches(data, args.history, args.batch, seed=seed)

    warm = stream(0)  # each source caches its decoded episodes: warm them all up first
    for _ in range(200):
        next(warm)
    start = time.perf_counter()
    for _ in range(args.steps):
        next(warm)
    draw_ms = 1000 * (time.perf_counter() - start) / args.steps
    print(f"draw a batch of {args.batch} (warm): {draw_ms:.1f} ms")

    noise = args.batch * (args.history + 1) * 3 * 64 * 64
    gen = torch.Generator().manual_seed(0)
    torch.randn(noise, generator=gen)
    start = time.perf_counter()
    for _ in range(5):
        torch.randn(noise, generator=gen)
    print(
        f"{noise / 1e6:.1f}M normals from a CPU generator: {1000 * (time.perf_counter() - start) / 5:.1f} ms"
    )

    plain, ahead = [], []
    for r in range(args.repeats):
        in_loop = stream(0)
        in_loop.source = warm.source  # the warm caches
        plain.append(steps_per_s(in_loop, args.steps, args.busy_ms, args.wait_ms))
        drawn = stream(0)
        drawn.source = warm.source
        with PrefetchedBatches(drawn) as prefetched:
            ahead.append(steps_per_s(prefetched, args.steps, args.busy_ms, args.wait_ms))
        print(f"repeat {r}: in the loop {plain[-1]:.1f} steps/s, drawn ahead {ahead[-1]:.1f} steps/s")
    ceiling = 1000 / (args.busy_ms + args.wait_ms)
    print(
        f"medians: {statistics.median(plain):.1f} -> {statistics.median(ahead):.1f} steps/s "
        f"({statistics.median(ahead) / statistics.median(plain):.2f}x; the stand-in step alone: {ceiling:.1f})"
    )


if __name__ == "__main__":
    main()
