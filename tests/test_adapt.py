"""Adaptation to real actions: labelled sets, adapter init, the twin's conditioned copy, finetuning, bundles, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from gymnasium import spaces
from synthetic_data import grid_episodes, save_tiny_models

from adaworld_gym.cli import main as cli_main
from adaworld_gym.data.episodes import Episode, EpisodeStore
from adaworld_gym.models.adapters import ActionCodebook, ActionMLP
from adaworld_gym.models.bundle import AdaWorldBundle, tiny_random_bundle
from adaworld_gym.training.adapt import (
    AdaptConfig,
    LabelledWindows,
    adapt,
    conditioned_copy,
    init_adapter,
    labelled_windows,
    read_episodes,
    scale_column_updates,
    transition_latents,
    window_motion,
)
from adaworld_gym.training.world_model import window_batches, window_loss
from benchmarks.world_model import synthetic_push_like

torch.set_num_threads(1)  # the machine is shared: one thread is the fastest per core
FAST = dict(batch_size=4, eval_denoise_steps=1, log_every=1, progress=False)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return grid_episodes(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def grid_eval(tmp_path_factory):
    """Held-out grid episodes: another seed, so none is a training episode."""
    return grid_episodes(tmp_path_factory.mktemp("eval"), seed=1)


@pytest.fixture(scope="module")
def push(tmp_path_factory):
    return synthetic_push_like(tmp_path_factory.mktemp("push"), episodes=3, steps=8, seed=0)


def test_labelled_windows_cap_per_action_and_trajectories(grid, push):
    episodes = read_episodes(grid)
    windows = labelled_windows(episodes, samples_per_action=3, seed=0)
    counts = np.bincount(windows.actions, minlength=5)
    assert counts.max() == 3 and len(windows) == 15
    item = windows[0]
    assert item["history"].shape == (1, 64, 64, 3) and item["next"].shape == (64, 64, 3)

    pushes = read_episodes(push)
    by_traj = labelled_windows(pushes, trajectories=2, seed=0)
    assert len(by_traj) == 16 and len(set(by_traj.index[:, 0].tolist())) == 2
    with pytest.raises(ValueError, match="discrete"):
        labelled_windows(pushes, samples_per_action=3)
    with pytest.raises(ValueError, match="3 episodes"):
        labelled_windows(pushes, trajectories=5)
    with pytest.raises(ValueError, match="exactly one"):
        labelled_windows(pushes)


def test_codebook_starts_at_the_mean_latent_of_each_action(grid, tmp_path):
    _, _, bundle = save_tiny_models(tmp_path)
    windows = labelled_windows(read_episodes(grid), samples_per_action=4, seed=0)
    mu = transition_latents(bundle.lam, windows)
    f_t, f_t1 = windows.pairs()
    np.testing.assert_allclose(mu, bundle.lam.encode(f_t, f_t1), atol=0.05)  # bf16 labelling

    codebook, info = init_adapter({"type": "discrete", "n": 15}, mu.shape[1], windows, mu, seed=0)
    assert isinstance(codebook, ActionCodebook) and info["actions_without_samples"] == list(range(5, 15))
    for a in range(5):
        expected = mu[windows.actions == a].mean(axis=0)
        np.testing.assert_allclose(codebook.embedding.weight[a].detach().numpy(), expected, atol=1e-6)
    random_book, info = init_adapter({"type": "discrete", "n": 15}, mu.shape[1], windows, None, seed=0)
    assert info == {"init": "random"} and not np.allclose(random_book.embedding.weight[0].detach(), mu[0])


def test_codebook_init_warns_about_actions_without_labelled_transitions(grid):
    """grid never takes actions 5..14: their rows stay random and finetuning never reaches them."""
    windows = labelled_windows(read_episodes(grid), samples_per_action=2, seed=0)
    mu = np.random.default_rng(0).standard_normal((len(windows), 8)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"actions \[5, 6, .*14\]: their codebook rows stay random"):
        _, info = init_adapter({"type": "discrete", "n": 15}, 8, windows, mu)
    assert info["actions_without_samples"] == list(range(5, 15))


def test_mlp_is_prefit_on_action_latent_pairs(push):
    windows = labelled_windows(read_episodes(push), trajectories=3, seed=0)
    mu = np.tanh(windows.actions @ np.random.default_rng(0).standard_normal((4, 8))).astype(np.float32)
    space = {"type": "box", "shape": [4], "low": -1.0, "high": 1.0}
    mlp, info = init_adapter(space, 8, windows, mu, fit_steps=1000)
    assert isinstance(mlp, ActionMLP) and mlp.action_space == spaces.Box(-1, 1, (4,), np.float32)
    assert info["fit_mse"] < 0.3 * info["mu_var"] / 8  # far better than predicting the mean
    unfit, info = init_adapter(space, 8, windows, None)
    assert info == {"init": "random"} and isinstance(unfit, ActionMLP)


def test_conditioned_copy_of_the_twin_predicts_as_the_twin_then_listens_to_z(tmp_path):
    twin = tiny_random_bundle("latent", seed=0, action_agnostic=True).world_model
    copy = conditioned_copy(twin)
    assert not copy.config.action_agnostic and twin.config.action_agnostic
    rng = np.random.default_rng(0)
    history = rng.integers(0, 256, (2, 2, 64, 64, 3), dtype=np.uint8)
    z = rng.standard_normal((2, copy.config.action_dim)).astype(np.float32)
    same = [
        m.predict_next(history, z, steps=1, generator=torch.Generator().manual_seed(0)) for m in (twin, copy)
    ]
    np.testing.assert_array_equal(*same)
    with torch.no_grad():
        copy.cond_mlp[0].weight[:, 0] = 1.0  # once the z columns learn something, z matters
    moved = copy.predict_next(history, z, steps=1, generator=torch.Generator().manual_seed(0))
    assert not np.array_equal(moved, same[0])


@pytest.mark.parametrize("agnostic", [False, True])
def test_adapt_evaluates_saves_a_bundle_and_resumes(grid, grid_eval, tmp_path, agnostic):
    wm_dir, lam_dir, _ = save_tiny_models(tmp_path, action_agnostic=agnostic)
    out = tmp_path / "run"
    kw = dict(
        samples_per_action=6, max_steps=4, eval_at=[0, 2, 4], eval_data=grid_eval, eval_samples=8, **FAST
    )
    bundle_dir = adapt(wm_dir, lam_dir, grid, out, checkpoint_every=2, **kw)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["session_losses"]) == 4 and summary["labelled_transitions"] == 30
    assert [e["step"] for e in summary["evals"]] == [0, 2, 4]
    assert {"psnr_1step", "ssim_1step", "psnr_copy_last"} <= set(summary["evals"][0])
    assert summary["adapter"]["init"] == ("random" if agnostic else "mean_mu")
    assert list((out / "logs").glob("events.out.tfevents.*"))

    bundle = AdaWorldBundle.from_pretrained(bundle_dir, expected_action_space=spaces.Discrete(15))
    assert isinstance(bundle.adapter, ActionCodebook) and not bundle.world_model.config.action_agnostic
    assert bundle.meta["pretrained_action_agnostic"] is agnostic and (bundle.lam is None) is agnostic
    assert bundle.initial_frames.shape[1:] == (1, 64, 64, 3)
    with pytest.raises(ValueError, match="action space"):
        AdaWorldBundle.from_pretrained(bundle_dir, expected_action_space=spaces.Box(-1, 1, (4,), np.float32))

    # Called again with the same budget, it resumes from the last checkpoint: no step is taken twice.
    assert adapt(wm_dir, lam_dir, grid, out, **kw) == bundle_dir
    again = json.loads((out / "summary.json").read_text())
    assert again["steps"] == 4 and again["session_losses"] == [] and again["evals"] == summary["evals"]


def test_finetuning_moves_the_codebook_and_lowers_the_loss(grid, tmp_path):
    wm_dir, lam_dir, _ = save_tiny_models(tmp_path)
    kw = dict(samples_per_action=6, lr=3e-3, seed=0, **FAST)
    start = AdaWorldBundle.from_pretrained(adapt(wm_dir, lam_dir, grid, tmp_path / "a", max_steps=0, **kw))
    end = AdaWorldBundle.from_pretrained(adapt(wm_dir, lam_dir, grid, tmp_path / "b", max_steps=15, **kw))
    # Same seed: same labelled set and initial codebook; finetuning moved it and lowered the loss.
    assert not torch.equal(start.adapter.embedding.weight, end.adapter.embedding.weight)
    windows = labelled_windows(read_episodes(grid), samples_per_action=6, seed=0)
    batch = next(window_batches(replace(windows, history=2), 2, 30, seed=0))

    def loss(bundle) -> float:
        with torch.no_grad():
            z = bundle.adapter(batch["action"])
            gens = [torch.Generator().manual_seed(s) for s in range(4)]
            return float(np.mean([window_loss(bundle.world_model, batch, z, g) for g in gens]))

    assert loss(end) < loss(start)


def test_adapt_rejects_bad_inputs(grid, push, tmp_path):
    wm_dir, lam_dir, _ = save_tiny_models(tmp_path)
    with pytest.raises(ValueError, match="LAM-conditioned"):
        adapt(wm_dir, None, grid, tmp_path / "a", max_steps=1, **FAST)
    with pytest.raises(ValueError, match="unknown init"):
        adapt(wm_dir, lam_dir, grid, tmp_path / "b", max_steps=1, init="zeros", **FAST)
    with pytest.raises(ValueError, match="differ"):
        adapt(wm_dir, lam_dir, grid, tmp_path / "c", max_steps=1, eval_data=push, **FAST)
    with pytest.raises(FileNotFoundError, match="world model"):
        adapt(tmp_path / "nothing", lam_dir, grid, tmp_path / "d", max_steps=1, **FAST)
    twin_dir, _, _ = save_tiny_models(tmp_path / "twin", action_agnostic=True)
    with pytest.raises(ValueError, match="random"):
        adapt(twin_dir, lam_dir, grid, tmp_path / "e", max_steps=1, init="mean_mu", **FAST)
    assert AdaptConfig().max_steps == 800 and AdaptConfig().samples_per_action == 100


def test_adapt_refuses_frames_of_another_size_than_the_model_makes(grid, tmp_path, capsys):
    wm32, lam32, _ = save_tiny_models(tmp_path / "m32", frame_size=32)
    with pytest.raises(ValueError, match="the data holds 64x64 frames but .*m32/wm makes 32x32"):
        adapt(wm32, lam32, grid, tmp_path / "a", max_steps=1, **FAST)
    # The CLI refuses before collecting anything from the real env, whose frames are 64x64.
    argv = ["adapt", "--model", str(wm32), "--lam", str(lam32)]
    argv += ["--env", "AdaWorld/Procgen-coinrun-v0", "--out", str(tmp_path / "b")]
    assert cli_main(argv) == 2
    assert "makes 32x32 frames and AdaWorld/Procgen-coinrun-v0 serves 64x64" in capsys.readouterr().err
    assert not (tmp_path / "b" / "data").exists()


def test_adapt_rejects_data_of_another_env_with_the_same_action_space(grid, tmp_path):
    """All Procgen games share Discrete(15): the action-space check alone took another game's data."""
    wm_dir, lam_dir, _ = save_tiny_models(tmp_path)
    for game in ("bigfish", "coinrun"):
        store = EpisodeStore(tmp_path / "games" / f"procgen-{game}", create=True)
        for name in EpisodeStore(grid).names()[:2]:
            episode = EpisodeStore(grid).read(name)
            store.write(name, replace(episode, env_id=f"AdaWorld/Procgen-{game}-v0"))
    kw = dict(samples_per_action=2, max_steps=0, **FAST)
    bigfish = tmp_path / "games" / "procgen-bigfish"
    with pytest.raises(ValueError, match="recorded in AdaWorld/Procgen-bigfish-v0, not in .*coinrun"):
        adapt(wm_dir, lam_dir, bigfish, tmp_path / "a", meta={"env_id": "AdaWorld/Procgen-coinrun-v0"}, **kw)
    with pytest.raises(ValueError, match="mixes episodes of 2 envs"):
        adapt(wm_dir, lam_dir, tmp_path / "games", tmp_path / "b", **kw)
    with pytest.raises(ValueError, match="eval data was recorded in"):
        adapt(
            wm_dir, lam_dir, tmp_path / "games" / "procgen-coinrun", tmp_path / "c", eval_data=bigfish,
            expected_env_id="AdaWorld/Procgen-coinrun-v0", **kw,
        )  # fmt: skip
    # the env's own data, and recordings of no adaptable env (synthetic ones here), are taken
    adapt(wm_dir, lam_dir, bigfish, tmp_path / "d", expected_env_id="AdaWorld/Procgen-bigfish-v0", **kw)
    adapt(wm_dir, lam_dir, grid, tmp_path / "e", expected_env_id="AdaWorld/Procgen-bigfish-v0", **kw)


