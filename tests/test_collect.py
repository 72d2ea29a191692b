import json
import subprocess
import sys

import numpy as np
import pytest
from synthetic_data import run_in_fresh_interpreter

from adaworld_gym.data.clips import ClipDataset, WindowBatches
from adaworld_gym.data.collect import collect_procgen, collect_push, collect_videos, square_resize
from adaworld_gym.data.episodes import Episode, EpisodeError, EpisodeStore


def test_procgen_collection_is_resumable_without_duplicates(tmp_path):
    once = collect_procgen(["heist"], 6, 20, tmp_path / "once", seed=1, batch=4)
    assert once.episodes_written == 6 and once.frames > 0 and once.bytes_per_frame < 12288
    collect_procgen(["heist"], 3, 20, tmp_path / "twice", seed=1, batch=4)  # interrupted after 3
    resumed = collect_procgen(["heist"], 6, 20, tmp_path / "twice", seed=1, batch=4)
    assert resumed.episodes_written == 3 and resumed.episodes_skipped == 3
    a, b = (
        EpisodeStore(tmp_path / "once" / "procgen-heist"),
        EpisodeStore(tmp_path / "twice" / "procgen-heist"),
    )
    assert a.names() == b.names()
    for name in a.names():
        ea, eb = a.read(name), b.read(name)
        np.testing.assert_array_equal(ea.frames, eb.frames)
        np.testing.assert_array_equal(ea.actions, eb.actions)
        assert ea.env_id == "AdaWorld/Procgen-heist-v0" and ea.action_space == {"type": "discrete", "n": 15}
    # Other settings into the same subset would mix two data sets under one name: refused, nothing written.
    for kwargs, changed in (({"levels": "test"}, "levels"), ({"seed": 2}, "seed")):
        with pytest.raises(ValueError, match=f"other settings \\({changed}"):
            collect_procgen(["heist"], 8, 20, tmp_path / "twice", batch=4, **{"seed": 1, **kwargs})
    assert len(EpisodeStore(tmp_path / "twice" / "procgen-heist").names()) == 6


def test_clip_dataset_windows_and_determinism(tmp_path):
    collect_procgen(["heist", "maze"], 4, 30, tmp_path, seed=0, batch=4)
    ds = ClipDataset(tmp_path, history=4, seed=3, with_actions=True)
    assert ds.subset_names == ["procgen-heist", "procgen-maze"]
    assert np.isclose(ds.subset_probs.sum(), 1.0)
    a = [next(iter(ds)) for _ in range(1)][0]
    b = next(iter(ClipDataset(tmp_path, history=4, seed=3, with_actions=True)))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["history"].shape == (4, 64, 64, 3) and a["history"].dtype == np.uint8
    assert 1 <= a["history_len"] <= 4 and 0 <= a["action"] < 15
    # windows match the episode: the target follows the last history frame under the stored action
    store = EpisodeStore(tmp_path / "procgen-heist")
    episode = store.read(store.names()[0])
    w = ds.window(episode, 1)
    assert w["history_len"] == 2 and not w["history"][:2].any()
    np.testing.assert_array_equal(w["history"][2:], episode.frames[:2])
    np.testing.assert_array_equal(w["next"], episode.frames[2])
    assert w["action"] == episode.actions[1]


def test_subset_weighting_follows_size_power():
    from adaworld_gym.data.clips import SUBSET_WEIGHT_EXPONENT

    sizes = np.array([100.0, 10000.0])
    w = sizes**SUBSET_WEIGHT_EXPONENT
    assert 0.1 < (w / w.sum())[0] < 0.2  # the small subset gets far more than its 1% share


def test_terminal_reset_frames_are_never_targets(tmp_path):
    collect_procgen(["coinrun"], 4, 400, tmp_path, seed=0, batch=4)
    store = EpisodeStore(tmp_path / "procgen-coinrun")
    ended = [store.read(n) for n in store.names() if store.read(n).terminations.any()]
    assert ended, "expected at least one random-play CoinRun episode to end within 400 steps"
    from adaworld_gym.data.clips import valid_targets

    for episode in ended:
        last = int(np.flatnonzero(episode.terminations)[0])
        assert last not in valid_targets(episode)


