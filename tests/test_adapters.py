"""Tests for the action adapters (real action -> latent action z) and their save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from adaworld_gym.models.adapters import (
    ActionCodebook,
    ActionMLP,
    LatentOptions,
    LatentPassthrough,
    load_adapter,
)

D = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def adapters() -> list:
    gen = torch.Generator().manual_seed(0)
    return [
        ActionCodebook(5, D, generator=gen),
        ActionMLP(2, D, low=[-1.0, 0.0], high=[1.0, 2.0]),
        LatentOptions(torch.randn(3, D, generator=gen)),
        LatentPassthrough(D, bound=2.0),
    ]


@pytest.mark.parametrize("adapter", adapters(), ids=lambda a: type(a).__name__)
def test_to_latent_matches_forward_and_round_trips(adapter, tmp_path):
    actions = adapter.action_space.sample()
    batch = np.stack([actions, adapter.action_space.sample()])
    z = adapter.to_latent(batch)
    assert z.dtype == np.float32 and z.shape == (2, D)
    assert np.allclose(z, adapter(torch.as_tensor(batch)).detach().numpy())
    adapter.save_pretrained(tmp_path)
    loaded = load_adapter(tmp_path)
    assert type(loaded) is type(adapter) and loaded.action_space == adapter.action_space
    assert np.array_equal(loaded.to_latent(batch), z)


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (np.array([[0, 1]]), "shape \\[B\\]"),
        (np.array([5]), "out of range"),
        (np.array([1.5]), "must be an integer"),
        (np.array(["a"]), "must be an integer"),
    ],
)
def test_codebook_rejects_bad_actions(actions, match):
    with pytest.raises(ValueError, match=match):
        ActionCodebook(5, D).to_latent(actions)


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (np.zeros((1, 3), np.float32), "shape \\[B, 2\\]"),
        (np.zeros(2, np.float32), "shape \\[B, 2\\]"),
        (np.array([[np.nan, 0.0]]), "NaN"),
        (np.array([[0.0, 2.5]]), "out of range: dimension 1"),
        (np.array([["a", "b"]]), "must be numbers"),
    ],
)
def test_mlp_rejects_bad_actions(actions, match):
    with pytest.raises(ValueError, match=match):
        ActionMLP(2, D, low=[-1.0, 0.0], high=[1.0, 2.0]).to_latent(actions)


def test_passthrough_rejects_out_of_range_but_forward_clips():
    adapter = LatentPassthrough(D, bound=2.0)
    with pytest.raises(ValueError, match="out of range"):
        adapter.to_latent(np.full((1, D), 3.0, np.float32))
    assert adapter(torch.full((1, D), 3.0)).max() == 2.0


def test_codebook_init_is_per_action_mean_and_reports_missing():
    rng = np.random.default_rng(0)
    actions = np.array([0, 0, 0, 2, 2, 3])
    mu = rng.standard_normal((6, D)).astype(np.float32)
    codebook = ActionCodebook(4, D, generator=torch.Generator().manual_seed(0))
    random_row = codebook.embedding.weight[1].detach().clone()
    missing = codebook.init_from_labelled(actions, mu)
    table = codebook.embedding.weight.detach().numpy()
    assert missing == [1]
    assert np.allclose(table[0], mu[:3].mean(0)) and np.allclose(table[2], mu[3:5].mean(0))
    assert np.allclose(table[3], mu[5])
    assert torch.equal(codebook.embedding.weight[1], random_row)


def test_codebook_init_caps_samples_per_action():
    mu = np.arange(10, dtype=np.float32)[:, None].repeat(D, axis=1)
    codebook = ActionCodebook(1, D)
    codebook.init_from_labelled(np.zeros(10, np.int64), mu, max_per_action=3, seed=0)
    row = codebook.embedding.weight[0].detach().numpy()
    assert any(np.allclose(row, mu[list(c)].mean(0)) for c in _triples(10))


def _triples(n: int):
    return ((a, b, c) for a in range(n) for b in range(a + 1, n) for c in range(b + 1, n))


def test_mlp_fit_reduces_error_on_linear_map():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (512, 2)).astype(np.float32)
    mu = actions @ rng.standard_normal((2, D)).astype(np.float32)
    mlp = ActionMLP(2, D)
    before = float(((mlp.to_latent(actions) - mu) ** 2).mean())
    after = mlp.fit(actions, mu, steps=300, lr=1e-2, seed=0)
    assert after < 0.1 * before
    assert np.isclose(after, ((mlp.to_latent(actions) - mu) ** 2).mean(), rtol=1e-4)


def test_load_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_adapter(tmp_path)
    ActionCodebook(3, D).save_pretrained(tmp_path)
    (tmp_path / "adapter.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="adapter.safetensors"):
        load_adapter(tmp_path)
    codebook = ActionCodebook(3, D)
    with torch.no_grad():
        codebook.embedding.weight[1, 0] = float("nan")
    codebook.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="NaN or inf in embedding.weight"):
        load_adapter(tmp_path)


def test_weights_of_another_save_beside_a_config_are_refused(tmp_path):
    ActionMLP(2, D, low=-1.0, high=1.0).save_pretrained(tmp_path / "a")
    ActionMLP(2, D, low=-10.0, high=10.0).save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "adapter.safetensors").replace(tmp_path / "a" / "adapter.safetensors")
    with pytest.raises(ValueError, match="its scale differs from what the config implies"):
        load_adapter(tmp_path / "a")


def test_motion_fit_without_episode_starts_keeps_the_means_in_the_rows():
    rng = np.random.default_rng(0)
    actions = np.arange(60) % 3
    means = rng.standard_normal((3, D))
    mu = (means[actions] + 0.01 * rng.standard_normal((60, D))).astype(np.float32)
    motion = np.hstack([np.zeros((60, D)), np.ones((60, 1))]).astype(np.float32)  # every window mid-episode
    book = ActionCodebook(3, D, motion_dim=D)
    with pytest.warns(UserWarning, match="no labelled window starts an episode"):
        book.fit_motion(actions, mu, motion)
    start = np.zeros((3, D + 1), np.float32)  # an env's first step: no context, flag 0
    np.testing.assert_allclose(book.to_latent(np.arange(3), start), means, atol=0.02)
    for ridge in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="ridge must be finite and > 0"):
            book.fit_motion(actions, mu, motion, ridge=ridge)


def test_fitting_on_non_finite_latents_is_refused():
    mu = np.zeros((6, D), np.float32)
    mu[2, 1] = np.nan
    with pytest.raises(ValueError, match="mu contains NaN"):
        ActionCodebook(3, D).init_from_labelled(np.arange(6) % 3, mu)
    with pytest.raises(ValueError, match="mu contains NaN"):
        ActionMLP(2, D, low=-1.0, high=1.0).fit(np.zeros((6, 2), np.float32), mu, steps=1)


def test_motion_adapters_add_a_fitted_term_that_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 5, 400)
    motion = np.hstack([rng.standard_normal((400, D)), (rng.random((400, 1)) < 0.9)]).astype(np.float32)
    motion[motion[:, -1] == 0, :D] = 0.0
    # mu = a row per action + a linear function of the previous latent (momentum) + noise
    rows, mix = rng.standard_normal((5, D)), rng.standard_normal((D, D)) * 0.5
    mu = (rows[actions] + motion[:, :D] @ mix + 0.01 * rng.standard_normal((400, D))).astype(np.float32)
    book = ActionCodebook(5, D, motion_dim=D)
    assert book.uses_motion and torch.equal(book(torch.tensor([1])), book.embedding(torch.tensor([1])))
    book.init_from_labelled(actions, mu)
    mse = book.fit_motion(actions, mu, motion)
    assert mse < 1e-3 and np.allclose(book.to_latent(actions[:50], motion[:50]), mu[:50], atol=0.05)
    book.save_pretrained(tmp_path / "book")
    loaded = load_adapter(tmp_path / "book")
    assert loaded.motion_dim == D
    np.testing.assert_array_equal(
        loaded.to_latent(actions[:8], motion[:8]), book.to_latent(actions[:8], motion[:8])
    )

    box = rng.uniform(-1, 1, (400, 2)).astype(np.float32)
    target = (np.tanh(box @ rng.standard_normal((2, D))) + motion[:, :D] @ mix).astype(np.float32)
    torch.manual_seed(0)
    plain, moving = ActionMLP(2, D, hidden=32), ActionMLP(2, D, hidden=32, motion_dim=D)
    assert moving.fit(box, target, steps=1500, motion=motion) < 0.5 * plain.fit(box, target, steps=1500)
    moving.save_pretrained(tmp_path / "mlp")
    np.testing.assert_array_equal(
        load_adapter(tmp_path / "mlp").to_latent(box[:4], motion[:4]), moving.to_latent(box[:4], motion[:4])
    )


@pytest.mark.parametrize(
    ("motion", "match"),
    [
        (None, "needs the motion context"),
        (np.zeros((2, D), np.float32), "must be float \\[2, 9\\]"),
        (np.zeros((2, D + 1), np.int64), "must be float"),
        (np.full((2, D + 1), np.nan, np.float32), "NaN"),
    ],
)
def test_motion_context_is_checked(motion, match):
    with pytest.raises(ValueError, match=match):
        ActionCodebook(5, D, motion_dim=D).to_latent(np.array([0, 1]), motion)


def test_an_adapter_without_motion_rejects_a_motion_context():
    with pytest.raises(ValueError, match="without motion"):
        ActionCodebook(5, D).to_latent(np.array([0]), np.zeros((1, D + 1), np.float32))
    with pytest.raises(ValueError, match="motion_dim > 0"):
        ActionCodebook(5, D).fit_motion(np.array([0]), np.zeros((1, D)), np.zeros((1, D + 1)))


def test_an_mlp_needs_action_and_latent_dimensions():
    for dims in ((0, 4), (2, 0)):
        with pytest.raises(ValueError, match="action_dim >= 1, latent_dim >= 1"):
            ActionMLP(*dims)


def test_motion_context_refuses_fractional_history_lengths():
    from adaworld_gym.latent import motion_context
    from adaworld_gym.models.bundle import tiny_random_bundle

    lam = tiny_random_bundle("discrete").lam
    history = np.zeros((2, 2, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="integers"):
        motion_context(lam, history, [1.7, 2.9])
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        lam.encode(history[:, 0], history[:, 1], chunk_size=0)


def test_adapters_sized_with_numpy_integers_save_and_load(tmp_path):
    """A Gymnasium Discrete's n is a numpy int64: the adapter trained, then failed to save (JSON TypeError)."""
    space = spaces.Discrete(5)
    cases = [
        (ActionCodebook(space.n, np.int32(4), motion_dim=np.int64(0)), np.array([0, 4])),
        (ActionMLP(np.int64(2), np.int64(4), hidden=np.int64(6)), np.array([[0.5, -0.5]], np.float32)),
        (LatentPassthrough(np.int64(4)), np.zeros((1, 4), np.float32)),
    ]
    for i, (adapter, actions) in enumerate(cases):
        adapter.save_pretrained(tmp_path / str(i))
        loaded = load_adapter(tmp_path / str(i))
        assert loaded.action_space == adapter.action_space
        assert np.array_equal(loaded.to_latent(actions), adapter.to_latent(actions))
    assert type(ActionCodebook(space.n, 4).config()["num_actions"]) is int
    for bad in (3.0, True, "3"):
        with pytest.raises(ValueError, match="num_actions must be an integer"):
            ActionCodebook(bad, 4)