def test_cli_adapts_from_collected_data(push, tmp_path, capsys):
    wm_dir, lam_dir, _ = save_tiny_models(tmp_path)
    out = tmp_path / "adapted"
    argv = ["adapt", "--model", str(wm_dir), "--lam", str(lam_dir), "--env", "AdaWorld/RobosuitePush-v0"]
    argv += [
        "--data",
        str(push),
        "--trajectories",
        "2",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--out",
        str(out),
    ]
    assert cli_main(argv) == 0
    assert "adapted bundle saved to" in capsys.readouterr().out
    bundle = AdaWorldBundle.from_pretrained(
        out / "bundle", expected_action_space=spaces.Box(-1, 1, (4,), np.float32)
    )
    assert isinstance(bundle.adapter, ActionMLP)

    # Data whose actions do not fit the env, an unknown env, and asking for more trajectories than exist.
    bad = argv[:6] + ["AdaWorld/Procgen-coinrun-v0"] + argv[7:]
    assert cli_main(bad) == 2 and "action space" in capsys.readouterr().err
    assert cli_main(argv[:6] + ["CartPole-v1"] + argv[7:]) == 2
    assert "unsupported env" in capsys.readouterr().err
    too_many = [a if a != "2" else "9" for a in argv]
    assert cli_main(too_many) == 2 and "trajectories" in capsys.readouterr().err


