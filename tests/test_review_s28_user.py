"""Session 28's walk through the package as a new user: each finding reproduced, then fixed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaworld_gym.data.episodes import Episode, EpisodeStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "argv",
    [
        ["play", "--env", "AdaWorld/WorldModel-Procgen-coinrun-v0", "--headless", "--seed", "-1"],
        ["transfer", "--source", "s.awe", "--target", "t.png", "--seed", "-1"],
        ["demo", "--out", "o", "--seed", "-1"],
        ["train-wm", "--data", "d", "--out", "o", "--seed", "4294967296"],
        ["collect", "procgen", "--games", "coinrun", "--out", "o", "--seed", "x"],
    ],
)
def test_seeds_outside_what_numpy_and_torch_take_are_refused_by_the_parser(cli_main, capsys, argv):
    # Before: a gymnasium traceback (play), a late failure (demo), numpy's message (train-wm), -1 taken (transfer).
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    assert stop.value.code == 2 and "expected a seed, an integer in 0..2**32-1" in capsys.readouterr().err


def test_a_push_task_index_beyond_the_bound_is_refused_before_drawing_tasks(cli_main, capsys):
    # Before: --task 100000 drew 100,001 tasks one by one, about a second each.
    with pytest.raises(SystemExit) as stop:
        cli_main(["plan", "--model", "oracle", "--task", "100000", "--out", "p.gif"])
    assert stop.value.code == 2 and "a task index in 0..999" in capsys.readouterr().err


def test_a_game_named_twice_is_collected_once():
    from adaworld_gym.cli import _games

    assert _games("coinrun,maze,coinrun") == ["coinrun", "maze"]


def test_a_video_file_where_a_folder_is_expected_is_named(tmp_path):
    from adaworld_gym.data.collect import collect_videos

    video = tmp_path / "clip.gif"
    video.write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="clip.gif is a file: pass the directory"):
        collect_videos(video, tmp_path / "out")


def test_reset_options_that_are_not_a_dict_are_named():
    from adaworld_gym.envs.world_model_env import WorldModelEnv, WorldModelVectorEnv
    from adaworld_gym.models.bundle import tiny_random_bundle

    bundle = tiny_random_bundle("discrete")
    for env in (WorldModelEnv(bundle), WorldModelVectorEnv(bundle, num_envs=2)):
        with pytest.raises(ValueError, match="reset options must be a dict"):
            env.reset(seed=0, options="frames")  # was "unknown reset options ['a', 'e', 'f', 'm', 'r', 's']"
        env.reset(seed=0, options=None)
        env.close()


def test_procgen_set_state_names_a_state_of_the_wrong_type():
    import gymnasium

    import adaworld_gym  # noqa: F401  (registers the envs)

    env = gymnasium.make("AdaWorld/Procgen-coinrun-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="state must be the bytes or uint8 array get_state"):
        env.unwrapped.set_state("garbage")  # was "invalid literal for int() with base 10"
    env.close()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"pixel_channels": "abc"}, "pixel_channels must be an integer >= 0, got 'abc'"),
        ({"pixel_channels": -5}, "pixel_channels must be an integer >= 0, got -5"),
        ({"width": 1.5}, "width must be an integer >= 1, got 1.5"),
        ({"latent_dim": 0}, "latent_dim must be an integer >= 1, got 0"),
        ({"warp": "maybe"}, "warp must be true or false, got 'maybe'"),
        ({"beta": float("nan")}, "beta must be a finite number >= 0"),
        ({"width": 30, "num_heads": 4}, "width 30 is not divisible by num_heads 4"),
    ],
)
def test_lam_settings_of_the_wrong_type_or_range_are_named(setting, message):
    from adaworld_gym.models import LatentActionModel, lam_preset

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LatentActionModel(**{**lam_preset("tiny"), **setting})


def test_a_lam_trained_on_frames_of_another_size_names_both(cli_main, capsys, tmp_path):
    store = EpisodeStore(tmp_path / "data" / "procgen-maze", create=True)
    rng = np.random.default_rng(0)
    store.write("ep_000000", Episode(frames=rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)))
    argv = ["train-lam", "--data", str(tmp_path / "data"), "--preset", "tiny", "--max-steps", "1"]
    code = cli_main(
        [*argv, "--set", "image_size=48", "--set", "patch_size=8", "--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "for a LAM of image_size 48" in err and "Traceback" not in err


def test_a_resumed_run_of_another_config_names_the_settings_that_differ(tmp_path):
    from adaworld_gym.training.checkpoint import save_checkpoint
    from adaworld_gym.training.common import resume_state, training_state

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    class NoEma:
        decay = 0.9

        def state_dict(self):
            return {"decay": 0.9}

    config = {"motion_dim": 0, "widths": [1, 2], "name": "x"}
    state = training_state(model, optimizer, scheduler, NoEma(), torch.Generator(), config, step=1)
    save_checkpoint(tmp_path, 1, state)
    with pytest.raises(ValueError, match=r"\(motion_dim: 0 then, 8 now\); use a new out_dir") as err:
        resume_state(tmp_path, {**config, "motion_dim": 8}, model, optimizer, scheduler)
    assert "widths" not in str(err.value)


def test_cluster_refuses_to_write_into_the_installed_package(cli_main, capsys):
    from adaworld_gym import defaults

    code = cli_main(["cluster", "--lam", str(defaults.ASSETS / "lam"), "--data", "unused", "--k", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "into the installed package" in err
    assert not list((defaults.ASSETS / "lam").glob("latent_options*"))


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


def test_a_world_model_remembers_its_lam_and_warns_of_another(tmp_path):
    """adapt and transfer took any LAM of the right size: a codebook from another LAM's latents, silently."""
    import warnings

    from adaworld_gym import defaults
    from adaworld_gym.models import LatentActionModel, lam_preset
    from adaworld_gym.training.world_model import train_world_model, warn_if_other_lam
    from benchmarks.world_model import synthetic_push_like

    data = synthetic_push_like(tmp_path / "push", episodes=2, steps=6, seed=0)
    for name, seed in (("lam_a", 0), ("lam_b", 1)):
        torch.manual_seed(seed)
        LatentActionModel(**lam_preset("tiny")).save_pretrained(tmp_path / name)
    model = train_world_model(
        str(data), tmp_path / "wm", str(tmp_path / "lam_a"), "tiny", max_steps=1, batch_size=2, progress=False
    )
    assert (model / "lam.json").is_file()
    with pytest.warns(UserWarning, match="trained on the latent actions of another LAM"):
        warn_if_other_lam(model, tmp_path / "lam_b")
    # A copy re-saved elsewhere (as a bundle's) gains diffusers' _name_or_path: still the same LAM.
    LatentActionModel.from_pretrained(tmp_path / "lam_a").save_pretrained(tmp_path / "bundle_lam")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_other_lam(tmp_path / "wm", tmp_path / "lam_a")  # the run directory works too
        warn_if_other_lam(model, tmp_path / "bundle_lam")
        warn_if_other_lam(defaults.DEFAULT_WORLD_MODEL, tmp_path / "lam_b")  # no record: not checked


def test_a_window_without_a_display_warns(monkeypatch):
    """render_mode="human" on a machine without a display opened an invisible window, silently."""
    from adaworld_gym.envs import viewer

    for var in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(viewer.sys, "platform", "linux")

    def stop():
        raise RuntimeError("stopped before pygame")

    monkeypatch.setattr(viewer, "import_pygame", stop)
    with pytest.warns(UserWarning, match="no display"), pytest.raises(RuntimeError, match="stopped"):
        viewer.PygameViewer()
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # chosen on purpose (CI, headless play): no warning
    assert not viewer.no_display()
