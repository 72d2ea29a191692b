"""Where a world-model sampling call spends its time on a CPU, per batch size: milliseconds per frame and the
share of each kind of operator (convolutions against the memory-bound rest), from ``torch.profiler``.

    python scripts/profile_sampling.py --threads 2 --batches 1 16

Why the vector env's speed-up over single envs stays below 4x on 2 cores (docs/environments_and_rl.md): a batch
shares the per-call overheads, but the memory-bound pointwise work (group norm, activations, adds) gains little
and the convolutions themselves about 3.4x per frame. It also counts a prediction's floating-point operations
and sets the rate they run at beside a large matrix product's on the same threads, in the dtype the model samples
in here: how far from what the CPU can do at all a call is. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from adaworld_gym import defaults
from adaworld_gym.cli import positive_int
from adaworld_gym.models.world_model import DiffusionWorldModel

# aten operator -> the kind reported (anything else: "other")
KINDS = {
    "aten::mkldnn_convolution": "convolution",
    "aten::native_group_norm": "group norm",
    "aten::silu_": "activation",
    "aten::silu": "activation",
    "aten::copy_": "copy (layout, dtype)",
    "aten::cat": "concatenation (skips)",
    "aten::add_": "add / scale",
    "aten::mul_": "add / scale",
    "aten::add": "add / scale",
    "aten::mul": "add / scale",
    "aten::addmm": "linear (embeddings)",
}


def profile(model: DiffusionWorldModel, batch: int, steps: int, calls: int) -> tuple[float, dict[str, float]]:
    """(ms per frame, {kind: share of the profiled operator time}) of ``predict_next`` at ``batch``."""
    rng = np.random.default_rng(0)
    history = rng.integers(0, 256, (batch, model.config.num_history, 64, 64, 3), dtype=np.uint8)
    z = torch.randn(batch, model.config.action_dim, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # one-off setup: the bf16 sampling copy, oneDNN kernels for this shape
        model.predict_next(history, z, steps=steps, generator=generator)
    start = time.perf_counter()
    for _ in range(calls):
        model.predict_next(history, z, steps=steps, generator=generator)
    ms_per_frame = (time.perf_counter() - start) / calls / batch * 1000
    with torch.profiler.profile() as prof:
        for _ in range(calls):
            model.predict_next(history, z, steps=steps, generator=generator)
    spent: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        spent[KINDS.get(event.key, "other")] += event.self_cpu_time_total
    total = sum(spent.values())
    return ms_per_frame, {kind: t / total for kind, t in sorted(spent.items(), key=lambda kv: -kv[1])}


def flops_per_frame(model: DiffusionWorldModel, steps: int) -> float:
    """Floating-point operations of one ``predict_next`` frame (torch's counter: convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    history = np.zeros((1, model.config.num_history, 64, 64, 3), dtype=np.uint8)
    z = torch.zeros(1, model.config.action_dim)
    with FlopCounterMode(display=False) as counter:
        model.predict_next(history, z, steps=steps, generator=torch.Generator().manual_seed(0))
    return float(counter.get_total_flops())


def matmul_rate(dtype: torch.dtype, size: int = 2048, calls: int = 10) -> float:
    """GFLOP/s of a ``size``-square matrix product in ``dtype``: what these threads reach on dense work."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(calls):
        a @ b
    return 2 * size**3 * calls / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[1, 16], help="batch sizes")
    parser.add_argument("--steps", type=positive_int, default=1, help="denoising steps per frame")
    parser.add_argument("--calls", type=positive_int, default=10, help="timed and profiled calls per batch")
    parser.add_argument("--model", default=str(defaults.DEFAULT_WORLD_MODEL), help="world model directory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = DiffusionWorldModel.from_pretrained(args.model).eval()
    results = {batch: profile(model, batch, args.steps, args.calls) for batch in args.batches}
    kinds = list(next(iter(results.values()))[1])
    print("| batch | ms / frame | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 2) + "|")
    for batch, (ms, shares) in results.items():
        print(f"| {batch} | {ms:.2f} | " + " | ".join(f"{100 * shares.get(k, 0):.0f}%" for k in kinds) + " |")
    first, last = args.batches[0], args.batches[-1]
    print(f"\nbatch {last} vs {first}: {results[first][0] / results[last][0]:.2f}x the frames/s")
    flops = flops_per_frame(model, args.steps)
    dtype = torch.bfloat16 if model._autocast_name() == "bfloat16" else torch.float32
    dense = matmul_rate(dtype)
    print(f"{flops / 1e9:.2f} GFLOP a frame; a {dtype} 2048-square matmul runs at {dense:.0f} GFLOP/s here")
    for batch, (ms, _) in results.items():
        rate = flops / ms / 1e6
        print(f"batch {batch}: {rate:.0f} GFLOP/s, {100 * rate / dense:.0f}% of the matmul's rate")


if __name__ == "__main__":
    main()
