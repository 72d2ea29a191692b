"""Checkpoint format (atomic, pickle-free, resumable) and the train_lam loop on a tiny synthetic dataset, in one
process and in two."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from adaworld_gym.models import LatentActionModel, lam_preset
from adaworld_gym.training import (
    CheckpointError,
    evaluate_lam,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    train_lam,
)
from adaworld_gym.training.checkpoint import (
    capture_rng_state,
    flatten_state,
    list_checkpoints,
    restore_rng_state,
    unflatten_state,
)
from benchmarks.world_model import synthetic_push_like

TINY_32 = {"image_size": 32, "patch_size": 8}


def square_clips(n: int, size: int = 32, seed: int = 0) -> list[dict]:
    """Clip dicts (as ClipDataset yields them) of a square moved by one of 5 actions."""
    rng = np.random.default_rng(seed)
    moves = [(0, 0), (-4, 0), (4, 0), (0, -4), (0, 4)]
    clips = []
    for _ in range(n):
        a = int(rng.integers(0, 5))
        y, x = rng.integers(4, size - 12, 2)
        f_t = np.zeros((size, size, 3), np.uint8)
        f_t1 = np.zeros_like(f_t)
        f_t[y : y + 8, x : x + 8] = rng.integers(80, 256, 3)
        f_t1[y + moves[a][0] : y + moves[a][0] + 8, x + moves[a][1] : x + moves[a][1] + 8] = f_t[y, x]
        clips.append(
            {"history": f_t[None], "history_len": 1, "next": f_t1, "action": np.int64(a), "subset": 0}
        )
    return clips


# ------------------------------------------------------------------------------------------------ checkpoint
def test_flatten_roundtrip_keeps_types():
    state = {
        "t": torch.arange(3.0),
        "int_keys": {0: {"step": torch.tensor(2.0)}, 1: {}},
        "betas": (0.9, 0.999),
        "np": np.arange(4, dtype=np.uint32),
        "nested": [1, "a", None, {"x": 1.5}],
    }
    structure, tensors = flatten_state(state)
    json.dumps(structure)  # the structure must be plain JSON
    back = unflatten_state(json.loads(json.dumps(structure)), tensors)
    assert torch.equal(back["t"], state["t"]) and set(back["int_keys"]) == {0, 1}
    assert back["betas"] == (0.9, 0.999) and back["np"].dtype == np.uint32
    np.testing.assert_array_equal(back["np"], state["np"])
    assert back["nested"] == state["nested"]


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = LatentActionModel(**{**lam_preset("tiny"), **TINY_32})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
    return model, opt, sched


def _step(model, opt, sched, batch) -> float:
    out = model(*batch)  # kl: the sample noise comes from the global torch RNG
    out.loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()
    return float(out.loss.detach())


def test_checkpoint_resume_is_exact(tmp_path):
    batch = (torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    model, opt, sched = _setup()
    for _ in range(3):
        _step(model, opt, sched, batch)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "step": 3,
        "rng": capture_rng_state(),
    }
    path = save_checkpoint(tmp_path, 3, state)
    expected_next = _step(model, opt, sched, batch)
    py_next, np_next = random.random(), np.random.rand()  # noqa: NPY002 -- checks the global RNG restore

    model2, opt2, sched2 = _setup(seed=123)  # different init: everything must come from the checkpoint
    loaded = load_checkpoint(path)
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    restore_rng_state(loaded["rng"])
    assert loaded["step"] == 3
    assert _step(model2, opt2, sched2, batch) == expected_next
    assert (random.random(), np.random.rand()) == (py_next, np_next)  # noqa: NPY002
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_keeps_two_and_cleans_temp(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"step": step, "w": torch.full((2,), float(step))})
    (tmp_path / ".tmp-killed").mkdir()  # debris of a save killed mid-write: never picked up as a checkpoint
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000002", "step-000000003"]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 3
    save_checkpoint(tmp_path, 4, {"step": 4})
    assert not list(tmp_path.glob(".tmp-*"))
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def test_a_checkpoint_that_cannot_be_written_is_an_os_error_naming_it(tmp_path, monkeypatch):
    """A full disk raised safetensors' own error, which the CLI showed as a traceback."""
    from safetensors import SafetensorError

    from adaworld_gym.training import checkpoint

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(OSError, match=r"cannot write checkpoint .*step-000000001: .*No space left"):
        save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)})
    assert not list(tmp_path.iterdir())  # nothing half-written is left