def test_motion_context_comes_from_the_last_two_history_frames(grid, tmp_path):
    from adaworld_gym.latent import motion_context

    _, _, bundle = save_tiny_models(tmp_path)
    windows = replace(labelled_windows(read_episodes(grid), samples=10**6), history=3)  # every transition
    context = window_motion(bundle.lam, windows)
    assert context.shape == (len(windows), 33) and context.dtype == np.float32
    items = [windows[i] for i in range(len(windows))]
    exact = motion_context(
        bundle.lam, np.stack([it["history"] for it in items]), [it["history_len"] for it in items], bf16=False
    )
    np.testing.assert_allclose(context, exact, atol=0.05)  # bf16 encoding by default
    context = exact
    for i in range(len(windows)):
        item = windows[i]
        if item["history_len"] < 2:  # an episode's first step: no motion yet
            assert context[i, -1] == 0 and not context[i, :-1].any()
        else:
            expected = bundle.lam.encode(item["history"][-2], item["history"][-1])
            assert context[i, -1] == 1 and np.allclose(context[i, :-1], expected, atol=1e-5)
    assert (context[:, -1] == 0).any() and (context[:, -1] == 1).any()
    # Windows that carry their contexts hand them to every batch (computed once, not per step).
    carried = replace(windows, motion=context)
    batch = next(window_batches(carried, 3, len(windows), seed=0, epochs=1))
    assert batch["motion"].shape == (len(windows), 33)  # the same rows, shuffled
    np.testing.assert_array_equal(np.sort(batch["motion"].numpy(), axis=0), np.sort(context, axis=0))
    with pytest.raises(ValueError, match="history_len"):
        motion_context(bundle.lam, np.zeros((2, 3, 64, 64, 3), np.uint8), [1, 4])


