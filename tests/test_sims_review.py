"""Regression tests for defects found in review of the Procgen env and the collectors.

Checks whose failure would be Procgen's C code ending the process run in a subprocess, so a regression fails
one test instead of killing the whole run.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from adaworld_gym.data.collect import collect_procgen, collect_push, collect_videos
from adaworld_gym.data.episodes import EpisodeStore
from adaworld_gym.sims.procgen import ProcgenEnv


def _run(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


# ---------------------------------------------------------------------------------------------- item 1


def test_collect_procgen_checks_every_games_mode_and_the_seed_before_recording_anything(tmp_path):
    out = tmp_path / "out"
    done = _run(
        f"""
        from adaworld_gym.data.collect import collect_procgen
        try:
            collect_procgen(["maze", "bigfish"], 1, 3, {str(out)!r}, distribution_mode="memory", batch=1)
        except ValueError as e:
            print("REFUSED", e)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]  # before: Procgen's fassert ended the process
    assert "REFUSED Procgen has no 'memory' mode for bigfish" in done.stdout
    assert (
        not out.exists()
    )  # no collection.json (maze's neither) that would refuse a rerun with other settings
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        collect_procgen(["maze"], 1, 3, out, seed=-1, batch=1)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        collect_push(1, out, seed=-1)
    assert not out.exists()
    assert collect_procgen(["maze", "bigfish"], 1, 3, out, batch=1).episodes_written == 2  # the rerun works


# ---------------------------------------------------------------------------------------------- item 2


def test_set_state_refuses_a_state_of_another_level_range_or_mode_and_leaves_the_env_as_it_was():
    test_env = ProcgenEnv("maze", levels="test")
    test_env.reset(seed=0)
    test_state = test_env.get_state()
    train = ProcgenEnv("maze", levels="train")
    _, info = train.reset(seed=0)
    frame, own = train.render(), train.get_state()
    with pytest.raises(ValueError, match=r"level 9\d{3}, outside this env's levels \[0, 9000\)"):
        train.set_state(test_state)
    assert train.level == info["level"]
    np.testing.assert_array_equal(train.render(), frame)
    np.testing.assert_array_equal(train.get_state(), own)  # untouched
    with pytest.raises(ValueError, match="outside this env's levels"):
        train.reset(seed=1, options={"state": test_state})
    train.set_state(own)  # a state of its own range still restores
    assert train.level == info["level"]

    memory = ProcgenEnv("jumper", distribution_mode="memory")
    memory.reset(seed=0)
    easy = ProcgenEnv("jumper", distribution_mode="easy")
    easy.reset(seed=0)
    with pytest.raises(ValueError, match="a state of distribution_mode 'memory', but this env plays 'easy'"):
        easy.set_state(memory.get_state())
    with pytest.raises(ValueError, match="a state of distribution_mode 'easy', but this env plays 'memory'"):
        memory.reset(options={"state": easy.get_state()})
    plain = ProcgenEnv("jumper", use_backgrounds=False)
    plain.reset(seed=0)
    with pytest.raises(
        ValueError, match="other Procgen options \\(use_backgrounds=1; this env has use_backgrounds=0"
    ):
        plain.set_state(easy.get_state())


# ---------------------------------------------------------------------------------------------- item 3


def _gif(path, shade):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(np.full((16, 16, 3), (shade + 20 * i) % 256, np.uint8)) for i in range(4)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def test_video_collection_refuses_another_source_folder_before_writing_anything(tmp_path):
    _gif(tmp_path / "a" / "clip.gif", 0)
    _gif(tmp_path / "b" / "clip.gif", 128)  # the same name under another source: before, silently skipped
    _gif(tmp_path / "b" / "new" / "other.gif", 60)
    out = tmp_path / "out"
    assert collect_videos(tmp_path / "a", out).episodes_written == 1
    with pytest.raises(ValueError, match="other settings \\(source"):
        collect_videos(tmp_path / "b", out)
    assert len(EpisodeStore(out / "video-root")) == 1
    assert not (out / "video-new").exists() or len(EpisodeStore(out / "video-new")) == 0
    assert collect_videos(tmp_path / "a", out).episodes_skipped == 1  # the same source still resumes
    # A subset recorded before the source was (no "source" key) is still resumable as before.
    legacy = out / "video-root" / "collection.json"
    record = json.loads(legacy.read_text())
    del record["source"]
    legacy.write_text(json.dumps(record))
    assert collect_videos(tmp_path / "a", out).episodes_skipped == 1
    assert json.loads(legacy.read_text()) == record