def test_state_keys_that_would_share_a_tensor_name_are_refused():
    with pytest.raises(ValueError, match="map to the tensor name '/0'"):
        flatten_state({0: torch.zeros(1), "0": torch.ones(1)})


def test_edited_state_json_and_misnamed_checkpoints_are_detected(tmp_path):
    path = save_checkpoint(tmp_path, 5, {"step": 5, "train_seconds": 12.5, "w": torch.zeros(2)})
    text = (path / "state.json").read_text()
    (path / "state.json").write_text(text.replace("12.5", "92.5"))  # still valid JSON
    with pytest.raises(CheckpointError, match=r"state\.json: checksum mismatch"):
        load_checkpoint(path)
    (path / "state.json").write_text(text)
    moved = path.rename(tmp_path / "step-000000009")
    with pytest.raises(CheckpointError, match="holds step 5, not the step-000000009"):
        load_checkpoint(moved)


def test_a_corrupt_newer_checkpoint_is_set_aside_not_kept_in_place_of_good_ones(tmp_path):
    from adaworld_gym.training.common import resume_state

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for step in (100, 200):
        state = {
            "step": step,
            "samples": 0,
            "train_seconds": 0.0,
            "model_config": {},
            "model": model.state_dict(),
        }
        state.update(
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=capture_rng_state()
        )
        save_checkpoint(tmp_path, step, state)
    (tmp_path / "step-000000200" / "tensors.safetensors").write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="resuming from the checkpoint before it"):
        assert resume_state(tmp_path, {}, model, optimizer, scheduler)["step"] == 100
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000100"]
    assert (tmp_path / ".corrupt-step-000000200").is_dir()  # kept for a look, out of the listing
    save_checkpoint(tmp_path, 130, {"step": 130})
    save_checkpoint(tmp_path, 160, {"step": 160}, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000000160"]
    # The last one damaged too: nothing to fall back on, and the error says how to start over.
    (tmp_path / "step-000000160" / "tensors.safetensors").write_bytes(b"damaged")
    with pytest.raises(CheckpointError) as info:
        resume_state(tmp_path, {}, model, optimizer, scheduler)
    assert f"to start the run over, delete {tmp_path}" in info.value.__notes__[0]


@pytest.mark.parametrize("damage", ["truncate-tensors", "flip-tensors", "truncate-json", "missing"])
def test_corrupt_checkpoint_names_the_file(tmp_path, damage):
    path = save_checkpoint(tmp_path, 1, {"w": torch.arange(1000.0), "step": 1})
    tensors, state = path / "tensors.safetensors", path / "state.json"
    if damage == "truncate-tensors":
        tensors.write_bytes(tensors.read_bytes()[:100])
        bad = tensors
    elif damage == "flip-tensors":
        data = bytearray(tensors.read_bytes())
        data[-5] ^= 0xFF
        tensors.write_bytes(bytes(data))
        bad = tensors
    elif damage == "truncate-json":
        state.write_text(state.read_text()[:20])
        bad = state
    else:
        tensors.unlink()
        bad = tensors
    with pytest.raises(CheckpointError, match=str(bad).replace(".", r"\.")):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------------- train_lam
def test_train_lam_smoke_and_resume(tmp_path, monkeypatch):
    clips = square_clips(64)
    out = tmp_path / "run"
    kw = dict(model_overrides=TINY_32, batch_size=8, log_every=2, image_every=3, progress=False)
    model_dir = train_lam(clips, out, "tiny", max_steps=6, eval_data=clips[:16], **kw)

    assert model_dir == out / "model"
    assert list((out / "logs").glob("events.out.tfevents.*"))
    model = LatentActionModel.from_pretrained(model_dir)
    assert model.config.preset == "tiny" and model.config.image_size == 32
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and {"psnr_model", "psnr_copy_last"} <= set(summary["eval"])
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["step"] == 6

    # A second call with a larger budget resumes at step 6 rather than starting over: it trains 3 steps, not 9.
    forward, calls = LatentActionModel.forward, []
    monkeypatch.setattr(
        LatentActionModel, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k)
    )
    train_lam(clips, out, "tiny", max_steps=9, **kw)
    monkeypatch.undo()
    assert len(calls) == 3 and json.loads((out / "summary.json").read_text())["steps"] == 9
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["step"] == 9

    # The same run directory with another model config is refused.
    with pytest.raises(ValueError, match="different model config"):
        train_lam(clips, out, "tiny", max_steps=12, **{**kw, "model_overrides": {**TINY_32, "width": 64}})
    # So is another seed or batch size: the run would go on with the old ones while train_config.json named the new.
    with pytest.raises(ValueError, match=r"other batch_size and seed \(batch_size: 8, seed: 0\)"):
        train_lam(clips, out, "tiny", max_steps=12, **{**kw, "batch_size": 4}, seed=3)
    assert json.loads((out / "train_config.json").read_text())["batch_size"] == 8


