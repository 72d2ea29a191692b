import subprocess
import sys

import numpy as np
import pytest

from adaworld_gym.data.collect import collect_procgen
from adaworld_gym.data.episodes import read_episode
from adaworld_gym.latent import compose, kmeans, load_options, plot_latents, sample_latents, save_options
from adaworld_gym.models.latent_action import LatentActionModel, lam_preset


@pytest.fixture(scope="module")
def lam_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("lam")
    LatentActionModel(**lam_preset("tiny")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    collect_procgen(["heist", "maze"], 2, 20, path, seed=0, batch=2)
    return path


def test_compose_averages_and_checks():
    a, b = np.zeros(4, np.float32), np.full(4, 2.0, np.float32)
    np.testing.assert_allclose(compose(a, b), np.ones(4))
    np.testing.assert_allclose(compose(a, b, weights=[3, 1]), np.full(4, 0.5))
    with pytest.raises(ValueError, match="NaN"):
        compose(a, np.full(4, np.nan))
    with pytest.raises(ValueError, match="at least one"):
        compose()
    for weights in ([2, -1], [np.nan, 1]):
        with pytest.raises(ValueError, match="non-negative weights"):
            compose(a, b, weights=weights)
    np.testing.assert_allclose(compose(a, b, weights=[1e308, 1e308]), np.ones(4))  # the sum overflowed to 0s


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0], [-5, 0], [0, 5]])
    points = np.concatenate([c + rng.normal(0, 0.1, (50, 2)) for c in centres])
    found = kmeans(points, 3, seed=0)
    for c in centres:
        assert np.min(np.linalg.norm(found - c, axis=1)) < 0.2


def test_options_round_trip_and_corruption(tmp_path):
    centres = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_options(tmp_path, centres)
    np.testing.assert_array_equal(load_options(tmp_path), centres)
    (tmp_path / "latent_options.safetensors").write_bytes(b"broken")
    with pytest.raises(ValueError, match="corrupt"):
        load_options(tmp_path)
    with pytest.raises(FileNotFoundError, match="cluster"):
        load_options(tmp_path / "none")
    (tmp_path / "fresh").mkdir()
    for bad in (np.zeros(4), np.zeros((0, 4)), np.full((2, 4), np.nan)):  # checked before anything is written
        with pytest.raises(ValueError, match=r"finite centres \[k, d\]"):
            save_options(tmp_path / "fresh", bad)
    assert not any((tmp_path / "fresh").iterdir())
    with pytest.raises(FileNotFoundError, match="not a directory"):
        save_options(tmp_path / "missing", centres)


def test_a_short_clip_gives_each_transition_once_and_its_share_goes_to_the_others(lam_dir, tmp_path):
    from adaworld_gym.data.episodes import Episode, EpisodeStore

    rng = np.random.default_rng(0)
    for subset, steps in (("video-short", 3), ("video-long", 40)):
        store = EpisodeStore(tmp_path / subset, create=True)
        store.write("ep_000000", Episode(frames=rng.integers(0, 256, (steps, 64, 64, 3), dtype=np.uint8)))
    mu, _, groups, names = sample_latents(LatentActionModel.from_pretrained(lam_dir), [tmp_path], 30, seed=0)
    short = names.index("video-short")
    assert (groups == short).sum() == 2 and len(mu) == 30  # its 2 transitions once, 28 from the long clip
    assert len(np.unique(mu[groups == short].round(5), axis=0)) == 2


