"""`adaworld play` key layouts and headless settings, the shipped ids' frame rate and keywords, the demo.

Key layouts (push, Procgen), taps shorter than a frame, Procgen's restart frame, the SDL variables and fps of
headless play, the shipped world models' frame rate, ids that refuse another game / name, and the demo's LAM
figures without transitions into a Procgen restart.
"""

from __future__ import annotations

import itertools
import math
import os

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

import adaworld_gym  # noqa: F401  (registers the ids)
from adaworld_gym.models.bundle import tiny_random_bundle
from adaworld_gym.play import KeyMapper, play

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = "AdaWorld/WorldModel-v0"


@pytest.fixture(scope="module")
def discrete_bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundles") / "discrete"
    tiny_random_bundle("discrete").save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------- 1: push keys
def test_push_keys_move_the_gripper_the_way_the_camera_shows_it():
    """The push env adds action[:3] to the gripper's world position; its camera shows world +x as screen-down and
    +y as screen-right. The arrows moved the gripper 90 degrees off (right went down the screen)."""
    # play picks the layout from the id: the scripted tour is right x4, then up
    result = play("AdaWorld/RobosuitePush-v0", headless=True, steps=5, policy="keys", progress=False)
    right, up = result.actions[0], result.actions[4]
    assert [a.tolist() for a in result.actions] == [[0, 1, 0, 0]] * 4 + [[-1, 0, 0, 0]]

    # and on the real env: right moves the gripper along world +y (screen right), up along world -x (screen up)
    env = gymnasium.make("AdaWorld/RobosuitePush-v0")
    try:
        for action, axis, sign in ((right, 1, 1), (up, 0, -1)):
            _, info = env.reset(seed=0)
            _, *_, moved = env.step(action)
            delta = moved["eef_position"] - info["eef_position"]
            assert sign * delta[axis] > 0.03 and np.abs(np.delete(delta, axis)).max() < 0.01, (action, delta)
    finally:
        env.close()

    keys = KeyMapper(spaces.Box(-1, 1, (4,), np.float32), push=True)
    assert keys.action({"right"}).tolist() == [0, 1, 0, 0]
    assert keys.action({"left"}).tolist() == [0, -1, 0, 0]
    assert keys.action({"up"}).tolist() == [-1, 0, 0, 0]  # screen up: world -x
    assert keys.action({"down"}).tolist() == [1, 0, 0, 0]
    assert keys.action({"e"}).tolist() == [0, 0, 1, 0] and keys.action({"q"}).tolist() == [0, 0, -1, 0]
    assert keys.action({"d"}).tolist() == [0, 1, 0, 0]  # WASD are the arrows here
    assert keys.idle.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="dimension >= 3"):
        KeyMapper(spaces.Box(-1, 1, (2,), np.float32), push=True)


# ---------------------------------------------------------------------------------------------- 2: Procgen keys
def test_procgen_keys_reach_all_15_actions_with_procgens_own_layout():
    keys = KeyMapper(spaces.Discrete(15))
    assert [keys.action({k}) for k in ("d", "a", "w", "s", "q", "e")] == [9, 10, 11, 12, 13, 14]
    assert keys.action({"space"}) == 9  # D's action ("fire") on the space bar too
    assert [keys.action({k}) for k in ("left", "down", "up", "right")] == [1, 3, 5, 7]  # arrows move
    names = ["up", "down", "left", "right", "space", *"wasdqe"]
    reachable = {keys.action(set(c)) for n in range(3) for c in itertools.combinations(names, n)}
    assert reachable == set(range(15))
    # outside Procgen's layout WASD are still the arrows
    assert [KeyMapper(spaces.Discrete(4)).action({k}) for k in "wsad"] == [0, 1, 2, 3]
    box = KeyMapper(spaces.Box(-1, 1, (2,), np.float32))
    assert box.action({"d"}).tolist() == [1, 0] and box.action({"w"}).tolist() == [0, 1]


