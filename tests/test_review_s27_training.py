"""Review (session 27) of the training loops: regressions of bugs found there.

- several processes with a wall-clock budget: each process read its own clock, so one could stop a step before
  the others and leave them waiting in a collective for ever;
- several processes with a VQ LAM: a dead code was re-seated from each process's own batch, so the processes
  trained different codebooks;
- the reward head warned that its warm-up never ends while it capped the warm-up to a tenth of the run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from test_training_resume import write_reward_episodes

from adaworld_gym.training.common import budget_spent
from adaworld_gym.training.reward import train_reward
from benchmarks.world_model import synthetic_push_like

pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = textwrap.dedent(
    """
    import faulthandler, json, os, sys
    from pathlib import Path
    import torch
    import adaworld_gym.training.lam as lam_mod

    faulthandler.dump_traceback_later(90, exit=True)  # a process left waiting in a collective ends, with its stack
    torch.set_num_threads(1)
    data, out, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    models, real = [], lam_mod.LatentActionModel

    def make(**kw):  # keep the model each process trains
        models.append(real(**kw))
        return models[-1]

    lam_mod.LatentActionModel = make
    lam_mod.train_lam(data, out, "tiny", batch_size=4, log_every=2, image_every=1000, progress=False, **kwargs)
    weights = [float(p.double().sum()) for p in models[0].parameters()]
    Path(out, f"weights_rank{os.environ['RANK']}.json").write_text(json.dumps(weights))
    """
)


@pytest.fixture(scope="module")
def push(tmp_path_factory):
    return synthetic_push_like(tmp_path_factory.mktemp("push"), episodes=3, steps=10, seed=0)


def two_process_lam(push: Path, out: Path, **kwargs) -> list[list[float]]:
    """Train a tiny LAM in two CPU processes; each one's final weights (one checksum per tensor)."""
    script = out.parent / f"{out.name}_worker.py"
    script.write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(script), str(push), str(out), json.dumps(kwargs)]  # fmt: skip
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"weights_rank{r}.json").read_text()) for r in (0, 1)]


def test_the_wall_clock_budget_is_spent_everywhere_once_any_process_spent_it():
    votes = []

    def agree(flags):
        votes.append(list(flags))
        return [True]  # another process's clock says the budget is spent

    assert budget_spent(None, 1.0, 5, 10.0, agree)
    assert not budget_spent(None, 1.0, 5, 10.0, lambda flags: [False])
    assert (
        budget_spent(None, 1.0, 5, 61.0, lambda flags: [False]) is False
    )  # the vote decides, on every process
    assert votes == [[False]]
    assert budget_spent(3, None, 3, 0.0, agree) and votes == [[False]]  # a step budget needs no vote


def test_two_processes_with_a_wall_clock_budget_stop_together(push, tmp_path):
    """Before: a process whose clock ran out a step earlier waited in the final save while the other trained on."""
    ranks = two_process_lam(push, tmp_path / "run", max_minutes=0.02, checkpoint_every=1000)
    assert ranks[0] == ranks[1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] >= 1  # (its own clock may be short of the budget: the other process stopped it)


def test_two_processes_train_one_vq_codebook(push, tmp_path):
    """Before: each process re-seated dead codes on its own batch, and the codebooks drifted apart."""
    ranks = two_process_lam(
        push, tmp_path / "run", regularizer="vq", max_steps=4, checkpoint_every=100,
        model_overrides={"dead_code_steps": 1},
    )  # fmt: skip
    assert ranks[0] == ranks[1]


def test_reward_warm_up_is_capped_before_it_is_checked(tmp_path):
    """Before: 'warmup_steps 50 >= max_steps 20: the learning rate never reaches its peak', for a warm-up of 2."""
    data = write_reward_episodes(tmp_path / "data", episodes=3, steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train_reward(
            [data], tmp_path / "run", max_steps=20, batch_size=4, progress=False,
            model_overrides={"channels": (8, 8, 8, 8), "hidden": 32},
        )  # fmt: skip
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["warmup_steps"] == 2


def test_a_negative_warm_up_is_refused_by_the_api_too():
    """The CLI refused --warmup-steps -5 (session 27), but train_world_model(warmup_steps=-5) still trained."""
    from dataclasses import replace

    from adaworld_gym.training.common import validate_run
    from adaworld_gym.training.world_model import WorldModelTrainConfig

    cfg = WorldModelTrainConfig.from_preset("tiny")
    validate_run(replace(cfg, warmup_steps=0))
    for bad in (-5, 2.5):
        with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
            validate_run(replace(cfg, warmup_steps=bad))