def test_a_second_run_of_one_out_dir_is_refused_while_the_first_goes(tmp_path):
    """Rerun while the first still ran, each deleted the other's half-written checkpoints and one crashed."""
    import fcntl

    from adaworld_gym.training.common import RUN_LOCK

    clips, out = square_clips(16), tmp_path / "run"
    kw = dict(model_overrides=TINY_32, batch_size=4, max_steps=1, progress=False)
    out.mkdir()
    with open(out / RUN_LOCK, "ab") as held:  # what a running train_lam holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another run is using .*run"):
            train_lam(clips, out, "tiny", **kw)
    assert not (out / "checkpoints").exists()
    train_lam(clips, out, "tiny", **kw)  # released: it runs
    # A run refused before it wrote anything leaves no directory made for its lock behind.
    with pytest.raises(ValueError):
        train_lam(clips, tmp_path / "fresh", "tiny", **{**kw, "batch_size": 0})
    assert not (tmp_path / "fresh").exists()


def test_train_lam_same_seed_same_weights(tmp_path):
    clips = square_clips(32)
    kw = dict(model_overrides=TINY_32, batch_size=8, max_steps=3, progress=False)
    a = LatentActionModel.from_pretrained(train_lam(clips, tmp_path / "a", "tiny", seed=3, **kw))
    b = LatentActionModel.from_pretrained(train_lam(clips, tmp_path / "b", "tiny", seed=3, **kw))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_train_lam_vq(tmp_path):
    # The other regularisers run through the same lines of the loop; the model tests cover their forward.
    kw = dict(max_steps=2, batch_size=8, model_overrides=TINY_32, progress=False)
    path = train_lam(square_clips(16), tmp_path, "tiny", regularizer="vq", **kw)
    assert LatentActionModel.from_pretrained(path).config.regularizer == "vq"


def test_train_lam_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown LAM preset"):
        train_lam(square_clips(4), tmp_path, "huge", max_steps=1)
    with pytest.raises(ValueError, match="unknown regularizer"):
        train_lam(square_clips(4), tmp_path, "tiny", regularizer="gumbel", max_steps=1)


def test_a_resume_on_data_that_changed_since_the_kill_is_refused(tmp_path):
    """Episodes added to the data directory between a kill and the resume changed the batches, unnoticed."""
    from adaworld_gym.data.episodes import Episode, EpisodeStore
    from benchmarks.world_model import synthetic_push_like

    data = synthetic_push_like(tmp_path / "a", episodes=2, steps=8, seed=0)
    kw = dict(batch_size=4, progress=False)
    train_lam(str(data), tmp_path / "run", "tiny", max_steps=2, **kw)
    frames = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    EpisodeStore(data).write("ep_000099", Episode(frames=frames))
    with pytest.raises(ValueError, match="was trained with other episodes"):
        train_lam(str(data), tmp_path / "run", "tiny", max_steps=4, **kw)


