"""Regression tests for the session-27 review of the simulators and the episode data (sims/, data/)."""

from __future__ import annotations

import io
import json
import zipfile
import zlib

import numpy as np
import pytest

from adaworld_gym.data.clips import WindowBatches
from adaworld_gym.data.collect import collect_videos
from adaworld_gym.data.episodes import Episode, EpisodeError, EpisodeStore, encode_episode, read_episode


def _small_episode(seed: int = 0, side: int = 16) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        frames=rng.integers(0, 256, (3, side, side, 3), dtype=np.uint8),
        actions=rng.integers(0, 15, 2),
        rewards=rng.normal(size=2),
        action_space={"type": "discrete", "n": 15},
    )


def test_every_flipped_byte_of_a_shard_is_an_episode_error_naming_the_file(tmp_path):
    data = encode_episode(_small_episode(side=2))
    path = tmp_path / "ep.awe"
    causes = set()
    for n in range(len(data)):
        path.write_bytes(data[:n] + bytes([data[n] ^ 0x55]) + data[n + 1 :])
        try:
            read_episode(path)  # a flip in a zip timestamp changes nothing: reading it back is fine
        except EpisodeError as e:
            assert "ep.awe" in str(e)
            causes.add(type(e.__cause__))
        # before: zlib.error (a damaged deflate stream) and NotImplementedError (a damaged header) escaped
    assert zlib.error in causes and NotImplementedError in causes


def test_an_orphan_with_a_damaged_deflate_stream_is_set_aside_not_a_crash(tmp_path):
    store = EpisodeStore(tmp_path / "d", create=True)
    store.write("ep_000000", _small_episode())
    data = encode_episode(_small_episode(1))
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("rewards.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    bad = bytearray(data)
    bad[start] ^= 0xFF  # the deflate stream's first byte: zlib.error on reading
    (tmp_path / "d" / "ep_000001.awe").write_bytes(bytes(bad))
    with pytest.warns(UserWarning, match="ep_000001.awe"):
        reopened = EpisodeStore(tmp_path / "d", create=True)
    assert reopened.names() == ["ep_000000"]
    assert (tmp_path / "d" / "ep_000001.awe.corrupt").exists()


@pytest.mark.parametrize(
    "change",
    [{"frame_shape": 5}, {"action_space": "discrete"}, {"action_space": {"type": "box", "shape": 3}}],
)
def test_header_fields_of_the_wrong_type_are_named(tmp_path, change):
    src = zipfile.ZipFile(io.BytesIO(encode_episode(_small_episode())))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for name in src.namelist():
            member = src.read(name)
            if name == "meta.json":
                member = json.dumps({**json.loads(member), **change}).encode()
            out.writestr(name, member)
    path = tmp_path / "odd.awe"
    path.write_bytes(buf.getvalue())
    with pytest.raises(EpisodeError, match="odd.awe"):  # before: a bare TypeError / AttributeError
        read_episode(path)


def test_a_manifest_that_is_not_utf8_is_named(tmp_path):
    store = EpisodeStore(tmp_path, create=True)
    store.write("a", _small_episode())
    raw = store.manifest_path.read_bytes()
    store.manifest_path.write_bytes(raw[:5] + b"\xff\xfe" + raw[7:])
    with pytest.raises(EpisodeError, match="corrupt manifest .*manifest.json"):  # before: UnicodeDecodeError
        EpisodeStore(tmp_path)


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


def test_procgen_reset_takes_a_none_state_as_no_state():
    from adaworld_gym.sims.procgen import ProcgenEnv

    env, fresh = ProcgenEnv("coinrun"), ProcgenEnv("coinrun")
    try:
        # before: TypeError from int(None) deep in the state check, for a fresh env and a used one alike
        obs, info = fresh.reset(seed=3, options={"state": None, "level": None})
        env.reset(seed=0)
        again, info2 = env.reset(seed=3, options={"state": None})
        expected, info3 = ProcgenEnv("coinrun").reset(seed=3)
        assert info == info2 == info3
        np.testing.assert_array_equal(obs, expected)
        np.testing.assert_array_equal(again, expected)
    finally:
        env.close()
        fresh.close()