# ---------------------------------------------------------------------------------------------- 5: taps
def test_a_tap_shorter_than_a_frame_still_acts(dummy_display):
    from adaworld_gym.envs.viewer import PygameViewer

    pygame = dummy_display
    viewer = PygameViewer(scale=1)
    for kind in (pygame.KEYDOWN, pygame.KEYUP):  # A pressed and released before the first step
        pygame.event.post(pygame.event.Event(kind, key=pygame.K_a))
    result = play("AdaWorld/Procgen-starpilot-v0", steps=2, viewer=viewer, fps=1000)
    assert result.actions == [10, 4]  # Procgen's "A" once, then the no-op: the tap lasts one step only


# ---------------------------------------------------------------------------------------------- 6: Procgen restarts
def test_procgens_restart_frame_is_not_recorded():
    """Procgen's observation with terminated=True is already the restart of the level: the frame where the try
    ended must stay the episode's last. At seed 0 random caveflyer dies at step 25 (the restart frame equals the
    episode's first frame, a replayed start)."""
    steps = 40
    result = play("AdaWorld/Procgen-caveflyer-v0", headless=True, steps=steps, seed=0, progress=False)
    assert len(result.episode_returns) == 1
    # the first frame, one per step but the terminal one, the new episode's first frame
    assert result.frames.shape[0] == steps + 1
    replays = [t for t in range(1, len(result.frames)) if np.array_equal(result.frames[t], result.frames[0])]
    assert replays == []


# ---------------------------------------------------------------------------------------------- 9, 10: play args
def test_headless_play_restores_the_sdl_variables(discrete_bundle, monkeypatch):
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    monkeypatch.setenv("SDL_AUDIODRIVER", "alsa")
    seen = []

    def policy(step):
        seen.append((os.environ.get("SDL_VIDEODRIVER"), os.environ.get("SDL_AUDIODRIVER")))
        return 0

    play(ENV, discrete_bundle, headless=True, steps=1, policy=policy, progress=False)
    assert seen == [("dummy", "alsa")]  # dummy while it runs; a driver already set is left alone
    assert "SDL_VIDEODRIVER" not in os.environ and os.environ["SDL_AUDIODRIVER"] == "alsa"
    with pytest.raises(ValueError):
        play("AdaWorld/Nope-v0", headless=True, steps=1)
    assert "SDL_VIDEODRIVER" not in os.environ  # restored after an error too


@pytest.mark.parametrize("fps", [0, -5, math.nan, math.inf])
def test_a_bad_fps_fails_before_play(discrete_bundle, tmp_path, fps):
    calls = []
    with pytest.raises(ValueError, match="fps must be a positive number"):
        play(
            ENV,
            discrete_bundle,
            headless=True,
            steps=2,
            fps=fps,
            record=tmp_path / "run.gif",
            policy=lambda step: calls.append(step) or 0,
        )
    assert calls == [] and not (tmp_path / "run.gif").exists()


# ---------------------------------------------------------------------------------------------- 3: render_fps
def test_shipped_world_models_carry_their_real_envs_frame_rate():
    from gymnasium.envs.registration import load_env_creator

    from adaworld_gym.envs.shipped import SHIPPED_WORLD_MODELS, shipped_env_id

    env = gymnasium.make(shipped_env_id("RobosuitePush"))
    try:
        assert env.metadata["render_fps"] == 1  # RobosuitePush-v0's: one action lasts 1 s (was 15)
        assert env.metadata["render_modes"] == ["rgb_array", "human"]
    finally:
        env.close()
    vec = gymnasium.make_vec(
        shipped_env_id("RobosuitePush"), num_envs=2, vectorization_mode="vector_entry_point"
    )
    try:
        assert vec.metadata["render_fps"] == 1 and "autoreset_mode" in vec.metadata
    finally:
        vec.close()
    from adaworld_gym.envs.shipped import _REAL_RENDER_FPS

    for name, (_, real_id, _, _) in SHIPPED_WORLD_MODELS.items():  # the table matches the real classes
        real = load_env_creator(gymnasium.spec(real_id).entry_point)
        assert _REAL_RENDER_FPS[name] == real.metadata["render_fps"], name
    from adaworld_gym.envs import WorldModelEnv, WorldModelVectorEnv

    assert (
        WorldModelEnv.metadata["render_fps"] == WorldModelVectorEnv.metadata["render_fps"] == 15
    )  # untouched


