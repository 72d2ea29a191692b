"""Tests for `adaworld play`: key mapping, headless play and recording, the pygame loop on SDL's dummy driver."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from gymnasium import spaces

from adaworld_gym.cli import main
from adaworld_gym.envs import WorldModelEnv
from adaworld_gym.models.bundle import AdaWorldBundle, tiny_random_bundle
from adaworld_gym.play import KeyMapper, play

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = "AdaWorld/WorldModel-v0"


@pytest.fixture(scope="module")
def bundle() -> AdaWorldBundle:
    return tiny_random_bundle("discrete")


@pytest.fixture(scope="module")
def bundle_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    tiny_random_bundle("discrete").save_pretrained(root / "discrete")
    tiny_random_bundle("continuous", reward_head=True).save_pretrained(root / "continuous")
    return root


# ---------------------------------------------------------------------------------------------- key maps
def test_procgen_keys_follow_procgens_action_combos():
    keys = KeyMapper(spaces.Discrete(15))
    assert keys.procgen and keys.idle == 4  # Procgen's no-op
    assert [keys.action({k}) for k in ("left", "down", "up", "right")] == [1, 3, 5, 7]
    assert keys.action({"left", "down"}) == 0 and keys.action({"right", "up"}) == 8
    assert keys.action({"left", "right"}) == 4  # opposite keys cancel
    assert keys.action({"space"}) == 9 and keys.action({"q"}) == 13 and keys.action({"e"}) == 14
    assert keys.action({"7", "up"}) == 7  # a digit picks the action by index


def test_other_discrete_spaces_map_directions_in_order_and_wait_without_a_key():
    keys = KeyMapper(spaces.Discrete(4))
    assert [keys.action({k}) for k in ("up", "down", "left", "right")] == [0, 1, 2, 3]
    assert keys.idle is None and keys.action({"space"}) is None
    assert KeyMapper(spaces.Discrete(3, start=10)).action({"2"}) == 12
    assert KeyMapper(spaces.Discrete(2)).action({"right"}) is None  # no such action
    with pytest.raises(ValueError, match="Discrete\\(15\\)"):
        KeyMapper(spaces.Discrete(4), procgen=True)


def test_box_keys_give_unit_directions_within_the_bounds():
    keys = KeyMapper(spaces.Box(-1, 1, (4,), np.float32))
    assert keys.idle.tolist() == [0, 0, 0, 0] and keys.idle.dtype == np.float32
    assert keys.action({"right"}).tolist() == [1, 0, 0, 0]
    assert keys.action({"down"}).tolist() == [0, -1, 0, 0]
    assert keys.action({"e"}).tolist() == [0, 0, 1, 0]
    np.testing.assert_allclose(keys.action({"left", "up"}), [-(0.5**0.5), 0.5**0.5, 0, 0], rtol=1e-6)
    half = KeyMapper(spaces.Box(np.float32([0.2, -0.5]), np.float32([1.0, 0.5])))
    assert half.idle.tolist() == pytest.approx([0.2, 0.0]) and half.action({"up"}).tolist() == pytest.approx(
        [0.2, 0.5]
    )
    with pytest.raises(ValueError, match="Discrete or Box"):
        KeyMapper(spaces.MultiDiscrete([2, 2]))


# ---------------------------------------------------------------------------------------------- headless
def test_headless_play_records_a_gif_and_is_deterministic(bundle_dirs, tmp_path):
    out = tmp_path / "run.gif"
    result = play(ENV, bundle_dirs / "discrete", headless=True, steps=6, seed=3, record=out, fps=10)
    assert result.steps == 6 and result.frames.shape == (7, 64, 64, 3) and result.frames.dtype == np.uint8
    assert all(0 <= a < 4 for a in result.actions) and result.rewards.tolist() == [0.0] * 6
    gif = iio.imread(out)
    assert gif.shape[0] == 7 and gif.shape[1:3] == (192, 192)  # every frame, upscaled 3x
    again = play(ENV, bundle_dirs / "discrete", headless=True, steps=6, seed=3)
    assert np.array_equal(again.frames, result.frames) and again.actions == result.actions
    other = play(ENV, bundle_dirs / "discrete", headless=True, steps=6, seed=4)
    assert not np.array_equal(other.frames, result.frames)


def test_recorded_gif_plays_at_the_requested_frame_rate(tmp_path):
    """GIF delays are centiseconds and Pillow truncated 1000 / 15 ms to 60 ms: 15 fps recordings played at 16.7."""
    from PIL import Image

    from adaworld_gym.viz import save_gif

    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    for fps, delay in ((15, 70), (5, 200), (2, 500), (60, 20)):  # 60 fps: 2 cs, as browsers slow 0-1 cs to 10
        with Image.open(save_gif(frames, tmp_path / f"{fps}.gif", fps=fps, scale=1)) as gif:
            delays = []
            for i in range(gif.n_frames):
                gif.seek(i)
                delays.append(gif.info["duration"])
        assert delays == [delay] * 4, fps
    for fps in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            save_gif(frames, tmp_path / "bad.gif", fps=fps)


def test_headless_scripted_keys_drive_box_actions_and_restart_finished_episodes(bundle_dirs):
    result = play(
        ENV,
        bundle_dirs / "continuous",
        headless=True,
        steps=5,
        policy="keys",
        env_kwargs={"max_episode_steps": 3, "denoise_steps": 1},
    )
    assert [a.tolist() for a in result.actions] == [[1.0, 0.0]] * 4 + [[0.0, 1.0]]
    assert result.frames.shape[0] == 5 + 1 + 1  # steps, first frame, the new episode's first frame
    assert len(result.episode_returns) == 1 and result.episode_returns[0] == pytest.approx(
        float(result.rewards[:3].sum())
    )
    assert result.rewards.dtype == np.float32 and (result.rewards != 0).all()  # the bundle's reward head


def test_play_errors_are_clear(bundle_dirs, tmp_path, capsys, monkeypatch):
    import adaworld_gym.defaults

    with pytest.raises(ValueError, match="AdaWorld/Nope-v0"):
        play("AdaWorld/Nope-v0", headless=True, steps=1)
    with pytest.raises(ValueError, match="policy"):
        play(ENV, bundle_dirs / "discrete", headless=True, steps=1, policy="smart")
    monkeypatch.setattr(adaworld_gym.defaults, "ASSETS", tmp_path / "assets")
    code = main(["play", "--env", "AdaWorld/WorldModel-Procgen-coinrun-v0", "--headless", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "procgen-coinrun" in err and "adaworld adapt" in err


def test_play_cli_headless(bundle_dirs, tmp_path, capsys):
    out = tmp_path / "cli.gif"
    args = ["play", "--env", ENV, "--bundle", str(bundle_dirs / "discrete"), "--headless"]
    assert main([*args, "--steps", "4", "--seed", "1", "--record", str(out), "--policy", "keys"]) == 0
    printed = capsys.readouterr().out
    assert "played 4 steps" in printed and str(out) in printed and iio.imread(out).shape[0] == 5


# ---------------------------------------------------------------------------------------------- window
def test_keyboard_loop_on_the_dummy_display(bundle_dirs, dummy_display):
    from adaworld_gym.envs.viewer import PygameViewer

    pygame = dummy_display
    viewer = PygameViewer(scale=2)
    post = pygame.event.post
    post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RIGHT))
    result = play(ENV, bundle_dirs / "discrete", steps=2, viewer=viewer, fps=1000)
    assert result.actions == [3, 3] and viewer.closed  # right held: action 3, twice; window closed after

    viewer = PygameViewer(scale=2)
    post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_w))  # WASD: w is up (action 0)
    post(pygame.event.Event(pygame.KEYUP, key=pygame.K_w))
    post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE))
    result = play(ENV, bundle_dirs / "discrete", viewer=viewer, fps=1000)  # no step limit: Esc ends it
    assert result.actions == [] and result.frames.shape == (1, 64, 64, 3)  # Esc in the same frame quits first


def test_human_render_mode_shows_frames_in_a_pygame_window(dummy_display):
    env = WorldModelEnv(tiny_random_bundle("discrete"), render_mode="human")
    env.reset(seed=0)
    env.step(0)
    shown = dummy_display.surfarray.array3d(dummy_display.display.get_surface())  # [W, H, 3]
    assert shown.shape == (256, 256, 3)
    assert np.array_equal(shown.swapaxes(0, 1)[::4, ::4], env._frame)  # the frame, upscaled 4x
    assert env.render() is None
    env.close()


def test_closing_one_human_env_leaves_the_others_window_working(dummy_display):
    """pygame has one display per process: the first close() used to quit it under every other env."""
    first = WorldModelEnv(tiny_random_bundle("discrete"), render_mode="human")
    second = WorldModelEnv(tiny_random_bundle("discrete"), render_mode="human")
    first.reset(seed=0)
    second.reset(seed=1)
    first.close()
    second.step(0)
    shown = dummy_display.surfarray.array3d(dummy_display.display.get_surface())
    assert np.array_equal(shown.swapaxes(0, 1)[::4, ::4], second._frame)
    first.step(0)  # a closed env may still step, but opens no window again
    assert first._window is None
    second.close()
    assert not dummy_display.display.get_init()  # the last viewer shut the display


def test_a_headless_policy_returning_none_fails_instead_of_looping_forever(bundle, tmp_path):
    from adaworld_gym.play import play

    bundle.save_pretrained(tmp_path / "b")
    calls = []

    def policy(step: int):
        calls.append(step)
        if len(calls) > 50:  # the old loop: the same step asked again and again, forever
            raise AssertionError("play kept asking the policy for step 1")
        return None if step == 1 else 0

    with pytest.raises(ValueError, match="returned None at step 1"):
        play(
            "AdaWorld/WorldModel-v0",
            tmp_path / "b",
            headless=True,
            steps=3,
            policy=policy,
            progress=False,
            env_kwargs={"denoise_steps": 1},
        )
    assert calls == [0, 1]


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
