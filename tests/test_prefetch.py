"""Batches drawn ahead in a thread, and the training noise generator's device (both for GPU runs; checked on CPU)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from test_training_resume import assert_same, final_state, killed_copy, square_clips

from adaworld_gym.data.clips import PrefetchedBatches, WindowBatches
from adaworld_gym.models import LatentActionModel, lam_preset
from adaworld_gym.training.common import noise_generator, restore_noise_generator
from adaworld_gym.training.world_model import train_world_model, window_batches
from benchmarks.world_model import synthetic_push_like

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def push(tmp_path_factory):
    return synthetic_push_like(tmp_path_factory.mktemp("push"), episodes=3, steps=10, seed=0)


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetched_batches_and_positions_are_the_streams(push, depth):
    for data in (str(push), square_clips(10)):
        plain = window_batches(data, 1, 4, seed=3)
        with PrefetchedBatches(window_batches(data, 1, 4, seed=3), depth=depth) as ahead:
            assert_same(ahead.state_dict(), plain.state_dict(), "before the first batch")
            for k in range(5):
                assert_same(next(ahead), next(plain), f"batch {k}")
                time.sleep(0.01)  # let the thread run ahead: the position is still the handed-out batch's
                assert_same(ahead.state_dict(), plain.state_dict(), f"position after {k + 1} batches")
        # Resuming a plain stream from a prefetched stream's (JSON round-tripped) position continues it.
        resumed = window_batches(data, 1, 4, seed=3)
        resumed.load_state_dict(json.loads(json.dumps(ahead.state_dict())))
        assert_same(next(resumed), next(plain), "after resuming")


def test_prefetched_batches_end_with_the_stream_and_stop_their_thread():
    stream = window_batches(square_clips(10), 1, 4, seed=0, epochs=1)
    ahead = PrefetchedBatches(stream)
    assert [len(b["next"]) for b in ahead] == [4, 4, 2]  # evaluation keeps the last partial batch
    with pytest.raises(StopIteration):
        next(ahead)
    assert not ahead._thread.is_alive()


def test_prefetch_thread_errors_reach_the_caller():
    def collate(clips):
        if len(collate.calls) == 1:
            raise ValueError("broken window")
        collate.calls.append(1)
        return len(clips)

    collate.calls = []
    ahead = PrefetchedBatches(WindowBatches(square_clips(12), 1, 4, seed=0, collate=collate))
    assert next(ahead) == 4
    with pytest.raises(ValueError, match="broken window"):
        next(ahead)
    with pytest.raises(StopIteration):
        next(ahead)


def test_the_thread_starts_at_the_first_batch_and_close_stops_it_and_ends_the_stream():
    before = threading.active_count()
    ahead = PrefetchedBatches(window_batches(square_clips(40), 1, 4, seed=0), depth=1)
    assert threading.active_count() == before  # nothing drawn for a run that stops before its first step
    ahead.close()
    ahead = PrefetchedBatches(window_batches(square_clips(40), 1, 4, seed=0), depth=1)
    next(ahead)
    time.sleep(0.05)  # the queue fills and the thread waits to put the next batch
    assert threading.active_count() == before + 1
    ahead.close()
    assert not ahead._thread.is_alive() and threading.active_count() == before
    with pytest.raises(StopIteration):  # not a wait for a thread that is gone
        next(ahead)


def test_prefetch_depth_is_checked(push):
    with pytest.raises(ValueError, match="depth"):
        PrefetchedBatches(window_batches(str(push), 1, 4, seed=0), depth=0)
    with pytest.raises(ValueError, match="prefetch_batches"):
        train_world_model(str(push), "unused", None, "tiny", action_agnostic=True, prefetch_batches=-1)


def test_world_model_trains_on_the_same_batches_with_prefetch_and_resumes_exactly(push, tmp_path):
    torch.manual_seed(0)
    lam_dir = tmp_path / "lam"
    LatentActionModel(**lam_preset("tiny")).save_pretrained(lam_dir)
    kw = dict(max_steps=6, batch_size=4, image_every=100, checkpoint_every=3, progress=False)
    train_world_model(str(push), tmp_path / "plain", str(lam_dir), "tiny", prefetch_batches=0, **kw)
    train_world_model(str(push), tmp_path / "ahead", str(lam_dir), "tiny", prefetch_batches=2, **kw)
    assert_same(final_state(tmp_path / "plain"), final_state(tmp_path / "ahead"))
    # Killed after the checkpoint at step 3 (written while the thread had drawn batches 4 and 5 already).
    resumed = killed_copy(tmp_path / "ahead", 3, tmp_path / "resumed")
    train_world_model(str(push), resumed, str(lam_dir), "tiny", prefetch_batches=2, **kw)
    assert_same(final_state(tmp_path / "plain"), final_state(resumed))


def test_noise_generator_state_of_another_device_reseeds_with_a_warning():
    gen = noise_generator(torch.device("cpu"), 5)
    assert gen.device.type == "cpu" and torch.equal(torch.randn(3, generator=gen), torch.randn(
        3, generator=torch.Generator().manual_seed(5)))  # fmt: skip
    saved = gen.get_state()
    expected = torch.randn(4, generator=gen)
    restore_noise_generator(gen, saved, seed=99)
    assert torch.equal(torch.randn(4, generator=gen), expected)
    cuda_like = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: seed and offset, 16 bytes
    with pytest.warns(UserWarning, match="not a cpu one"):
        restore_noise_generator(gen, cuda_like, seed=99)
    np.testing.assert_array_equal(
        torch.randn(4, generator=gen).numpy(),
        torch.randn(4, generator=torch.Generator().manual_seed(99)).numpy(),
    )


def test_every_training_draw_is_made_on_the_generators_device(push, monkeypatch):
    """On a GPU the generator is a CUDA one: a draw without device= would be made on the CPU and fail there."""
    from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset
    from adaworld_gym.training.world_model import window_loss

    draws = []
    for name in ("rand", "randn", "randint"):
        real = getattr(torch, name)

        def recording(*args, _real=real, _name=name, **kw):
            if kw.get("generator") is not None:
                draws.append((_name, kw.get("device"), kw["generator"].device))
            return _real(*args, **kw)

        monkeypatch.setattr(torch, name, recording)
    model = DiffusionWorldModel(**world_model_preset("tiny"))
    batch = next(window_batches(str(push), model.config.num_history, 4, seed=0))
    window_loss(
        model, batch, torch.zeros(4, model.config.action_dim), noise_generator(torch.device("cpu"), 0)
    )
    assert len(draws) >= 6 and all(
        device is not None and torch.device(device) == gen for _, device, gen in draws
    ), draws


def test_a_prefetched_stream_dropped_without_close_stops_its_thread():
    import gc

    ahead = PrefetchedBatches(window_batches(square_clips(40), 1, 4, seed=0), depth=1)
    next(ahead)
    thread = ahead._thread
    del ahead
    gc.collect()
    thread.join(timeout=2)
    assert not thread.is_alive()