# ---------------------------------------------------------------------------------------------- item 4


def test_cut_damaged_or_footerless_states_are_refused_instead_of_ending_the_process():
    done = _run(
        """
        import numpy as np
        from adaworld_gym.sims.procgen import ProcgenEnv

        env = ProcgenEnv("coinrun")
        env.reset(seed=0)
        state = env.get_state()
        flipped = state.copy()
        flipped[len(state) // 3] ^= 1
        bad = {
            "half": state[: len(state) // 2],
            "one byte short": state[:-1],
            "cut inside": np.concatenate([state[:100], state[101:]]),
            "padded": np.concatenate([state, np.zeros(10, np.uint8)]),
            "flipped": flipped,
            "footerless": np.frombuffer(env._env.callmethod("get_state")[0], np.uint8),
        }
        for name, value in bad.items():
            try:
                env.set_state(value)
                print(name, "ACCEPTED")
            except ValueError as e:
                print(name, "REFUSED", e)
        env.set_state(state)
        env.step(4)
        print("STILL RUNNING")
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]  # before: fassert 'offset + size <= length'
    lines = dict(line.split(" REFUSED ", 1) for line in done.stdout.splitlines() if " REFUSED " in line)
    assert set(lines) == {"half", "one byte short", "cut inside", "padded", "flipped", "footerless"}
    assert "truncated or padded" in lines["cut inside"] and "CRC32" in lines["flipped"]
    assert "not a state from ProcgenEnv.get_state" in lines["footerless"]
    assert "STILL RUNNING" in done.stdout


# ---------------------------------------------------------------------------------------------- item 5


def test_the_procgen_collector_stores_a_time_out_as_a_truncation_not_a_termination(tmp_path):
    from adaworld_gym.data.clips import valid_targets

    collect_procgen(["maze"], 2, 600, tmp_path, seed=0, batch=2)  # maze times out after 500 steps
    store = EpisodeStore(tmp_path / "procgen-maze")
    truncated = 0
    for name in store.names():
        episode = store.read(name)
        if episode.meta.get("truncated"):
            truncated += 1
            # the step into Procgen's reset frame is dropped; nothing is a termination
            assert len(episode.actions) == 499 and not episode.terminations.any()
            assert len(episode.frames) == 500 and len(valid_targets(episode)) > 0
        else:  # completed the maze: an ordinary termination with the completion reward
            assert episode.terminations[-1] and episode.rewards[-1] > 0
    assert truncated >= 1  # before: 500 steps with terminations[-1] True and reward 0


# ---------------------------------------------------------------------------------------------- item 6


def test_a_time_out_after_a_restore_is_still_a_truncation():
    env = ProcgenEnv("maze")  # standing still in maze ends only at its 500-step time-out
    env.reset(seed=0)
    for _ in range(450):
        env.step(4)
    state = env.get_state()
    for restore in ("set_state", "reset"):
        other = ProcgenEnv("maze")
        other.reset(seed=5)
        if restore == "set_state":
            other.set_state(state)
        else:
            other.reset(seed=5, options={"state": state})
        np.testing.assert_array_equal(other.get_state(), state)
        ends = [other.step(4)[2:4] for _ in range(50)]
        assert ends[-1] == (False, True), restore  # before: terminated=True, 50 steps "after the restore"
        assert not any(any(e) for e in ends[:-1])