def test_train_lam_init_from_and_data_shares(tmp_path):
    from benchmarks.world_model import synthetic_push_like

    a = str(synthetic_push_like(tmp_path / "a", episodes=2, steps=8, seed=0))
    b = str(synthetic_push_like(tmp_path / "b", episodes=2, steps=8, seed=1))
    kw = dict(batch_size=4, progress=False)
    # {directory: share} goes through the mixture sampler.
    first = train_lam({a: 0.8, b: 0.2}, tmp_path / "first", "tiny", max_steps=2, **kw)
    # max_steps=0: nothing is trained, so the saved model must equal the one it started from.
    again = train_lam([a, b], tmp_path / "again", "tiny", max_steps=0, init_from=first, **kw)
    for pa, pb in zip(
        LatentActionModel.from_pretrained(first).parameters(),
        LatentActionModel.from_pretrained(again).parameters(),
        strict=True,
    ):
        assert torch.equal(pa, pb)
    assert json.loads((tmp_path / "again" / "train_config.json").read_text())["init_from"] == str(first)
    with pytest.raises(ValueError, match="its model config differs in width"):
        train_lam(
            a, tmp_path / "c", "tiny", max_steps=1, init_from=first, model_overrides={"width": 64}, **kw
        )
    # Started from a model of another preset (a tiny LAM finetuned under the default small preset): the error says
    # which preset to pass.
    with pytest.raises(
        ValueError, match="it is of the 'tiny' preset, this run's is 'small': pass --preset tiny"
    ):
        train_lam(a, tmp_path / "f", "small", max_steps=1, init_from=first, **kw)
    # A loss-only setting may change: the weights still fit.
    stronger = train_lam(a, tmp_path / "e", "tiny", max_steps=0, init_from=first, beta=1e-3, **kw)
    assert LatentActionModel.from_pretrained(stronger).config.beta == 1e-3
    with pytest.raises(ValueError, match="data shares must be"):
        train_lam({a: -1.0, b: 0.0}, tmp_path / "d", "tiny", max_steps=1, **kw)


def test_evaluate_lam_refuses_to_read_sampled_data_to_its_end(tmp_path):
    from synthetic_data import grid_episodes

    data = grid_episodes(tmp_path, episodes=2, steps=4)
    model = LatentActionModel(**lam_preset("tiny"))
    with pytest.raises(ValueError, match="sampled without end"):  # used to loop for ever
        evaluate_lam(model, str(data), batch_size=2, max_batches=None)
    assert np.isfinite(
        evaluate_lam(model, str(data), batch_size=2, max_batches=2)["psnr_model"]
    )  # bounded: runs


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"checkpoint_every": 0}, "checkpoint_every must be an int >= 1"),
        ({"log_every": 0}, "log_every must be an int >= 1"),
        ({"image_every": 0}, "image_every must be an int >= 1"),
        ({"grad_clip": 0.0}, "grad_clip must be finite and > 0"),
        ({"grad_clip": -1.0}, "grad_clip must be finite and > 0"),
        ({"checkpoint_minutes": 0.0}, "checkpoint_minutes must be > 0"),
        ({"lr": 0.0}, "lr must be finite and > 0"),  # trained nothing, and saved the model as trained
        ({"lr": float("nan")}, "lr must be finite and > 0"),
    ],
)
def test_bad_loop_settings_are_refused_before_training(tmp_path, setting, message):
    from dataclasses import replace

    from adaworld_gym.training.common import validate_run
    from adaworld_gym.training.lam import LamTrainConfig

    with pytest.raises(ValueError, match=message):
        validate_run(replace(LamTrainConfig.from_preset("tiny"), **setting))


def test_a_warm_up_longer_than_the_run_is_warned_about():
    from dataclasses import replace

    from adaworld_gym.training.common import validate_run
    from adaworld_gym.training.lam import LamTrainConfig

    with pytest.warns(UserWarning, match="never reaches its peak"):
        validate_run(replace(LamTrainConfig.from_preset("small"), max_steps=100))


def test_resuming_with_another_weight_decay_is_refused(tmp_path):
    from adaworld_gym.training.common import resume_state

    def run(weight_decay: float):
        model = torch.nn.Linear(2, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=weight_decay)
        return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    model, optimizer, scheduler = run(0.01)
    state = {"step": 1, "samples": 0, "train_seconds": 0.0, "model_config": {}, "model": model.state_dict()}
    state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=capture_rng_state())
    save_checkpoint(tmp_path, 1, state)
    assert resume_state(tmp_path, {}, *run(0.01))["step"] == 1
    with pytest.raises(ValueError, match=r"weight_decay \[0\.01\], now asked for \[0\.5\]"):
        resume_state(tmp_path, {}, *run(0.5))


