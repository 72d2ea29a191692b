"""Action transfer: rollout shape, determinism, frame loading from shards / GIFs / images, GIF writing, clear errors."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from synthetic_data import random_frames

from adaworld_gym.data.episodes import Episode, EpisodeStore
from adaworld_gym.models import LatentActionModel, lam_preset
from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset
from adaworld_gym.transfer import load_frames, transfer, transfer_gif
from adaworld_gym.viz import save_gif, save_png

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lam():
    torch.manual_seed(0)
    return LatentActionModel(**lam_preset("tiny")).eval()


@pytest.fixture(scope="module")
def wm():
    torch.manual_seed(0)
    model = DiffusionWorldModel(**world_model_preset("tiny")).eval()
    with torch.no_grad():  # as if trained: the zero-initialised condition weights become non-zero
        model.cond_mlp[-1].weight.normal_(0.0, 0.5)
    return model


def frames(n: int, seed: int = 0, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_transfer_shape_and_determinism(lam, wm):
    source, target = frames(6), frames(2, seed=1)
    out = transfer(lam, wm, source, target, steps=5, denoise_steps=1, seed=0)
    assert out.shape == (5, 64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, transfer(lam, wm, source, target, steps=5, denoise_steps=1, seed=0))
    assert not np.array_equal(out, transfer(lam, wm, source, target, steps=5, denoise_steps=1, seed=1))
    # The source's actions matter: another source video gives another rollout from the same target.
    other = transfer(lam, wm, frames(6, seed=2), target, steps=5, denoise_steps=1, seed=0)
    assert not np.array_equal(out, other)


def test_transfer_rejects_bad_inputs(lam, wm):
    with pytest.raises(ValueError, match="5 actions, fewer than steps=20"):
        transfer(lam, wm, frames(6), frames(1), steps=20)
    with pytest.raises(ValueError, match=r"target_history must be uint8 \[T, 64, 64, 3\]"):
        transfer(lam, wm, frames(6), frames(1)[0], steps=2)
    with pytest.raises(ValueError, match="source_frames must be uint8"):
        transfer(lam, wm, frames(6).astype(np.float32), frames(1), steps=2)
    with pytest.raises(ValueError, match="source_frames must be uint8"):
        transfer(lam, wm, frames(6, size=32), frames(1), steps=2)
    with pytest.raises(ValueError, match="source_frames has 1 frame: an action needs two"):
        transfer(lam, wm, frames(1), frames(1), steps=1)
    with pytest.raises(ValueError, match="denoise_steps must be an int >= 1, got 0"):  # was blamed on steps
        transfer(lam, wm, frames(6), frames(1), steps=2, denoise_steps=0)
    for seed in (-1, 1.5, None):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            transfer(lam, wm, frames(6), frames(1), steps=2, seed=seed)
    # numpy integers are integers (they used to be refused with "got 2")
    assert transfer(lam, wm, frames(3), frames(1), steps=np.int64(2), denoise_steps=1).shape[0] == 2
    narrow = LatentActionModel(**lam_preset("tiny"), latent_dim=16)
    with pytest.raises(ValueError, match="latent_dim 16 does not match"):
        transfer(narrow, wm, frames(6), frames(1), steps=2)


def test_load_frames_from_shard_gif_and_image(tmp_path):
    video = frames(5)
    store = EpisodeStore(tmp_path / "eps", create=True)
    store.write("ep_000000", Episode(frames=video))
    np.testing.assert_array_equal(load_frames(store.path("ep_000000")), video)

    gif = load_frames(save_gif(video, tmp_path / "clip.gif", scale=2))  # 128 px, resized back to 64
    assert gif.shape == (5, 64, 64, 3) and gif.dtype == np.uint8

    wide = np.zeros((60, 100, 3), np.uint8)
    wide[:, 20:80] = 200  # the centre crop keeps only this square
    image = load_frames(save_png(wide, tmp_path / "scene.png"))
    assert image.shape == (1, 64, 64, 3) and image.min() == 200

    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_frames(missing)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        load_frames(tmp_path / "notes.txt")
    import imageio.v3 as iio

    ramp = np.repeat(np.linspace(0, 65535, 64).astype(np.uint16)[None], 64, axis=0)
    iio.imwrite(tmp_path / "deep.png", ramp)  # 16-bit greyscale: scaled to 8 bits, not wrapped around
    deep = load_frames(tmp_path / "deep.png")
    assert deep.dtype == np.uint8 and deep.min() == 0 and deep.max() == 255
    # Scaled 65535 -> 255 in every channel: the low byte (wrapping) also spans 0..255, but not along the ramp.
    assert np.abs(deep[0].astype(float) - ramp[..., None] / 257).max() < 1
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_frames(tmp_path / "broken.png")


def test_load_frames_reads_grey_alpha_and_one_bit_images(tmp_path):
    """Greyscale+alpha PNGs were refused ("got shape (64, 64, 2)") and 1-bit ones ("got bool")."""
    from PIL import Image

    grey = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), "LA").save(tmp_path / "la.png")
    la = load_frames(tmp_path / "la.png")
    assert la.shape == (1, 64, 64, 3) and np.array_equal(la[0], np.repeat(grey[..., None], 3, -1))
    Image.fromarray(grey > 127).save(tmp_path / "bw.png")  # mode "1"
    bw = load_frames(tmp_path / "bw.png")
    assert bw.shape == (1, 64, 64, 3) and set(np.unique(bw)) == {0, 255}
    assert np.array_equal(bw[0, ..., 0] == 255, grey > 127)


def test_a_cmyk_jpeg_reads_in_rgb(tmp_path):
    from PIL import Image

    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[...] = (200, 50, 10)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    loaded = load_frames(tmp_path / "cmyk.jpg")[0].astype(int)
    assert np.abs(loaded - rgb).max() <= 8  # JPEG's loss only (imageio's raw channels gave [55, 205, 245])


def test_transfer_gif_checks_target_frames_before_the_rollout(tmp_path, lam, wm):
    for bad, match in ((0, r"in 1\.\.2"), (3, r"in 1\.\.2"), (1.5, "must be an int")):
        with pytest.raises(ValueError, match=match):
            transfer_gif(frames(4), frames(2), tmp_path / "t.gif", lam, wm, steps=2, target_frames=bad)
    assert not (tmp_path / "t.gif").exists()


def test_transfer_gif_from_files_and_model_dirs(tmp_path, lam, wm):
    lam.save_pretrained(tmp_path / "lam")
    wm.save_pretrained(tmp_path / "wm" / "model")  # a run directory is accepted too
    source = save_gif(frames(4), tmp_path / "source.gif", scale=1)
    target = save_png(frames(1, seed=3)[0], tmp_path / "target.png")
    out = transfer_gif(
        source,
        target,
        tmp_path / "t.gif",
        lam=tmp_path / "lam",
        model=tmp_path / "wm",
        steps=3,
        denoise_steps=1,
        scale=1,
    )
    gif = iio.imread(out, index=None)
    assert gif.shape[:3] == (4, 64, 64 * 2 + 2)  # start frame + 3 steps; source | gap | transferred


@pytest.mark.usefixtures("one_thread")
def test_save_gif_refuses_inputs_it_cannot_write(tmp_path):
    frames = random_frames((3, 8, 8, 3))
    out = save_gif(frames, tmp_path / "keep.gif", scale=1)
    before = out.read_bytes()
    # No frames wrote a 0-byte GIF over the old file; the others failed inside Pillow with other error types.
    bad = {
        "no frames": dict(frames=frames[:0]),
        "one channel": dict(frames=frames[..., :1]),
        "scale 0": dict(frames=frames, scale=0),
        "fractional scale": dict(frames=frames, scale=2.5),
        "fps too low for a GIF delay": dict(frames=frames, fps=1e-3),
    }
    for name, kwargs in bad.items():
        with pytest.raises(ValueError):
            save_gif(path=out, **{"scale": 1, **kwargs})
        assert out.read_bytes() == before, name
    save_gif(frames, tmp_path / "slowest.gif", fps=100 / 65535, scale=1)  # the longest delay a GIF holds


@pytest.mark.usefixtures("one_thread")
def test_load_frames_checks_the_frame_rate(tmp_path):
    video = save_gif(random_frames((6, 64, 64, 3)), tmp_path / "v.gif", fps=10, scale=1)
    assert len(load_frames(video, target_hz=5)) == 3 and len(load_frames(video, target_hz=None)) == 6
    for hz in (0, -5, float("nan"), float("inf")):  # 0: ZeroDivisionError; -5: every frame, silently
        with pytest.raises(ValueError, match="target_hz must be a positive number"):
            load_frames(video, target_hz=hz)