def _write_video(path, n=30, fps=30):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (96, 72))
    for i in range(n):
        frame = np.zeros((72, 96, 3), np.uint8)
        frame[20:40, 2 * i : 2 * i + 20] = 255
        writer.write(frame)
    writer.release()


def test_video_collection(tmp_path):
    import imageio.v3 as iio

    (tmp_path / "src" / "clips").mkdir(parents=True)
    _write_video(tmp_path / "src" / "clips" / "a.avi", n=30, fps=30)
    gif = np.zeros((8, 50, 80, 3), np.uint8)
    for i in range(8):
        gif[i, 10:20, 5 * i : 5 * i + 10] = 200  # moving, so the GIF writer keeps every frame
    iio.imwrite(tmp_path / "src" / "b.gif", gif, duration=100, loop=0)
    report = collect_videos(tmp_path / "src", tmp_path / "out")
    assert report.episodes_written == 2
    avi = EpisodeStore(tmp_path / "out" / "video-clips")
    ep = avi.read(avi.names()[0])
    assert ep.actions is None and ep.frame_skip == 3 and ep.frames.shape == (10, 64, 64, 3)
    gif_store = EpisodeStore(tmp_path / "out" / "video-root")
    assert gif_store.read(gif_store.names()[0]).frames.shape == (8, 64, 64, 3)
    assert collect_videos(tmp_path / "src", tmp_path / "out").episodes_skipped == 2
    ClipDataset(tmp_path / "out", history=2).sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match="other settings.*size"):  # a rerun at another size would mix two
        collect_videos(tmp_path / "src", tmp_path / "out", size=32)


def test_an_unreadable_video_does_not_stop_the_others(tmp_path):
    (tmp_path / "src" / "m").mkdir(parents=True)
    for name in ("a.avi", "c.avi", "d.avi"):
        _write_video(tmp_path / "src" / "m" / name, n=12, fps=10)
    (tmp_path / "src" / "m" / "b.avi").write_bytes(b"not a video")
    with pytest.raises(
        ValueError, match=r"1 of 4 videos could not be read \(.*b.avi\); the others were collected"
    ):
        collect_videos(tmp_path / "src", tmp_path / "out")
    assert len(EpisodeStore(tmp_path / "out" / "video-m").names()) == 3
    (tmp_path / "src" / "m" / "b.avi").unlink()  # fixed: the rerun reads nothing again
    assert collect_videos(tmp_path / "src", tmp_path / "out").episodes_skipped == 3


def test_a_subfolder_collected_after_its_parent_is_refused(tmp_path):
    (tmp_path / "videos" / "moves").mkdir(parents=True)
    _write_video(tmp_path / "videos" / "moves" / "a.avi", n=12, fps=10)
    collect_videos(tmp_path / "videos", tmp_path / "out")  # into video-moves/
    with pytest.raises(ValueError, match=r"1 of these videos are already collected in .*video-moves"):
        collect_videos(tmp_path / "videos" / "moves", tmp_path / "out")  # would be video-root/
    assert not (tmp_path / "out" / "video-root").exists()
    again = collect_videos(tmp_path / "videos", tmp_path / "out")  # the same source again: fine
    assert again.episodes_skipped == 1


def test_clips_of_two_frame_sizes_are_refused_naming_the_subset(tmp_path):
    for name, size in (("video-a", 8), ("video-b", 16)):
        EpisodeStore(tmp_path / name, create=True).write(
            "ep_0", Episode(np.zeros((4, size, size, 3), np.uint8))
        )
    dataset = ClipDataset(tmp_path, history=1)
    with pytest.raises(EpisodeError, match="video-b.*16x16"):
        for subset in range(2):
            dataset.sample_from(subset, np.random.default_rng(0))


