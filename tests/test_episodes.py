import io
import json
import zipfile
import zlib

import numpy as np
import pytest

from adaworld_gym.data.episodes import Episode, EpisodeError, EpisodeStore, encode_episode, read_episode


def _episode(n=10, seed=0, actions="discrete"):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n + 1, 64, 64, 3), dtype=np.uint8)
    acts = rng.integers(0, 15, n) if actions == "discrete" else rng.uniform(-1, 1, (n, 4)).astype(np.float32)
    return Episode(frames=frames, actions=acts, env_id="test", seed=seed, meta={"level": 3})


def test_round_trip_is_exact(tmp_path):
    store = EpisodeStore(tmp_path / "d", create=True)
    for kind in ("discrete", "continuous"):
        ep = _episode(actions=kind)
        store.write(kind, ep)
        back = store.read(kind)
        np.testing.assert_array_equal(back.frames, ep.frames)
        np.testing.assert_array_equal(back.actions, ep.actions)
        assert back.actions.dtype == ep.actions.dtype
        assert back.meta == {"level": 3} and back.env_id == "test" and back.seed == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert set(manifest["episodes"]) == {"discrete", "continuous"}
    assert all(len(e["sha256"]) == 64 for e in manifest["episodes"].values())


def test_action_free_episode(tmp_path):
    store = EpisodeStore(tmp_path, create=True)
    store.write("v", Episode(frames=np.zeros((5, 64, 64, 3), np.uint8)))
    ep = store.read("v")
    assert ep.actions is None and ep.rewards.shape == (4,) and not ep.terminations.any()


def test_truncated_shard_names_the_file(tmp_path):
    store = EpisodeStore(tmp_path, create=True)
    store.write("a", _episode())
    path = store.path("a")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(EpisodeError, match="a.awe"):
        read_episode(path)
    with pytest.raises(EpisodeError, match="checksum mismatch.*a.awe"):
        store.read("a")


def test_flipped_byte_is_caught_by_checksum(tmp_path):
    store = EpisodeStore(tmp_path, create=True)
    store.write("a", _episode())
    data = bytearray(store.path("a").read_bytes())
    data[len(data) // 2] ^= 0xFF
    store.path("a").write_bytes(bytes(data))
    with pytest.raises(EpisodeError, match="a.awe"):
        store.read("a")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(EpisodeError, match="not found"):
        read_episode(tmp_path / "nope.awe")
    with pytest.raises(EpisodeError, match="not found"):
        EpisodeStore(tmp_path / "nowhere")


def test_orphan_shard_is_adopted_and_broken_one_set_aside(tmp_path):
    store = EpisodeStore(tmp_path, create=True)
    store.write("a", _episode())
    (tmp_path / "manifest.json").unlink()  # as if killed between rename and manifest update
    store.path("b").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="moved aside"):
        again = EpisodeStore(tmp_path, create=True)
    assert again.names() == ["a"] and not store.path("b").exists()
    assert (tmp_path / "b.awe.corrupt").read_bytes() == b"garbage"  # kept for a look, never deleted


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"frames": np.zeros((3, 64, 64, 3), np.float32)}, "uint8"),
        ({"frames": np.zeros((3, 64, 64), np.uint8)}, "uint8"),
        ({"frames": np.zeros((3, 64, 64, 3), np.uint8), "actions": np.zeros(5)}, "actions"),
        ({"frames": np.zeros((3, 64, 64, 3), np.uint8), "actions": np.array([0.0, np.nan])}, "NaN"),
        ({"frames": np.zeros((3, 64, 64, 3), np.uint8), "rewards": np.array([0.0, np.inf])}, "rewards"),
        (
            {
                "frames": np.zeros((3, 64, 64, 3), np.uint8),
                "actions": np.array([0, 15]),
                "action_space": {"type": "discrete", "n": 15},
            },
            r"\[0, 15\)",
        ),
        (
            {
                "frames": np.zeros((3, 64, 64, 3), np.uint8),
                "actions": np.zeros((2, 3), np.float32),
                "action_space": {"type": "box", "shape": [4], "low": -1.0, "high": 1.0},
            },
            "shape",
        ),
        (
            {
                "frames": np.zeros((3, 64, 64, 3), np.uint8),
                "actions": np.full((2, 4), 1.5, np.float32),
                "action_space": {"type": "box", "shape": [4], "low": -1.0, "high": 1.0},
            },
            "must lie in",
        ),
    ],
)
def test_bad_episodes_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Episode(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rewards": np.zeros((2, 2), np.float32)}, r"rewards must have shape .*\(2,\)"),
        ({"rewards": 0.0}, "rewards must have shape"),
        ({"terminations": [0.5, 0.0]}, "terminations must be booleans"),
        ({"actions": np.zeros((2, 2, 2), np.int64)}, r"actions must be \[T-1\]"),
        ({"frames": np.zeros((3, 0, 0, 3), np.uint8)}, "non-empty frame"),
    ],
)
def test_malformed_per_step_fields_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Episode(**{"frames": np.zeros((3, 8, 8, 3), np.uint8), **kwargs})


def test_unwritable_output_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot write"):
        EpisodeStore(blocker / "sub", create=True)


def test_two_writers_of_one_directory_keep_each_others_episodes(tmp_path):
    # Two collectors run side by side: each used to save its own view of the manifest, dropping the other's
    # entries, so readers (which never adopt orphans) silently missed shards that were on disk.
    first, second = EpisodeStore(tmp_path, create=True), EpisodeStore(tmp_path, create=True)
    first.write("ep_000000", _episode(seed=0))
    second.write("ep_000001", _episode(seed=1))
    first.write("ep_000002", _episode(seed=2))
    reader = EpisodeStore(tmp_path)
    assert reader.names() == ["ep_000000", "ep_000001", "ep_000002"]
    np.testing.assert_array_equal(reader.read("ep_000001").frames, _episode(seed=1).frames)


@pytest.mark.parametrize(
    "episodes",
    [
        "nope",  # not a mapping
        {"a": {"bytes": 1, "frames": 11, "has_actions": True}},  # no checksum
        {"a": ["not", "an", "entry"]},
    ],
)
def test_damaged_manifest_entries_are_named(tmp_path, episodes):
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": "adaworld-episode/1", "episodes": episodes})
    )
    with pytest.raises(EpisodeError, match="corrupt manifest"):
        EpisodeStore(tmp_path)


def test_shard_whose_meta_is_not_an_object_is_named(tmp_path):
    import zipfile

    path = tmp_path / "x.awe"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.json", "[1, 2]")
    with pytest.raises(EpisodeError, match="x.awe: meta.json is not a JSON object"):
        read_episode(path)


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


def test_episode_meta_must_be_a_dict(tmp_path):
    """meta=None was written, then training crashed on meta.get with an AttributeError."""
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    assert Episode(frames=frames, meta=None).meta == {}
    with pytest.raises(ValueError, match="meta must be a dict, got list"):
        Episode(frames=frames, meta=["push"])


def test_the_same_episode_makes_the_same_bytes_whenever_it_is_written(monkeypatch):
    """zip stamped each member with the clock: an episode collected again after damage got another checksum, and the
    run it fed refused to resume on "other episodes"."""
    import time

    episode = Episode(frames=np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8))
    first = encode_episode(episode)
    monkeypatch.setattr(time, "localtime", lambda *a: time.struct_time((2031, 5, 6, 7, 8, 10, 0, 126, 0)))
    assert encode_episode(episode) == first
