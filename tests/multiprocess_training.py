"""Run by tests/test_training_resume.py under ``torch.distributed.run``: a tiny LAM or world-model training in
several CPU processes (not collected: no ``test_`` prefix). Each process also writes a checksum of its weights
after its last optimizer step to ``OUT/weights_rank<R>.json``, so the test can see that the processes train one
model, not one each.

Usage: python -m torch.distributed.run --nproc_per_node 2 multiprocess_training.py lam|world_model DATA OUT [LAM]
"""

import json
import os
import sys
from pathlib import Path

import torch

from adaworld_gym.training import train_lam
from adaworld_gym.training.world_model import train_world_model

checksum: list[float] = []
adamw_step = torch.optim.AdamW.step


def step_and_record(self, *args, **kwargs):
    out = adamw_step(self, *args, **kwargs)
    with torch.no_grad():
        checksum[:] = [sum(float(p.double().sum()) for group in self.param_groups for p in group["params"])]
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.optim.AdamW.step = step_and_record
    kind, data, out = sys.argv[1:4]
    common = dict(batch_size=4, max_steps=6, log_every=2, image_every=100, checkpoint_every=3, progress=False)
    if kind == "lam":
        train_lam(data, out, "tiny", **common)
    else:
        train_world_model(data, out, sys.argv[4], "tiny", **common)
    Path(out, f"weights_rank{os.environ['RANK']}.json").write_text(json.dumps(checksum))