def test_data_of_another_frame_size_than_the_lam_takes_is_named(lam_dir, tmp_path):
    """Mixed sizes failed in np.stack ("all input arrays must have the same shape"), naming no data."""
    from adaworld_gym.data.episodes import Episode, EpisodeStore

    rng = np.random.default_rng(0)
    for subset, size in (("big", 64), ("small", 32)):
        store = EpisodeStore(tmp_path / subset, create=True)
        store.write("ep_000000", Episode(frames=rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"the LAM takes 64x64 frames; the data holds 32x32 in .*small"):
        sample_latents(LatentActionModel.from_pretrained(lam_dir), [tmp_path], 6, seed=0)


def test_sample_latents_labels_match_windows(lam_dir, data_dir):
    model = LatentActionModel.from_pretrained(lam_dir)
    mu, actions, groups, names = sample_latents(model, [data_dir], 20, seed=0)
    assert mu.shape == (20, 32) and names == ["procgen-heist", "procgen-maze"]
    assert groups.tolist() == [0] * 10 + [1] * 10 and ((actions >= 0) & (actions < 15)).all()  # 20 / 2 each
    odd = sample_latents(model, [data_dir], 9, seed=0)  # the remainder goes to the first subsets: 9, not 8
    assert odd[2].tolist() == [0] * 5 + [1] * 4
    assert sample_latents(model, [data_dir], 1, seed=0)[0].shape == (1, 32)  # not one per subset
    again = sample_latents(model, [data_dir], 20, seed=0)
    np.testing.assert_array_equal(mu, again[0])
    np.testing.assert_array_equal(actions, again[1])


def test_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    path = plot_latents(
        rng.normal(size=(60, 8)), rng.integers(0, 3, 60), rng.integers(0, 2, 60), tmp_path / "p.png"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one_dim = plot_latents(rng.normal(size=(10, 1)), None, None, tmp_path / "one.png")  # one component
    assert one_dim.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for bad in (np.zeros((0, 8)), np.full((4, 8), np.nan)):
        with pytest.raises(ValueError, match=r"finite latent actions \[N, d\]"):
            plot_latents(bad, None, None, tmp_path / "bad.png")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "adaworld_gym.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_cli_encode_compose_cluster_plot(lam_dir, data_dir, tmp_path):
    episode = data_dir / "procgen-heist" / "ep_000000.awe"
    r = _cli("encode", episode, "--lam", lam_dir, "--out", tmp_path / "mu.npy")
    assert r.returncode == 0, r.stderr
    mu = np.load(tmp_path / "mu.npy")
    # One latent per transition: the LAM's encoding of each consecutive frame pair of the episode.
    frames = read_episode(episode).frames
    expected = LatentActionModel.from_pretrained(lam_dir).encode(frames[:-1], frames[1:])
    assert mu.shape == (len(frames) - 1, 32)
    np.testing.assert_allclose(mu, expected, atol=1e-4)
    np.save(tmp_path / "b.npy", np.ones(32, np.float32))
    r = _cli("compose", tmp_path / "mu.npy", tmp_path / "b.npy", "--out", tmp_path / "c.npy")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), (mu.mean(0) + 1) / 2, rtol=1e-5)
    r = _cli("cluster", "--lam", lam_dir, "--data", data_dir, "--k", "3", "--samples", "40")
    assert r.returncode == 0, r.stderr
    assert load_options(lam_dir).shape == (3, 32)
    r = _cli("plot", "--lam", lam_dir, "--data", data_dir, "--samples", "40", "--out", tmp_path / "p.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").exists()


def test_cli_errors_are_clear(lam_dir, tmp_path):
    # Each error names its own cause: a folder that holds no LAM, then (with a real LAM) a missing episode.
    r = _cli("encode", tmp_path / "nope.awe", "--lam", tmp_path, "--out", tmp_path / "x.npy")
    assert r.returncode == 2 and f"no LAM found at {tmp_path}" in r.stderr and "Traceback" not in r.stderr
    r = _cli("encode", tmp_path / "nope.awe", "--lam", lam_dir, "--out", tmp_path / "x.npy")
    assert r.returncode == 2 and f"no such file: {tmp_path / 'nope.awe'}" in r.stderr
    (tmp_path / "z.npy").write_bytes(b"junk")
    r = _cli("compose", tmp_path / "z.npy", "--out", tmp_path / "o.npy")
    assert r.returncode == 2 and "z.npy" in r.stderr
    with (tmp_path / "a.npy").open("wb") as f:  # an .npz archive under the .npy name
        np.savez(f, z=np.zeros(32, np.float32))
    r = _cli("compose", tmp_path / "a.npy", "--out", tmp_path / "o.npy")
    assert r.returncode == 2 and "a.npy" in r.stderr and ".npz archive" in r.stderr


def test_kmeans_names_too_few_distinct_points_and_refuses_non_finite_ones():
    points = np.repeat(np.eye(2, 4, dtype=np.float32), 5, axis=0)  # 10 vectors, 2 distinct
    with pytest.warns(UserWarning, match="only 2 distinct latent vectors for k=3"):
        assert kmeans(points, 3).shape == (3, 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        kmeans(np.full((4, 2), np.nan, np.float32), 2)


def test_control_options_stored_beside_a_lam_leave_its_fingerprint_alone(lam_dir, tmp_path):
    # `adaworld cluster` after `train-wm` made the world model's resume refuse its own LAM and `transfer` warn.
    import shutil

    from adaworld_gym.models.loading import model_fingerprint
    from adaworld_gym.training.common import _changed_inputs, training_provenance
    from adaworld_gym.training.world_model import LAM_NOTE, lam_note

    lam = tmp_path / "lam"
    shutil.copytree(lam_dir, lam)
    before, run_before = model_fingerprint(lam), training_provenance(tmp_path / "data", lam=lam)
    save_options(lam, np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32))
    assert model_fingerprint(lam) == before
    run_after = training_provenance(tmp_path / "data", lam=lam)
    assert _changed_inputs(run_before, run_after) == {}
    # One fingerprint for one LAM: the run's checkpoints and the world model's lam.json agree.
    assert run_after["models"]["lam"] == lam_note(lam)[LAM_NOTE]["digest"] == before