def test_adapt_with_motion_fits_and_saves_a_motion_adapter(grid, grid_eval, tmp_path):
    wm_dir, lam_dir, _ = save_tiny_models(tmp_path)
    kw = dict(samples_per_action=6, max_steps=2, eval_at=[0, 2], eval_data=grid_eval, eval_samples=8, **FAST)
    bundle_dir = adapt(wm_dir, lam_dir, grid, tmp_path / "run", motion=True, **kw)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "motion_fit_mse" in summary["adapter"] and len(summary["evals"]) == 2
    bundle = AdaWorldBundle.from_pretrained(bundle_dir)
    assert bundle.adapter.uses_motion and bundle.adapter.motion_dim == bundle.lam.config.latent_dim
    twin_dir, _, _ = save_tiny_models(tmp_path / "twin", action_agnostic=True)
    with pytest.raises(ValueError, match="motion=True needs"):
        adapt(twin_dir, None, grid, tmp_path / "t", motion=True, **kw)


def test_a_resumed_adaptation_collection_keeps_the_uninterrupted_set(tmp_path):
    from adaworld_gym.data.collect import collect_procgen
    from adaworld_gym.training.adapt import collect_adaptation_data

    kwargs = dict(samples_per_action=3, episode_steps=10, seed=0)
    (whole,) = collect_adaptation_data("AdaWorld/Procgen-coinrun-v0", tmp_path / "whole", **kwargs)
    kept = EpisodeStore(whole).names()
    # a run killed during its last round: fewer episodes on disk than that round asks for
    collect_procgen(["coinrun"], len(kept) - 1, 10, tmp_path / "resumed", seed=0)
    (resumed,) = collect_adaptation_data("AdaWorld/Procgen-coinrun-v0", tmp_path / "resumed", **kwargs)
    assert EpisodeStore(resumed).names() == kept
    # more episodes on disk than this collection keeps (other settings before): refused, not mixed in
    collect_procgen(["coinrun"], len(kept) + 2, 10, tmp_path / "resumed", seed=0)
    with pytest.raises(ValueError, match="beyond the .* fresh --out"):
        collect_adaptation_data("AdaWorld/Procgen-coinrun-v0", tmp_path / "resumed", **kwargs)


