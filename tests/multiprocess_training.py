"""Run by tests/test_training_resume.py under ``torch.distributed.run``: a tiny LAM or world-model training in
several CPU processes (not collected: no ``test_`` prefix).

Usage: python -m torch.distributed.run --nproc_per_node 2 multiprocess_training.py lam|world_model DATA OUT [LAM]
"""

import sys

import torch

from adaworld_gym.training import train_lam
from adaworld_gym.training.world_model import train_world_model

if __name__ == "__main__":
    torch.set_num_threads(1)
    kind, data, out = sys.argv[1:4]
    common = dict(batch_size=4, max_steps=6, log_every=2, image_every=100, checkpoint_every=3, progress=False)
    if kind == "lam":
        train_lam(data, out, "tiny", **common)
    else:
        train_world_model(data, out, sys.argv[4], "tiny", **common)
