"""Session-27 review of the world-model envs and play: regressions for the bugs it found (tiny bundles, CPU)."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import adaworld_gym  # noqa: F401  (registers the ids)
from adaworld_gym.envs import SB3VecEnvAdapter, WorldModelVectorEnv
from adaworld_gym.models.bundle import AdaWorldBundle, tiny_random_bundle

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle() -> AdaWorldBundle:
    return tiny_random_bundle("discrete")


@pytest.mark.parametrize("seed", [[5, -1], [3, 1.5], 1.5, "ab", np.array(2.0)])
def test_a_bad_seed_in_any_row_resets_no_row(bundle, seed):
    # [5, -1] reset row 0 with seed 5, then Gymnasium's seeding refused row 1's -1: half a reset. 1.5 raised
    # "'float' object is not iterable".
    venv = WorldModelVectorEnv(bundle, num_envs=2, denoise_steps=1)
    venv.reset(seed=0)
    venv.step(np.zeros(2, np.int64))
    windows, elapsed = venv._core.windows.copy(), venv._core.elapsed.copy()
    rngs = [rng.bit_generator.state for rng in venv._rngs]
    with pytest.raises(ValueError, match="seed"):
        venv.reset(seed=seed)
    np.testing.assert_array_equal(venv._core.windows, windows)
    np.testing.assert_array_equal(venv._core.elapsed, elapsed)  # row 0 was back at step 0
    assert [rng.bit_generator.state for rng in venv._rngs] == rngs
    # Valid seeds still work as before: numpy integers, None entries, s + i.
    obs, _ = venv.reset(seed=[np.int64(4), None])
    np.testing.assert_array_equal(obs[0], venv.reset(seed=4)[0][0])


def test_sb3_adapter_refuses_a_vector_env_it_cannot_drive(bundle):
    # A SyncVectorEnv (make_vec's "sync" mode) or a wrapped WorldModelVectorEnv was accepted and failed at the
    # first reset with "... has no attribute '_core'".
    kwargs = {"bundle": bundle, "num_envs": 2, "denoise_steps": 1}
    sync = gymnasium.make_vec("AdaWorld/WorldModel-v0", vectorization_mode="sync", **kwargs)
    ours = gymnasium.make_vec("AdaWorld/WorldModel-v0", vectorization_mode="vector_entry_point", **kwargs)
    for venv in (sync, gymnasium.wrappers.vector.RecordEpisodeStatistics(ours)):
        with pytest.raises(TypeError, match="takes a WorldModelVectorEnv itself"):
            SB3VecEnvAdapter(venv)
    assert SB3VecEnvAdapter(ours).reset().shape == (2, 64, 64, 3)


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