def test_square_resize_crops_the_centre():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, 50:150] = 255  # exactly the centre square
    assert square_resize(frame, 64).min() == 255


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown Procgen game"):
        collect_procgen(["pong"], 1, 1, tmp_path)
    with pytest.raises(ValueError, match="not found"):
        collect_videos(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no video files"):
        collect_videos(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="target_hz"):
        collect_videos(tmp_path / "empty", tmp_path / "out", target_hz=0)
    with pytest.raises(ValueError, match="batch must be positive"):
        collect_procgen(["coinrun"], 1, 1, tmp_path, batch=0)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="x.mp4"):
        collect_videos(tmp_path / "broken", tmp_path / "out2")
    with pytest.raises(EpisodeError, match="no episode data"):
        ClipDataset(tmp_path / "empty")


def test_cli_collect_procgen(tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "adaworld_gym.cli",
        "collect",
        "procgen",
        "--games",
        "maze,jumper",
        "--episodes",
        "2",
        "--steps",
        "10",
        "--out",
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "frames/s" in result.stdout and "bytes/frame" in result.stdout
    assert len(EpisodeStore(out / "procgen-jumper")) == 2
    bad = subprocess.run(cmd[:6] + ["pong"] + cmd[7:], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "unknown Procgen game" in bad.stderr


def test_bad_inputs_to_the_collectors_are_named(tmp_path):
    from pathlib import Path

    from adaworld_gym.data.clips import find_subsets
    from adaworld_gym.data.collect import collect_push, read_video

    episode = tmp_path / "ep.awe"
    episode.write_bytes(b"x")
    with pytest.raises(EpisodeError, match="must be a directory.*the file"):
        find_subsets([episode])
    bad_gif = tmp_path / "bad.gif"
    bad_gif.write_bytes(b"GIF89a not really")
    with pytest.raises(ValueError, match=r"cannot read GIF .*bad.gif \(corrupt or not a GIF\)") as err:
        read_video(Path(bad_gif))
    assert "\n" not in str(err.value)  # one line, not imageio's install advice
    with pytest.raises(ValueError, match="workers must be positive"):
        collect_push(1, tmp_path / "push", workers=-1)


def test_an_interrupted_parallel_push_collection_drops_the_queued_episodes(tmp_path, monkeypatch):
    # pool.map queues every episode at once; the pool's with-block shutdown then waited for all of them, so a
    # Ctrl-C kept the collector simulating (and discarding) the rest of the collection.
    from concurrent.futures import ProcessPoolExecutor

    from adaworld_gym.data import collect

    futures = []

    class Recording(ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            futures.append(super().submit(*args, **kwargs))
            return futures[-1]

    write = EpisodeStore.write

    def write_then_interrupt(self, name, episode):
        write(self, name, episode)
        raise KeyboardInterrupt

    monkeypatch.setattr(collect, "ProcessPoolExecutor", Recording)
    monkeypatch.setattr(EpisodeStore, "write", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        collect.collect_push(24, tmp_path, steps=10, workers=2)  # episodes long enough to leave a queue
    # Before the fix none was cancelled. How many finish before the interrupt is handled depends on the load:
    # with 1-step episodes a quiet CI run cancelled only 5; 10-step ones leave ~18 queued (measured here).
    assert len(futures) == 24 and sum(f.cancelled() for f in futures) >= 6
    assert EpisodeStore(tmp_path / "push").names() == ["ep_000000"]


def test_video_names_of_colliding_paths_stay_distinct(tmp_path):
    from adaworld_gym.data.collect import _video_names

    # "plumless" and "buckeroo" share a CRC-32: one video used to overwrite (or hide) the other.
    files = sorted([tmp_path / "buckeroo", tmp_path / "plumless", tmp_path / "other.mp4"])
    names = _video_names(files, tmp_path)
    assert len(set(names.values())) == 3
    assert names[tmp_path / "plumless"] == names[tmp_path / "buckeroo"] + "_1"  # the later path in order
    assert names == _video_names(files, tmp_path)  # the same on a rerun


def test_read_video_gives_back_every_recorded_frame_of_a_gif(tmp_path):
    from PIL import Image

    from adaworld_gym.data.collect import read_video
    from adaworld_gym.viz import save_gif

    frames = np.zeros((6, 16, 16, 3), np.uint8)
    frames[3:] = 200  # three still steps, then three more: writers merge repeats into longer frames
    save_gif(frames, tmp_path / "still.gif", fps=10)
    read, fps = read_video(tmp_path / "still.gif")
    assert fps == 10 and len(read) == 6
    np.testing.assert_array_equal(np.stack(read)[:, 0, 0, 0], [0, 0, 0, 200, 200, 200])
    grey = [Image.fromarray(np.full((8, 8), v, np.uint8), mode="L") for v in (0, 128)]
    grey[0].save(tmp_path / "grey.gif", save_all=True, append_images=grey[1:], duration=100)
    read, _ = read_video(tmp_path / "grey.gif")  # "No packer found from P to L" before
    assert [f.shape for f in read] == [(8, 8, 3)] * 2 and read[1][0, 0, 0] == 128


def test_a_data_mixture_of_two_frame_sizes_is_refused_naming_the_directories(tmp_path):
    for name, size in (("a", 16), ("b", 8)):
        EpisodeStore(tmp_path / name, create=True).write(
            "ep_0", Episode(np.zeros((5, size, size, 3), np.uint8))
        )
    shares = {str(tmp_path / "a"): 0.5, str(tmp_path / "b"): 0.5}
    batches = WindowBatches(shares, history=1, batch_size=16, seed=0, collate=lambda clips: clips)
    # before: the batch collate failed later on a torch.stack size mismatch that named nothing
    with pytest.raises(EpisodeError, match=r"a data mixture needs one frame size") as error:
        next(batches)
    assert str(tmp_path / "a") in str(error.value) and str(tmp_path / "b") in str(error.value)
    # one size still samples, and the stream is unchanged by the check
    one = {str(tmp_path / "a"): 1.0}
    first = [c["subset"] for c in next(WindowBatches(one, 1, 8, 3, lambda clips: clips))]
    assert first == [0] * 8


def test_one_dataset_of_two_frame_sizes_names_both_directories(tmp_path):
    # Two --data folders holding a subset of one name ("video-big") were told apart by nothing but the name.
    from adaworld_gym.data.clips import ClipDataset

    for root, size in (("first", 16), ("second", 8)):
        store = EpisodeStore(tmp_path / root / "video-big", create=True)
        store.write("ep_0", Episode(np.zeros((5, size, size, 3), np.uint8)))
    dataset = ClipDataset([tmp_path / "first", tmp_path / "second"], history=1)
    with pytest.raises(EpisodeError, match="one size") as error:
        list(dataset.iter_windows())
    assert str(tmp_path / "first" / "video-big") in str(error.value)
    assert str(tmp_path / "second" / "video-big") in str(error.value)


def _gif(path, shade):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(np.full((16, 16, 3), (shade + 20 * i) % 256, np.uint8)) for i in range(4)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


@pytest.mark.parametrize("folders", [("a-b", "a/b"), ("root", ".")])
def test_video_folders_that_would_share_one_subset_are_refused_before_writing(tmp_path, folders):
    src = tmp_path / "src"
    for i, folder in enumerate(folders):
        _gif(src / folder / f"clip{i}.gif", 60 * i)
    # before: both folders were written into one subset (video-a-b/, video-root/), against one subset per folder
    with pytest.raises(ValueError, match="would both be collected into video-"):
        collect_videos(src, tmp_path / "out", size=16)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


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


@pytest.mark.usefixtures("one_thread")
def test_a_video_file_where_a_folder_is_expected_is_named(tmp_path):
    from adaworld_gym.data.collect import collect_videos

    video = tmp_path / "clip.gif"
    video.write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="clip.gif is a file: pass the directory"):
        collect_videos(video, tmp_path / "out")


def test_collect_procgen_checks_every_games_mode_and_the_seed_before_recording_anything(tmp_path):
    out = tmp_path / "out"
    done = run_in_fresh_interpreter(
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