# ---------------------------------------------------------------------------------------------- 8: id keywords
def test_ids_refuse_a_game_or_name_other_than_their_own(no_shipped_bundle):
    with pytest.raises(ValueError, match=r"Procgen-heist-v0 is game='heist'.*AdaWorld/Procgen-maze-v0"):
        gymnasium.make("AdaWorld/Procgen-heist-v0", game="maze")
    env = gymnasium.make("AdaWorld/Procgen-heist-v0", game="heist")  # its own game: fine
    assert env.unwrapped.game == "heist"
    env.close()
    coinrun = "AdaWorld/WorldModel-Procgen-coinrun-v0"
    with pytest.raises(ValueError, match=r"name='Procgen-coinrun'.*WorldModel-RobosuitePush-v0"):
        gymnasium.make(coinrun, name="RobosuitePush")
    with pytest.raises(ValueError, match="name='Procgen-coinrun'"):
        gymnasium.make_vec(coinrun, num_envs=2, vectorization_mode="vector_entry_point", name="Procgen-heist")
    with pytest.raises(FileNotFoundError, match="procgen-coinrun"):  # its own name passes the check
        gymnasium.make(coinrun, name="Procgen-coinrun")


# ---------------------------------------------------------------------------------------------- 4: demo figures
def test_demo_lam_figures_leave_out_transitions_into_a_procgen_restart(tmp_path, monkeypatch):
    from adaworld_gym import demo, latent
    from adaworld_gym.data.episodes import Episode
    from adaworld_gym.metrics import psnr_pooled

    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (64, 64, 3))

    def frames(n, start):
        return np.stack([np.clip(base + start + 2 * t, 0, 255) for t in range(n)]).astype(np.uint8)

    episodes = {}
    for i, game in enumerate(demo.DEMO_GAMES):
        f = frames(6, 3 * i)
        f[-1] = 255 - f[-1]  # Procgen's restart: nothing like the frame before
        terminal = np.array([False] * 4 + [True])
        episodes[game] = [Episode(frames=f, actions=np.arange(5) + 100 * i, terminations=terminal)]
    push = frames(4, 1)

    class CopyLam:
        def encode(self, f_t, f_t1):
            return np.stack([f_t1.mean((1, 2, 3)) - f_t.mean((1, 2, 3)), np.arange(len(f_t))], 1)

        def decode(self, f_t, mu):
            return f_t.copy()

    plotted = {}

    def plot(mu, actions, groups, path, **kwargs):
        plotted.update(mu=mu, actions=actions, groups=groups)

    monkeypatch.setattr(demo, "_procgen_episodes", lambda out, seed: episodes)
    monkeypatch.setattr(demo, "_push_episode", lambda seed: push)
    monkeypatch.setattr(demo, "_latent_model", lambda out, seed: (CopyLam(), "copy"))
    monkeypatch.setattr(demo, "DEFAULT_WORLD_MODEL", tmp_path / "no-world-model")
    monkeypatch.setattr(latent, "plot_latents", plot)
    summary = demo.run_demo(tmp_path / "demo", seed=0)

    f_t = np.concatenate([ep.frames[:-2] for eps in episodes.values() for ep in eps] + [push[:-1]])
    f_t1 = np.concatenate([ep.frames[1:-1] for eps in episodes.values() for ep in eps] + [push[1:]])
    assert summary["copy_last_psnr"] == pytest.approx(psnr_pooled(f_t, f_t1))
    assert summary["lam_recon_psnr"] == pytest.approx(summary["copy_last_psnr"])  # the LAM above copies
    n = 4 * len(demo.DEMO_GAMES)  # the Procgen transitions kept
    assert len(plotted["mu"]) == len(plotted["actions"]) == len(plotted["groups"]) == n
    assert plotted["actions"].tolist() == [a + 100 * i for i in range(len(demo.DEMO_GAMES)) for a in range(4)]
    assert plotted["groups"].tolist() == [i for i in range(len(demo.DEMO_GAMES)) for _ in range(4)]
