"""A killed and resumed training run ends exactly where an uninterrupted one does (CPU, tiny presets).

A SIGKILL leaves a run with the checkpoints it wrote: the killed run is simulated by copying the uninterrupted
run's checkpoint at step k (its first k steps are the killed run's) into a fresh directory and training again
to the same budget. A SIGTERM is held until the step ends, then saved (``CheckpointClock``); it is raised for
real in the adaptation test. Then every part of the final checkpoint (weights, optimizer, schedule, EMA, RNG and
data states) must equal the uninterrupted run's bit for bit.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_data import grid_episodes, save_tiny_models

from adaworld_gym.data.clips import WindowBatches
from adaworld_gym.data.episodes import Episode, EpisodeStore
from adaworld_gym.models import LatentActionModel, lam_preset
from adaworld_gym.training import latest_checkpoint, load_checkpoint, train_lam
from adaworld_gym.training.adapt import adapt
from adaworld_gym.training.reward import train_reward
from adaworld_gym.training.world_model import train_world_model, window_batches
from benchmarks.world_model import synthetic_push_like

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------- helpers
def assert_same(a, b, where="state"):
    """Nested states equal bit for bit (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def final_state(run: Path) -> dict:
    state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    state.pop("train_seconds")  # wall clock
    return state


def killed_copy(run: Path, step: int, dest: Path, logs: bool = False) -> Path:
    """The run directory a kill after the checkpoint at ``step`` leaves (with the logs written until the kill)."""
    name = f"step-{step:09d}"
    shutil.copytree(run / "checkpoints" / name, dest / "checkpoints" / name)
    if logs:
        shutil.copytree(run / "logs", dest / "logs")
    return dest


def square_clips(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        f_t = np.zeros((32, 32, 3), np.uint8)
        y, x = rng.integers(4, 20, 2)
        f_t[y : y + 8, x : x + 8] = rng.integers(80, 256, 3)
        clips.append({"history": f_t[None], "history_len": 1, "next": np.roll(f_t, 4, axis=1)})
    return clips


@pytest.fixture(scope="module")
def push(tmp_path_factory):
    return synthetic_push_like(tmp_path_factory.mktemp("push"), episodes=3, steps=10, seed=0)


# ------------------------------------------------------------------------------------------- data streams
def test_window_batches_continue_from_a_saved_position(push, tmp_path):
    """Lists (mid-epoch, across epoch ends), ClipDataset and mixtures continue with the same windows."""
    other = synthetic_push_like(tmp_path / "other", episodes=2, steps=6, seed=1)
    sources = {
        "list": square_clips(10),  # batches of 4 straddle the epoch ends
        "dir": str(push),
        "mixture": {str(push): 0.7, str(other): 0.3},
    }
    for name, data in sources.items():
        for k in (0, 1, 2, 3, 5):
            ahead = window_batches(data, 1, 4, seed=3)
            for _ in range(k):
                next(ahead)
            state = json.loads(json.dumps(ahead.state_dict()))  # as a checkpoint stores it
            resumed = window_batches(data, 1, 4, seed=3)
            resumed.load_state_dict(state)
            for _ in range(3):
                assert_same(next(ahead), next(resumed), f"{name} after {k} batches")
    one_shot = WindowBatches(iter(square_clips(8)), 1, 4, seed=0, collate=len)
    assert one_shot.state_dict() is None and list(one_shot) == [4, 4]


# ---------------------------------------------------------------------------------------------- trainers
def test_lam_resumed_after_a_kill_matches_the_uninterrupted_run(tmp_path):
    clips = square_clips(36)  # 36 / 8: the resumed batch 5 straddles the first epoch's end
    kw = dict(
        model_overrides={"image_size": 32, "patch_size": 8}, batch_size=8, max_steps=9, log_every=2,
        image_every=3, checkpoint_every=5, eval_data=clips[:8], progress=False,
    )  # fmt: skip
    train_lam(clips, tmp_path / "a", "tiny", **kw)
    train_lam(clips, killed_copy(tmp_path / "a", 5, tmp_path / "b"), "tiny", **kw)
    assert_same(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    a, b = (LatentActionModel.from_pretrained(tmp_path / r / "model") for r in "ab")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_world_model_resumed_after_a_kill_matches_and_logs_each_step_once(push, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    lam_dir = tmp_path / "lam"
    LatentActionModel(**lam_preset("tiny")).save_pretrained(lam_dir)
    kw = dict(
        max_steps=6, batch_size=4, log_every=2, image_every=100, checkpoint_every=3, eval_data=str(push),
        progress=False,
    )  # fmt: skip
    train_world_model(str(push), tmp_path / "a", str(lam_dir), "tiny", **kw)
    # Killed after logging step 6: steps 4..6 are trained and logged again, their old entries purged.
    b = killed_copy(tmp_path / "a", 3, tmp_path / "b", logs=True)
    train_world_model(str(push), b, str(lam_dir), "tiny", **kw)
    assert_same(final_state(tmp_path / "a"), final_state(b))

    def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
        events = EventAccumulator(str(run / "logs"))
        events.Reload()
        return [(e.step, e.value) for e in events.Scalars(tag)]

    # The log at step 4 averages steps 3 and 4: the checkpoint carried step 3's loss across the kill.
    for tag in ("loss/denoise", "grad_norm", "eval/psnr_1step"):
        assert scalars(b, tag) == scalars(tmp_path / "a", tag), tag


def write_reward_episodes(root: Path, episodes: int = 6, steps: int = 8) -> Path:
    store = EpisodeStore(root, create=True)
    rng = np.random.default_rng(0)
    for e in range(episodes):
        frames = rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8)
        rewards = (rng.random(steps) < 0.2).astype(np.float32)
        terminations = np.zeros(steps, bool)
        terminations[-1] = True
        store.write(
            f"ep_{e:06d}",
            Episode(
                frames=frames, actions=rng.integers(0, 4, steps), rewards=rewards, terminations=terminations,
                env_id="synthetic", action_space={"type": "discrete", "n": 4},
            ),
        )  # fmt: skip
    return root


def test_reward_resumed_after_a_kill_matches_the_uninterrupted_run(tmp_path):
    data = write_reward_episodes(tmp_path / "data")
    kw = dict(
        max_steps=8, batch_size=8, seed=1, model_overrides={"channels": (8, 8, 8, 8), "hidden": 32},
        log_every=3, checkpoint_every=4, progress=False,
    )  # fmt: skip
    train_reward([data], tmp_path / "a", **kw)
    train_reward([data], killed_copy(tmp_path / "a", 4, tmp_path / "b"), **kw)
    assert_same(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    summaries = [json.loads((tmp_path / r / "summary.json").read_text()) for r in "ab"]
    for s in summaries:  # timings differ
        s.pop("train_minutes"), s.pop("samples_per_s")
    assert summaries[0] == summaries[1]


@pytest.fixture(scope="module")
def adaptation(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    wm_dir, lam_dir, _ = save_tiny_models(root)
    kw = dict(
        samples_per_action=6, max_steps=7, batch_size=4, eval_denoise_steps=1, log_every=2, eval_at=[0, 3, 7],
        eval_data=grid_episodes(root / "eval", episodes=3, seed=1), eval_samples=8, checkpoint_every=3, progress=False,
    )  # fmt: skip
    return wm_dir, lam_dir, grid_episodes(root, episodes=3), kw


def test_adapt_resumed_after_sigterm_matches_the_uninterrupted_run(adaptation, tmp_path, monkeypatch):
    import adaworld_gym.training.adapt as adapt_module

    wm_dir, lam_dir, grid, kw = adaptation
    adapt(wm_dir, lam_dir, grid, tmp_path / "a", **kw)

    calls, real_loss = [], adapt_module.window_loss

    def terminated_in_step_5(*args, **kwargs):  # SIGTERM during step 5, off the checkpoint schedule
        calls.append(1)
        if len(calls) == 5:
            signal.raise_signal(signal.SIGTERM)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(adapt_module, "window_loss", terminated_in_step_5)
    with pytest.raises(KeyboardInterrupt, match="held until step 5"):
        adapt(wm_dir, lam_dir, grid, tmp_path / "b", **kw)
    monkeypatch.setattr(adapt_module, "window_loss", real_loss)
    assert load_checkpoint(latest_checkpoint(tmp_path / "b" / "checkpoints"))["step"] == 5
    adapt(wm_dir, lam_dir, grid, tmp_path / "b", **kw)

    assert_same(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    a, b = (json.loads((tmp_path / r / "summary.json").read_text()) for r in "ab")
    assert [e["step"] for e in b["evals"]] == [0, 3, 7] and b["evals"] == a["evals"]  # held-out PSNR too
    assert b["session_losses"] == a["session_losses"][5:]  # this session's steps 6 and 7


def test_checkpoint_of_older_code_resumes_as_it_did_with_a_warning(adaptation, tmp_path):
    """No data position in the checkpoint: a fresh stream seeded with seed + step, as before, and a warning."""
    wm_dir, lam_dir, grid, kw = adaptation
    adapt(wm_dir, lam_dir, grid, tmp_path / "a", **{**kw, "max_steps": 3})
    path = latest_checkpoint(tmp_path / "a" / "checkpoints")
    manifest = json.loads((path / "state.json").read_text())
    for key in ("data_stream", "log_window"):
        del manifest["state"][key]
    del manifest["sha256"]["state"]  # older code kept no digest of its JSON either
    (path / "state.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="holds no data position"):
        adapt(wm_dir, lam_dir, grid, tmp_path / "a", **kw)
    state = load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints"))
    assert state["step"] == 7 and state["data_stream"]["kind"] == "sequence"


@pytest.mark.parametrize("kind", ["lam", "world_model"])
def test_two_process_run_resumed_after_a_kill_matches(push, tmp_path, kind):
    """Each process's data position and generators are checkpointed, not only the main one's."""
    import os
    import socket
    import subprocess
    import sys

    lam_dir = tmp_path / "lam"
    torch.manual_seed(0)
    LatentActionModel(**lam_preset("tiny")).save_pretrained(lam_dir)

    def run(out: Path) -> None:
        with socket.socket() as s:  # a free port for the process group
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        script = Path(__file__).with_name("multiprocess_training.py")
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(port), str(script), kind, str(push), str(out), str(lam_dir)]  # fmt: skip
        root = str(Path(__file__).resolve().parents[1])  # the code under test, whatever is installed
        env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    run(tmp_path / "a")
    # One model: the processes' weights agree after the last step (the world model's loss bypasses DDP's hooks)
    ranks = [json.loads((tmp_path / "a" / f"weights_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and len(ranks[0]) == 1
    uninterrupted = final_state(tmp_path / "a")
    assert len(uninterrupted["other_processes"]) == 1
    assert uninterrupted["other_processes"][0]["data_stream"] != uninterrupted["data_stream"]
    run(killed_copy(tmp_path / "a", 3, tmp_path / "b"))
    assert_same(uninterrupted, final_state(tmp_path / "b"))


def test_a_non_finite_loss_stops_training_before_it_reaches_the_weights(push, tmp_path, monkeypatch):
    import adaworld_gym.training.world_model as wm_training

    real_loss, calls = wm_training.window_loss, []

    def nan_at_third_step(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(wm_training, "window_loss", nan_at_third_step)
    kw = dict(max_steps=6, batch_size=4, log_every=2, image_every=100, checkpoint_every=2, progress=False)
    with pytest.raises(FloatingPointError, match="not finite at step 3"):
        train_world_model(str(push), tmp_path / "run", None, "tiny", action_agnostic=True, **kw)
    state = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert state["step"] == 2  # the NaN step was neither applied nor saved
    assert all(torch.isfinite(t).all() for t in state["model"].values())