def test_scaled_columns_step_as_if_they_had_their_own_rate() -> None:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, 6))
    start = weight.detach().clone()
    left = torch.nn.Parameter(weight.detach()[:, :2].clone())
    right = torch.nn.Parameter(weight.detach()[:, 2:].clone())
    optimizer = torch.optim.AdamW([weight], lr=1e-2, weight_decay=0.1)
    scale_column_updates(optimizer, weight, slice(2, None), 0.1)
    reference = torch.optim.AdamW(
        [{"params": [left], "lr": 1e-2}, {"params": [right], "lr": 1e-3}], weight_decay=0.1
    )
    x = torch.randn(8, 6)
    for _ in range(5):
        for opt, w in ((optimizer, weight), (reference, torch.cat([left, right], dim=1))):
            opt.zero_grad()
            (x @ w.T).square().mean().backward()
            opt.step()
    torch.testing.assert_close(weight.detach(), torch.cat([left, right], dim=1).detach())
    moved = (weight.detach() - start).abs().mean(dim=0)
    assert moved[2:].max() < 0.2 * moved[:2].min()  # the scaled columns moved, a tenth as far
    assert moved[2:].min() > 0


def test_held_out_episodes_that_are_training_episodes_are_refused(grid, tmp_path):
    wm_dir, lam_dir, _ = save_tiny_models(tmp_path)
    with pytest.raises(ValueError, match=r"held-out episode\(s\) are also labelled training episodes"):
        adapt(wm_dir, lam_dir, grid, tmp_path / "a", max_steps=1, eval_data=grid, eval_samples=8, **FAST)


def test_a_window_after_a_mid_episode_restart_holds_only_the_new_try():
    from adaworld_gym.data.episodes import Episode

    frames = np.arange(11, dtype=np.uint8)[:, None, None, None] * np.ones((1, 64, 64, 3), np.uint8)
    episode = Episode(
        frames, actions=np.zeros(10, np.int64), terminations=np.eye(10, dtype=bool)[3],
        meta={"terminal_frame_is_reset": True}, action_space={"type": "discrete", "n": 15},
    )  # fmt: skip
    windows = LabelledWindows([episode], np.array([[0, 4], [0, 5], [0, 8]]), history=4)
    # frame 4 restarts the level (step 3 ended the try): histories start there
    assert [w["history_len"] for w in windows] == [1, 2, 4]
    assert windows[1]["history"][-2:, 0, 0, 0].tolist() == [4, 5] and windows[1]["history"][0].max() == 0


@pytest.mark.usefixtures("one_thread")
def test_adapt_names_another_envs_action_space_before_counting_its_episodes(tmp_path):
    """Push episodes (Box(4)) given for a Procgen env said "asked for 100 trajectories but the data holds 2"."""
    from gymnasium import spaces

    from adaworld_gym.training.adapt import AdaptConfig, _labelled_sets

    store = EpisodeStore(tmp_path / "push", create=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        store.write(
            f"ep_{i:06d}",
            Episode(
                frames=rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8),
                actions=rng.uniform(-1, 1, (5, 4)).astype(np.float32),
                action_space={"type": "box", "low": -1.0, "high": 1.0, "shape": [4]},
            ),
        )
    with pytest.raises(ValueError, match="is not the env's {'type': 'Discrete', 'n': 15}"):
        _labelled_sets(tmp_path / "push", None, AdaptConfig(), 0, spaces.Discrete(15))


@pytest.mark.usefixtures("one_thread")
def test_cli_adapt_checks_its_settings_before_collecting_and_compose_names_a_non_npy_file(tmp_path, capsys):
    wm_dir, lam_dir, _ = save_tiny_models(tmp_path)
    argv = ["adapt", "--model", str(wm_dir), "--lam", str(lam_dir)]
    argv += ["--env", "AdaWorld/Procgen-coinrun-v0", "--out", str(tmp_path / "run")]
    cases = (
        (["--steps", "-1"], "argument --steps: expected an integer >= 0"),
        (["--lr", "nan"], "argument --lr: expected a positive number"),
    )
    for extra, message in cases:  # refused by the parser, under the flag's name
        with pytest.raises(SystemExit) as stop:
            cli_main([*argv, *extra])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing collected

    text = tmp_path / "latent.npy"
    text.write_text("0.1 0.2\n")
    assert cli_main(["compose", str(text), "--out", str(tmp_path / "z.npy")]) == 2
    assert "not a .npy file" in capsys.readouterr().err