def test_the_lam_takes_the_frame_size_training_reads(tmp_path):
    """The data's frame size, from what training samples: not a 0-share directory, not a 1-frame episode, and
    an --init-from LAM trained on the same data fits without --set image_size."""
    from adaworld_gym.data.clips import data_frame_size
    from adaworld_gym.data.episodes import Episode, EpisodeStore

    rng = np.random.default_rng(0)

    def subset(path, size, frames=6):
        EpisodeStore(path, create=True).write(
            "ep_0", Episode(rng.integers(0, 256, (frames, size, size, 3), np.uint8))
        )

    subset(tmp_path / "d32" / "a", 32)
    subset(tmp_path / "d64" / "a", 64)
    subset(tmp_path / "mixed" / "a-first", 64, frames=1)  # nothing to train on: not the size
    subset(tmp_path / "mixed" / "b", 32)
    assert data_frame_size({str(tmp_path / "d32"): 0.0, str(tmp_path / "d64"): 1.0}) == 64
    assert data_frame_size([tmp_path / "mixed"]) == 32
    assert data_frame_size([{"history": None}]) is None  # in-memory clips: the preset's size
    first = train_lam([tmp_path / "d32"], tmp_path / "lam", preset="tiny", max_steps=2)
    again = train_lam([tmp_path / "d32"], tmp_path / "ft", preset="tiny", max_steps=2, init_from=first)
    assert json.loads((Path(again) / "config.json").read_text())["image_size"] == 32


def test_a_damaged_episode_stops_training_after_a_save_and_collect_writes_it_again(tmp_path):
    import warnings

    from adaworld_gym.data.collect import collect_procgen
    from adaworld_gym.data.episodes import EpisodeError, read_episode

    data = tmp_path / "data"
    collect_procgen(["heist"], 12, 6, data, seed=0, batch=4)
    shard = data / "procgen-heist" / "ep_000005.awe"
    intact, episode = shard.read_bytes(), read_episode(shard)
    kw = dict(batch_size=1, max_steps=40, checkpoint_every=1000, log_every=1000, progress=False)
    clean = LatentActionModel.from_pretrained(train_lam([data], tmp_path / "clean", "tiny", **kw))

    shard.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(EpisodeError, match="rerun the command that collected it") as failure:
        train_lam([data], tmp_path / "run", "tiny", **kw)
    saved = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))["step"]
    assert 0 < saved < 40 and failure.value.__notes__ == [
        f"the steps up to {saved} are saved: a rerun resumes there"
    ]
    # Rerunning the collection sets the damaged shard aside and writes the same episode again.
    with pytest.warns(UserWarning, match="1 damaged episode.*ep_000005"):
        report = collect_procgen(["heist"], 12, 6, data, seed=0, batch=4)
    assert report.episodes_written == 1
    np.testing.assert_array_equal(read_episode(shard).frames, episode.frames)
    assert (shard.parent / "ep_000005.awe.corrupt").exists()
    # The resumed run draws the batch it failed on: it ends where the uninterrupted one did.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no data-position warning either
        resumed = LatentActionModel.from_pretrained(train_lam([data], tmp_path / "run", "tiny", **kw))
    for a, b in zip(clean.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rerunning_a_finished_run_keeps_the_control_options_new_weights_drop_them(tmp_path):
    from adaworld_gym.latent import load_options, save_options

    clips = square_clips(16)
    kw = dict(model_overrides=TINY_32, batch_size=8, progress=False)
    model_dir = train_lam(clips, tmp_path / "run", "tiny", max_steps=2, **kw)
    centres = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_options(model_dir, centres)
    train_lam(clips, tmp_path / "run", "tiny", max_steps=2, **kw)  # finished: saves the same weights
    np.testing.assert_array_equal(load_options(model_dir), centres)
    with pytest.warns(
        UserWarning, match="latent_options.safetensors, made for its earlier weights: not kept"
    ):
        train_lam(clips, tmp_path / "run", "tiny", max_steps=3, **kw)  # trained on: other latents
    with pytest.raises(FileNotFoundError, match="run `adaworld cluster` first"):
        load_options(model_dir)


# ------------------------------------------------------------------------------- two CPU processes, one model

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


@pytest.mark.usefixtures("one_thread")
def test_two_processes_with_a_wall_clock_budget_stop_together(push, tmp_path):
    """Before: a process whose clock ran out a step earlier waited in the final save while the other trained on."""
    ranks = two_process_lam(push, tmp_path / "run", max_minutes=0.02, checkpoint_every=1000)
    assert ranks[0] == ranks[1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] >= 1  # (its own clock may be short of the budget: the other process stopped it)


@pytest.mark.usefixtures("one_thread")
def test_two_processes_train_one_vq_codebook(push, tmp_path):
    """Before: each process re-seated dead codes on its own batch, and the codebooks drifted apart."""
    ranks = two_process_lam(
        push, tmp_path / "run", regularizer="vq", max_steps=4, checkpoint_every=100,
        model_overrides={"dead_code_steps": 1},
    )  # fmt: skip
    assert ranks[0] == ranks[1]
