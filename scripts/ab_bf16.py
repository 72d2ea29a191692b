"""bf16 autocast forced on vs ``precision.bf16_is_fast``'s choice, on this CPU: sampling, LAM labels, a train step.

    python scripts/ab_bf16.py          # one thread; on a CPU with native bf16 both rows run bf16

On CPUs without native bf16 (AVX2 only) oneDNN emulates it; the gate then runs fp32.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import adaworld_gym.models.world_model as world_model_module
from adaworld_gym import defaults
from adaworld_gym.models.latent_action import LatentActionModel
from adaworld_gym.models.world_model import DiffusionWorldModel
from adaworld_gym.precision import bf16_is_fast


def best_of(fn, repeats: int = 3) -> float:
    """Seconds of the fastest of ``repeats`` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.set_num_threads(1)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {bf16_is_fast('cpu')}")
    wm = DiffusionWorldModel.from_pretrained(defaults.DEFAULT_WORLD_MODEL)
    lam = LatentActionModel.from_pretrained(defaults.DEFAULT_LAM).eval()
    frames = np.random.default_rng(0).integers(0, 256, (16, 4, 64, 64, 3), np.uint8)
    z = np.zeros((16, wm.config.action_dim), np.float32)
    pairs = torch.from_numpy(frames[:, -2]), torch.from_numpy(frames[:, -1])
    history, target = torch.from_numpy(frames), torch.from_numpy(frames[:, -1])

    def train_step() -> None:
        wm.training_loss(history, target, torch.from_numpy(z)).backward()

    for forced in (True, False):
        world_model_module.bf16_is_fast = (lambda _: True) if forced else bf16_is_fast
        label = "bf16 forced" if forced else "gate's choice"
        for batch in (1, 16):
            seconds = best_of(lambda b=batch: wm.predict_next(frames[:b], z[:b], steps=1))
            print(f"{label}: predict_next, batch {batch}: {seconds / batch * 1000:.1f} ms a frame")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=forced):
            print(f"{label}: LAM encode, 16 pairs: {best_of(lambda: lam.encode(*pairs)) * 1000:.0f} ms")
        wm.train()
        print(f"{label}: training forward + backward, batch 16: {best_of(train_step, 2) * 1000:.0f} ms")
        wm.zero_grad()
        wm.eval()
    world_model_module.bf16_is_fast = bf16_is_fast


if __name__ == "__main__":
    main()
