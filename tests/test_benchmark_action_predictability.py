"""benchmarks.action_predictability: the R^2 scores mean what they say on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.action_predictability import (
    Args,
    codebook_motion_r2,
    codebook_r2,
    main,
    motion_of,
    push_scores,
    r2_score,
    real_transitions,
    ridge_r2,
)
from benchmarks.world_model import synthetic_push_like


def test_ridge_r2_is_one_for_a_linear_map_and_near_zero_for_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    w = rng.normal(size=(4, 3))
    assert ridge_r2(x[:300], x[:300] @ w + 1, x[300:], x[300:] @ w + 1) == pytest.approx(1.0, abs=1e-4)
    noise = rng.normal(size=(400, 3))
    assert abs(ridge_r2(x[:300], noise[:300], x[300:], noise[300:])) < 0.1
    with pytest.raises(ValueError, match="no variance"):
        r2_score(np.zeros((5, 2)), np.ones((5, 2)), np.ones(2))


def test_codebook_r2_uses_each_actions_mean_and_the_overall_mean_for_unseen_actions():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(5, 8))
    actions = rng.integers(0, 4, 600)  # action 4 never appears in training
    mu = table[actions] + 0.01 * rng.normal(size=(600, 8))
    assert codebook_r2(actions[:400], mu[:400], actions[400:], mu[400:], 5) > 0.99
    unseen = np.full(50, 4)
    assert codebook_r2(actions[:400], mu[:400], unseen, table[unseen] + 0.01, 5) == pytest.approx(
        r2_score(np.tile(mu[:400].mean(0), (50, 1)), table[unseen] + 0.01, mu[:400].mean(0))
    )


def test_the_motion_codebook_explains_momentum_the_plain_codebook_cannot():
    rng = np.random.default_rng(3)
    table, mix = rng.normal(size=(4, 6)), 0.8 * np.eye(6)

    def episode(n: int) -> tuple[np.ndarray, np.ndarray]:
        actions, mu = rng.integers(0, 4, n), np.zeros((n, 6))
        for t in range(n):  # the latent carries most of the previous one over (momentum)
            mu[t] = table[actions[t]] + (mu[t - 1] @ mix if t else 0) + 0.01 * rng.normal(size=6)
        return actions, mu

    train, test = [episode(40) for _ in range(10)], [episode(40) for _ in range(5)]
    a_tr, a_te = (np.concatenate([a for a, _ in eps]) for eps in (train, test))
    y_tr, y_te = (np.vstack([m for _, m in eps]) for eps in (train, test))
    m_tr, m_te = (np.vstack([motion_of(m.astype(np.float32)) for _, m in eps]) for eps in (train, test))
    np.testing.assert_array_equal(m_tr[1, :-1], y_tr[0].astype(np.float32))
    assert m_tr[0, -1] == 0 and m_tr[1, -1] == 1
    plain = codebook_r2(a_tr, y_tr, a_te, y_te, 4)
    moving = codebook_motion_r2(a_tr, y_tr, m_tr, a_te, y_te, m_te, 4)
    assert moving > 0.99 and plain < 0.6


class SquareTracker:
    """A stand-in LAM whose 8-d latent is a fixed linear map of the red square's displacement: fully set by the
    action (until the walls)."""

    mixing = np.random.default_rng(2).normal(size=(2, 8)).astype(np.float32)

    @staticmethod
    def _centre(frames: np.ndarray) -> np.ndarray:
        red = (frames[..., 0] == 230) & (frames[..., 1] == 60)
        ys, xs = np.arange(64)[:, None], np.arange(64)[None, :]
        count = red.sum((1, 2))
        return np.stack([(red * ys).sum((1, 2)) / count, (red * xs).sum((1, 2)) / count], 1)

    @staticmethod
    def decode(f_t: np.ndarray, z: np.ndarray, chunk_size: int = 256) -> np.ndarray:
        return f_t  # a decoder that ignores z: every latent reconstructs as copy-last

    def encode(self, before: np.ndarray, after: np.ndarray, chunk_size: int = 256) -> np.ndarray:
        return (self._centre(after) - self._centre(before)).astype(np.float32) @ self.mixing


def test_push_scores_find_an_action_determined_latent(tmp_path):
    synthetic_push_like(tmp_path, episodes=30, steps=12, seed=0)
    synthetic_push_like(tmp_path / "push-test", episodes=10, steps=12, seed=1)
    scores = push_scores(SquareTracker(), tmp_path, n_train=30, seed=0, mlp_steps=1500)
    assert scores["train_transitions"] == 30 * 12 and scores["test_transitions"] == 10 * 12
    r2 = scores["r2"]
    # The square moves 3 px per unit action, integer-rounded and stopped by the walls: mostly linear.
    assert r2["linear"] > 0.8 and r2["action_mlp"] > 0.8 and r2["action_mlp_motion"] > 0.8
    # Actions are independent from step to step, so the previous latent carries nothing.
    assert r2["true_previous_mu_only"] < 0.1
    recon = scores["recon_psnr"]
    assert set(recon) == {"true_mu", "action_mlp", "action_mlp_motion", "mean_mu", "copy_last"}
    assert all(value == pytest.approx(recon["copy_last"]) for value in recon.values())


def test_unknown_envs_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="push and/or procgen"):
        main(Args(envs="push,pong", out=tmp_path))


class ActionReader:
    """A stand-in LAM whose latent is a fixed vector per action, read off the next frame (which the episodes
    below paint with the action); a jump into a reset frame (painted 200) gives a whole-frame-change outlier."""

    table = np.random.default_rng(4).normal(size=(4, 6)).astype(np.float32)

    def encode(self, before: np.ndarray, after: np.ndarray, chunk_size: int = 256) -> np.ndarray:
        value = after[:, 0, 0, 0].astype(int)
        return np.where((value == 200)[:, None], 40.0, self.table[np.minimum(value, 3)]).astype(np.float32)


def test_procgen_transitions_into_a_reset_frame_are_left_out_as_adapt_leaves_them_out(tmp_path, monkeypatch):
    from adaworld_gym.data.episodes import Episode, EpisodeStore
    from benchmarks import action_predictability

    rng = np.random.default_rng(5)
    for split, count in (("procgen-train", 10), ("procgen-test", 5)):
        store = EpisodeStore(tmp_path / split / "procgen-maze", create=True)
        for i in range(count):
            actions = rng.integers(0, 4, 30)
            frames = np.zeros((31, 4, 4, 3), np.uint8)
            frames[1:] = actions[:, None, None, None]
            terminations = np.zeros(30, bool)
            terminations[-1] = True  # the game ended: the last frame starts the next level
            frames[-1] = 200
            episode = Episode(
                frames,
                actions=actions,
                terminations=terminations,
                action_space={"type": "discrete", "n": 4},
                meta={"terminal_frame_is_reset": True},
            )
            store.write(f"ep_{i:06d}", episode)
    monkeypatch.setattr(action_predictability, "PRETRAIN_GAMES", ("maze",))
    scores, motion = action_predictability.procgen_scores(ActionReader(), tmp_path, 10, 5)
    # The action sets these latents exactly; the reset jumps (kept before) pulled the score towards 0.
    assert scores["maze"] == pytest.approx(1.0, abs=1e-4) and motion["maze"] > 0.99

    episodes = action_predictability._episodes(tmp_path / "procgen-train" / "procgen-maze", 2)
    mus = [ActionReader().encode(e.frames[:-1], e.frames[1:]) for e in episodes]
    actions, mu, context = real_transitions(episodes, mus)
    assert len(mu) == len(actions) == len(context) == 2 * 29
    np.testing.assert_array_equal(context[1, :-1], mus[0][0])  # the previous transition's mu
    assert context[0, -1] == 0 and context[1, -1] == 1
