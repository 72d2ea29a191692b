"""Tests for the reward / termination head, its training, and its use by bundles and the world-model envs."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_training_resume import write_reward_episodes

from adaworld_gym.cli import main
from adaworld_gym.data.episodes import Episode, EpisodeError, EpisodeStore
from adaworld_gym.envs import SB3VecEnvAdapter, WorldModelEnv, WorldModelVectorEnv
from adaworld_gym.models.bundle import AdaWorldBundle, tiny_random_bundle
from adaworld_gym.models.reward import RewardHead
from adaworld_gym.training.reward import (
    attach_reward_head,
    imagine_next_frames,
    load_reward_data,
    reward_targets,
    train_reward,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_HEAD = {"channels": (8, 8, 8, 8), "hidden": 32}
RED, GREEN = (220, 30, 30), (30, 220, 30)


# ---------------------------------------------------------------------------------------------- targets
def test_reward_targets_keep_ordinary_episodes_as_they_are():
    episode = Episode(
        frames=np.zeros((4, 64, 64, 3), np.uint8),
        rewards=np.array([0.0, 1.0, 2.0], np.float32),
        terminations=np.array([False, False, True]),
    )
    t_prev, t_next, rewards, terminated = reward_targets(episode)
    assert t_prev.tolist() == [0, 1, 2] and t_next.tolist() == [1, 2, 3]
    assert rewards.tolist() == [0.0, 1.0, 2.0] and terminated.tolist() == [False, False, True]


def test_reward_targets_move_a_reset_frame_terminal_onto_the_last_real_transition():
    """Procgen: frames[t+1] after a terminal step is a new try; its reward and end move onto t-1 -> t."""
    episode = Episode(
        frames=np.zeros((5, 64, 64, 3), np.uint8),
        rewards=np.array([0.0, 1.0, 0.5, 10.0], np.float32),
        terminations=np.array([False, False, False, True]),
        meta={"terminal_frame_is_reset": True},
    )
    t_prev, t_next, rewards, terminated = reward_targets(episode)
    assert t_prev.tolist() == [0, 1, 2] and t_next.tolist() == [1, 2, 3]  # the pair (3, reset frame) is gone
    assert rewards.tolist() == [0.0, 1.0, 10.5] and terminated.tolist() == [False, False, True]
    assert rewards.sum() == episode.rewards.sum()  # the return is kept
    lone = Episode(
        frames=np.zeros((2, 64, 64, 3), np.uint8),
        rewards=np.array([3.0], np.float32),
        terminations=np.array([True]),
        meta={"terminal_frame_is_reset": True},
    )
    assert all(len(a) == 0 for a in reward_targets(lone))  # nothing before it to carry the end


# ---------------------------------------------------------------------------------------------- the head
def test_reward_head_outputs_shapes_dtypes_and_round_trips(tmp_path):
    torch.manual_seed(0)
    head = RewardHead(latent_dim=3, **TINY_HEAD, reward_scale=10.0).eval()
    rng = np.random.default_rng(0)
    prev, nxt = rng.integers(0, 256, (2, 5, 64, 64, 3), dtype=np.uint8)
    z = rng.normal(size=(5, 3)).astype(np.float32)
    rewards, terminated, probs = head.predict(prev, nxt, z)
    assert rewards.shape == terminated.shape == probs.shape == (5,)
    assert rewards.dtype == np.float32 and terminated.dtype == bool and probs.dtype == np.float32
    assert np.array_equal(terminated, probs > 0.5) and ((probs >= 0) & (probs <= 1)).all()
    scaled, _ = head(torch.from_numpy(prev), torch.from_numpy(nxt), torch.from_numpy(z))
    np.testing.assert_allclose(rewards, scaled.detach().numpy() * 10.0, rtol=1e-6)
    head.save_pretrained(tmp_path / "head")
    loaded = RewardHead.from_pretrained(tmp_path / "head")
    assert np.array_equal(loaded.predict(prev, nxt, z)[0], rewards)


def test_reward_head_rejects_bad_inputs():
    head = RewardHead(latent_dim=3, **TINY_HEAD)
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"latent actions z of shape \[B, 3\]"):
        head.predict(frames, frames)
    with pytest.raises(ValueError, match="uint8"):
        head.predict(frames.astype(np.float32), frames, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="64, 64, 3"):
        head.predict(frames[:, :32], frames[:, :32], np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="without latent actions"):
        RewardHead(**TINY_HEAD).predict(frames, frames, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of"):
        RewardHead(image_size=48, channels=(8, 8, 8, 8, 8))


# ---------------------------------------------------------------------------------------------- training
def _noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)


def _patch(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    frame = frame.copy()
    frame[16:48, 16:48] = colour
    return frame


def write_synthetic_episodes(root, episodes: int = 6, steps: int = 12, seed: int = 0, reset_terminal=False):
    """Noise frames; a red square appears with reward 1, and the last step shows a green square and ends.

    With ``reset_terminal`` the episodes look like Procgen's: one extra step whose frame is a fresh start.
    """
    rng = np.random.default_rng(seed)
    store = EpisodeStore(root, create=True)
    for e in range(episodes):
        frames, rewards = [_noise(rng)], []
        for t in range(steps):
            red = t < steps - 1 and rng.random() < 0.3
            nxt = _patch(_noise(rng), RED) if red else _noise(rng)
            if t == steps - 1:
                nxt = _patch(_noise(rng), GREEN)
            frames.append(nxt)
            rewards.append(1.0 if red else 0.0)
        terminations = np.zeros(steps, bool)
        terminations[-1] = True
        meta = {}
        if reset_terminal:
            frames.append(_noise(rng))  # gym3's reset frame after the terminal step
            rewards.append(0.0)
            terminations = np.append(np.zeros(steps, bool), True)
            meta = {"terminal_frame_is_reset": True}
        store.write(
            f"ep_{e:06d}",
            Episode(
                frames=np.stack(frames),
                actions=rng.integers(0, 4, len(rewards)),
                rewards=np.array(rewards, np.float32),
                terminations=terminations,
                env_id="synthetic",
                action_space={"type": "discrete", "n": 4},
                meta=meta,
            ),
        )
    return root


def test_load_reward_data_aligns_reset_terminals_and_skips_videos(tmp_path):
    write_synthetic_episodes(tmp_path / "procgen", episodes=2, steps=5, reset_terminal=True)
    video = EpisodeStore(tmp_path / "video", create=True)
    video.write("ep_000000", Episode(frames=np.zeros((3, 64, 64, 3), np.uint8), env_id="video:clips"))
    data = load_reward_data([tmp_path])
    assert len(data.frames) == 2 and len(data) == 2 * 5  # the reset pairs and the video are left out
    assert data.terminated.sum() == 2
    for e, _, t_next in data.index[data.terminated]:
        assert (data.frames[e][t_next][32, 32] == GREEN).all()  # the terminal pair ends on the green frame
    with pytest.raises(EpisodeError, match="no episodes with rewards"):
        load_reward_data([tmp_path / "video"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward")
    data = write_synthetic_episodes(root / "data", seed=0)
    model_dir = train_reward(
        [data],
        root / "run",
        max_steps=150,
        batch_size=32,
        lr=3e-3,
        seed=0,
        model_overrides=TINY_HEAD,
        progress=False,
        checkpoint_every=100,
    )
    return root, model_dir


def test_train_reward_learns_a_trivially_learnable_signal(trained):
    root, model_dir = trained
    head = RewardHead.from_pretrained(model_dir)
    rng = np.random.default_rng(123)  # fresh frames, never seen in training
    prev = np.stack([_noise(rng) for _ in range(9)])
    nxt = np.stack(
        [_patch(_noise(rng), RED) for _ in range(3)]
        + [_patch(_noise(rng), GREEN) for _ in range(3)]
        + [_noise(rng) for _ in range(3)]
    )
    rewards, terminated, _ = head.predict(prev, nxt)
    np.testing.assert_allclose(rewards[:3], 1.0, atol=0.3)
    np.testing.assert_allclose(rewards[3:], 0.0, atol=0.3)
    assert terminated.tolist() == [False] * 3 + [True] * 3 + [False] * 3
    summary = json.loads((root / "run" / "summary.json").read_text())
    assert summary["steps"] == 150 and summary["eval_on"] == "held_out" and summary["reward_scale"] == 1.0
    assert summary["eval"]["termination_accuracy"] == 1.0
    assert summary["eval"]["reward_mse"] < 0.25 * summary["eval"]["reward_mse_predict_mean"]
    assert (root / "run" / "checkpoints" / "step-000000150").is_dir()


def test_train_reward_resumes_its_step_count(trained, tmp_path, monkeypatch):
    root, _ = trained
    run = tmp_path / "run"
    args = dict(batch_size=8, seed=1, model_overrides=TINY_HEAD, progress=False)
    train_reward([root / "data"], run, max_steps=4, **args)
    forward, training = RewardHead.forward, []  # the forward passes in training mode: one per step
    monkeypatch.setattr(
        RewardHead, "forward", lambda self, *a: training.append(self.training) or forward(self, *a)
    )
    train_reward([root / "data"], run, max_steps=6, **args)
    monkeypatch.undo()
    assert sum(training) == 2  # steps 5 and 6 only: resumed, not started over
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step-000000004", "step-000000006"]


def test_train_reward_refuses_to_resume_under_another_held_out_split(trained, tmp_path):
    root, _ = trained
    run = tmp_path / "run"
    args = dict(batch_size=8, model_overrides=TINY_HEAD, progress=False)
    train_reward([root / "data"], run, max_steps=2, seed=0, **args)
    with pytest.raises(ValueError, match=r"other (\w+ and )?split"):  # seed 1 holds other episodes out
        train_reward([root / "data"], run, max_steps=4, seed=1, **args)
    with pytest.raises(ValueError, match=r"other (\w+ and )?split"):
        train_reward([root / "data"], run, max_steps=4, seed=0, eval_fraction=0.5, **args)


def test_overlapping_data_directories_read_each_episode_once(trained):
    root, _ = trained
    subsets = [p.parent for p in (root / "data").glob("*/manifest.json")]
    once = load_reward_data([root / "data"])
    twice = load_reward_data([root / "data", *subsets, root / "data" / ".." / "data"])
    assert len(twice.frames) == len(once.frames) and len(twice) == len(once)
    with pytest.raises(ValueError, match="max_episodes must be an int >= 1"):
        load_reward_data([root / "data"], max_episodes=0)


# ---------------------------------------------------------------------------------------------- bundles
def constant_head(reward: float, terminate: bool, latent_dim: int = 0) -> RewardHead:
    """A head that always predicts ``reward`` and (with probability ~0.99 or ~0.01) termination."""
    head = RewardHead(latent_dim=latent_dim, **TINY_HEAD).eval()
    with torch.no_grad():
        head.mlp[-1].weight.zero_()
        head.mlp[-1].bias.copy_(torch.tensor([reward, 5.0 if terminate else -5.0]))
    return head


def with_head(bundle: AdaWorldBundle, head: RewardHead) -> AdaWorldBundle:
    from dataclasses import replace

    return replace(bundle, reward_head=head)


def test_bundle_round_trip_with_a_reward_head_and_backward_compatibility(tmp_path):
    bundle = tiny_random_bundle("discrete", reward_head=True)
    bundle.save_pretrained(tmp_path / "b")
    loaded = AdaWorldBundle.from_pretrained(tmp_path / "b")
    assert (
        isinstance(loaded.reward_head, RewardHead) and (tmp_path / "b" / "reward" / "config.json").is_file()
    )
    frames = np.random.default_rng(0).integers(0, 256, (2, 2, 64, 64, 3), dtype=np.uint8)
    z = np.zeros((2, loaded.adapter.latent_dim), np.float32)
    for a, b in zip(
        bundle.reward_head.predict(frames[0], frames[1], z),
        loaded.reward_head.predict(frames[0], frames[1], z),
        strict=True,
    ):
        assert np.array_equal(a, b)
    # A bundle written before reward heads existed: no "has_reward_head" key, no reward/ folder.
    tiny_random_bundle("discrete").save_pretrained(tmp_path / "old")
    header = json.loads((tmp_path / "old" / "bundle.json").read_text())
    del header["has_reward_head"]
    (tmp_path / "old" / "bundle.json").write_text(json.dumps(header))
    assert AdaWorldBundle.from_pretrained(tmp_path / "old").reward_head is None
    with pytest.raises(ValueError, match="latent_dim 5 does not match"):
        with_head(bundle, RewardHead(latent_dim=5, **TINY_HEAD))


def test_attach_reward_head_and_train_reward_cli(trained, tmp_path, capsys):
    root, model_dir = trained
    tiny_random_bundle("discrete").save_pretrained(tmp_path / "b")
    attach_reward_head(tmp_path / "b", model_dir.parent)  # the run directory works too
    assert AdaWorldBundle.from_pretrained(tmp_path / "b").reward_head is not None
    tiny_random_bundle("continuous").save_pretrained(tmp_path / "c")
    argv = ["train-reward", "--data", str(root / "data"), "--max-steps", "3", "--batch-size", "4"]
    # Three steps learn nothing: the head is saved and its held-out R^2 printed, but it is not attached ...
    code = main([*argv, "--out", str(tmp_path / "run"), "--bundle", str(tmp_path / "c")])
    captured = capsys.readouterr()
    assert code == 2 and "explains" in captured.out and "of the reward variance (R^2" in captured.out
    assert f"not attached to {tmp_path / 'c'}" in captured.err and "--attach-anyway" in captured.err
    assert AdaWorldBundle.from_pretrained(tmp_path / "c").reward_head is None
    # ... unless asked to (the run resumes: the same head, attached).
    code = main([*argv, "--out", str(tmp_path / "run"), "--bundle", str(tmp_path / "c"), "--attach-anyway"])
    assert code == 0 and "attached to the bundle" in capsys.readouterr().out
    assert AdaWorldBundle.from_pretrained(tmp_path / "c").reward_head.config.latent_dim == 0
    code = main(["train-reward", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert code == 2 and "nowhere" in capsys.readouterr().err
    # Episodes where nothing pays or ends teach a head of zeros: it is saved, not attached.
    from synthetic_data import grid_episodes

    quiet = grid_episodes(tmp_path / "quiet")
    tiny_random_bundle("discrete").save_pretrained(tmp_path / "d")
    argv = ["train-reward", "--data", str(quiet), "--out", str(tmp_path / "q"), "--max-steps", "2"]
    with pytest.warns(UserWarning, match="learn zeros"):
        code = main([*argv, "--batch-size", "4", "--bundle", str(tmp_path / "d")])
    assert code == 2 and "saw no rewarded or terminal transition" in capsys.readouterr().err
    assert AdaWorldBundle.from_pretrained(tmp_path / "d").reward_head is None


# ---------------------------------------------------------------------------------------------- envs
def test_env_takes_reward_and_termination_from_the_head():
    bundle = tiny_random_bundle("discrete", reward_head=True)
    env = WorldModelEnv(bundle)
    obs, _ = env.reset(seed=0)
    new, reward, terminated, truncated, _ = env.step(2)
    z = bundle.adapter.to_latent(np.array([2]))
    expected, said, _ = bundle.reward_head.predict(obs[None], new[None], z)  # (previous, new frame, z)
    assert reward == pytest.approx(float(expected[0])) and terminated == bool(said[0]) and not truncated

    env = WorldModelEnv(with_head(bundle, constant_head(0.25, terminate=True)))
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(0)
    assert reward == pytest.approx(0.25) and terminated and not truncated
    with pytest.raises(RuntimeError, match="terminated"):
        env.step(0)
    goal = np.zeros((64, 64, 3), np.uint8)  # an explicit goal wins for the reward; the head still ends it
    env.reset(seed=0, options={"goal": goal})
    obs, reward, terminated, *_ = env.step(0)
    assert reward == pytest.approx(float(-np.mean((obs / 255.0) ** 2)), rel=1e-5) and terminated


def test_vector_env_batches_the_head_and_autoresets_terminated_rows():
    bundle = with_head(tiny_random_bundle("discrete"), constant_head(-1.0, terminate=True))
    venv = WorldModelVectorEnv(bundle, num_envs=3)
    venv.reset(seed=0)
    _, rewards, terminated, truncated, _ = venv.step(np.array([0, 1, 2]))
    assert rewards.tolist() == pytest.approx([-1.0] * 3) and terminated.all() and not truncated.any()
    first = venv.step(np.array([0, 1, 2]))  # NEXT_STEP autoreset: a new episode, reward 0
    assert first[1].tolist() == [0.0] * 3 and not first[2].any()

    sb3 = SB3VecEnvAdapter(WorldModelVectorEnv(bundle, num_envs=2))
    sb3.seed(0)
    sb3.reset()
    _, rewards, dones, infos = sb3.step(np.array([0, 1]))
    assert dones.all() and not any(info["TimeLimit.truncated"] for info in infos)
    quiet = WorldModelVectorEnv(with_head(tiny_random_bundle("discrete"), constant_head(0.5, False)), 2)
    quiet.reset(seed=0)
    _, rewards, terminated, *_ = quiet.step(np.array([0, 1]))
    assert rewards.tolist() == pytest.approx([0.5, 0.5]) and not terminated.any()


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_env_with_a_reward_head_passes_gymnasium_and_sb3_checkers(kind):
    import warnings

    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    bundle = tiny_random_bundle(kind, reward_head=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(WorldModelEnv(bundle), skip_render_check=True)
        sb3_check_env(WorldModelEnv(bundle, max_episode_steps=5))


def test_imagine_next_frames_replaces_only_the_next_frames(tmp_path):
    write_synthetic_episodes(tmp_path / "data", episodes=2, steps=5)
    data = load_reward_data([tmp_path / "data"])
    bundle = tiny_random_bundle("discrete")  # 4 actions, as the synthetic episodes
    imagined = imagine_next_frames(data, bundle, seed=0)
    rows = np.arange(len(data))
    (prev, real_next), (imagined_prev, imagined_next) = data.pairs(rows), imagined.pairs(rows)
    np.testing.assert_array_equal(imagined_prev, prev)  # the pairs start on the real frames
    assert imagined_next.shape == real_next.shape and not np.array_equal(imagined_next, real_next)
    np.testing.assert_array_equal(imagined.rewards, data.rewards)
    np.testing.assert_array_equal(imagined.terminated, data.terminated)
    np.testing.assert_array_equal(imagine_next_frames(data, bundle, seed=0).pairs(rows)[1], imagined_next)
    assert not np.array_equal(imagine_next_frames(data, bundle, seed=1).pairs(rows)[1], imagined_next)
    held_out = imagined.subset(np.array([1]))  # an episode split keeps its imagined frames
    np.testing.assert_array_equal(
        held_out.pairs(np.arange(len(held_out)))[1], imagined_next[data.index[:, 0] == 1]
    )
    with pytest.raises(ValueError, match="actions"):
        imagine_next_frames(replace(data, actions=None), bundle)


def test_train_reward_cli_on_imagined_frames_records_the_bundle(tmp_path):
    write_synthetic_episodes(tmp_path / "data", episodes=3, steps=6)
    tiny_random_bundle("discrete").save_pretrained(tmp_path / "bundle")
    argv = ["train-reward", "--data", str(tmp_path / "data"), "--max-steps", "3", "--batch-size", "8"]
    code = main([*argv, "--out", str(tmp_path / "run"), "--imagined-by", str(tmp_path / "bundle")])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert code == 0 and summary["imagined_by"] == str(tmp_path / "bundle") and summary["eval"]["pairs"] > 0
    with pytest.raises(ValueError, match="imagined_denoise_steps"):
        train_reward(
            [tmp_path / "data"], tmp_path / "run2", imagined_by=tmp_path / "bundle", imagined_denoise_steps=0
        )


def test_the_attach_rule_names_why_a_head_is_not_attached():
    from adaworld_gym.training.reward import MIN_R2, attach_refusal, held_out_r2

    good = {"reward_events": 12, "pairs": 400, "reward_mse": 0.02, "reward_mse_predict_mean": 0.1}
    summary = {"train_events": 30, "eval_on": "held_out", "eval": good}
    assert held_out_r2(good) == pytest.approx(0.8) and attach_refusal(summary) is None
    cases = [
        ({"train_events": 0}, "saw no rewarded or terminal transition"),
        ({"eval_on": "train"}, "no episode was held out"),
        ({"eval": {**good, "reward_events": 4}}, r"4 rewarded held-out transitions \(< 5\)"),
        ({"eval": {**good, "reward_mse": 0.1 * (1 - MIN_R2 / 2)}}, r"explains 0.10 .*R\^2 < 0.2"),
        ({"eval": {**good, "reward_mse_predict_mean": 0.0}}, r"explains 0.00"),
    ]
    for change, why in cases:
        assert re.search(why, attach_refusal({**summary, **change}))


def test_reward_head_refuses_a_float64_latent_beyond_float32():
    """1e300 is finite in float64 but inf in float32: predict returned a NaN reward instead of an error."""
    torch.manual_seed(0)
    head = RewardHead(latent_dim=4, channels=(4, 4, 4, 4), hidden=8)
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    rewards, _, _ = head.predict(frames, frames, np.ones((1, 4)))
    assert np.isfinite(rewards).all()
    with pytest.raises(ValueError, match="beyond float32"):
        head.predict(frames, frames, np.full((1, 4), 1e300))


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
