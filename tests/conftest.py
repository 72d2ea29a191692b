"""Shared test fixtures."""

import os
import signal

import numpy as np
import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``-n 2``), one intra-op thread per worker, for the worker and what it starts:
    two workers at two threads each on two cores spin-wait on each other (see ``one_thread``)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spin-waiting makes 2 threads up to 8x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_shipped_bundle(tmp_path, monkeypatch):
    """Point the shipped-asset directory at an empty folder, so no shipped bundle is found."""
    from adaworld_gym import defaults

    path = tmp_path / "assets"
    path.mkdir()
    monkeypatch.setattr(defaults, "ASSETS", path)
    return path


@pytest.fixture
def dummy_display(monkeypatch):
    """pygame on SDL's dummy video and audio drivers (no display here); skipped without pygame."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    return pytest.importorskip("pygame")


@pytest.fixture
def cli_main():
    """``adaworld_gym.cli.main`` in-process, with the signal handlers it installs restored afterwards."""
    from adaworld_gym import cli

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield cli.main
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One subset of two short 64 px synthetic episodes with discrete actions (modules that need real Procgen
    episodes define their own ``data_dir``)."""
    from adaworld_gym.data.episodes import Episode, EpisodeStore

    root = tmp_path_factory.mktemp("data")
    store = EpisodeStore(root / "procgen-maze", create=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        frames = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
        store.write(f"ep_{i:06d}", Episode(frames=frames, actions=rng.integers(0, 15, 5)))
    return root
