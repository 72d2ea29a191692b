"""train_world_model on tiny synthetic episodes: logs, saved EMA model, summary, resume, twin, LAM checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaworld_gym.models import LatentActionModel, lam_preset
from adaworld_gym.models.world_model import DiffusionWorldModel
from adaworld_gym.training import latest_checkpoint, load_checkpoint
from adaworld_gym.training.world_model import train_world_model
from benchmarks.world_model import synthetic_push_like

torch.set_num_threads(1)  # the machine is shared: one thread is the fastest per core
FAST = dict(batch_size=4, log_every=1, image_every=2, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return str(synthetic_push_like(root, episodes=3, steps=10, seed=0))


def save_lam(path, **overrides) -> str:
    torch.manual_seed(0)
    LatentActionModel(**{**lam_preset("tiny"), **overrides}).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def lam_dir(tmp_path_factory):
    return save_lam(tmp_path_factory.mktemp("lam"))


def test_train_logs_saves_and_resumes(tmp_path, data, lam_dir, monkeypatch):
    out = tmp_path / "run"
    model_dir = train_world_model(data, out, lam_dir, "tiny", max_steps=3, eval_data=data, **FAST)

    assert model_dir == out / "model"
    assert list((out / "logs").glob("events.out.tfevents.*"))
    model = DiffusionWorldModel.from_pretrained(model_dir)
    assert not model.config.action_agnostic and model.config.block_out_channels == [8, 16]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["samples"] == 12 and summary["lam_dir"] == lam_dir
    assert {"psnr_1step", "psnr_copy_last", "ssim_1step"} <= set(summary["eval"])

    # The saved model holds the EMA weights, not the last training weights.
    state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert state["step"] == 3
    for saved, shadow in zip(model.parameters(), state["ema"]["shadow_params"], strict=True):
        assert torch.equal(saved, shadow)
    assert any(not torch.equal(p, state["model"][n]) for n, p in model.named_parameters())

    # A second call with a larger budget resumes at step 3: the step and the wall-clock time continue.
    import adaworld_gym.training.world_model as module

    loss, calls = module.window_loss, []
    monkeypatch.setattr(module, "window_loss", lambda *a, **k: calls.append(1) or loss(*a, **k))
    train_world_model(data, out, lam_dir, "tiny", max_steps=5, **FAST)
    monkeypatch.undo()
    assert len(calls) == 2  # steps 4 and 5 only, not 5 steps from the start
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["steps"] == 5 and resumed["samples"] == 20
    assert resumed["train_minutes"] > summary["train_minutes"]
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["step"] == 5

    with pytest.raises(ValueError, match="different model config"):
        train_world_model(data, out, lam_dir, "tiny", max_steps=6, model_overrides={"num_history": 2}, **FAST)

    # Resuming on another LAM (other labels) or other data would mix two runs: refused, naming what changed.
    other_lam = tmp_path / "other_lam"
    torch.manual_seed(1)
    LatentActionModel(**lam_preset("tiny")).save_pretrained(other_lam)
    with pytest.raises(ValueError, match="trained with other lam"):
        train_world_model(data, out, other_lam, "tiny", max_steps=6, **FAST)
    other_data = str(synthetic_push_like(tmp_path / "more", episodes=2, steps=8, seed=2))
    with pytest.raises(ValueError, match="trained with other data"):
        train_world_model(other_data, out, lam_dir, "tiny", max_steps=6, **FAST)


def test_twin_trains_without_lam(tmp_path, data):
    # {directory: share} goes through the mixture sampler.
    other = str(synthetic_push_like(tmp_path / "other", episodes=2, steps=8, seed=1))
    model_dir = train_world_model(
        {data: 0.7, other: 0.3}, tmp_path / "run", None, "tiny", action_agnostic=True, max_steps=2, **FAST
    )
    assert DiffusionWorldModel.from_pretrained(model_dir).config.action_agnostic
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["lam_dir"] is None


def test_same_seed_same_weights(tmp_path, data, lam_dir):
    kw = dict(max_steps=2, seed=3, **FAST)
    a = DiffusionWorldModel.from_pretrained(train_world_model(data, tmp_path / "a", lam_dir, "tiny", **kw))
    b = DiffusionWorldModel.from_pretrained(train_world_model(data, tmp_path / "b", lam_dir, "tiny", **kw))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_lam_mismatch_and_missing_lam_raise(tmp_path, data):
    # The model takes the LAM's sizes; frames of another size than the LAM's are refused before training, naming
    # the data and the LAM (it failed at the first labels, inside the LAM, naming neither), and leave nothing.
    small_frames = save_lam(tmp_path / "lam32", image_size=32, patch_size=8)
    with pytest.raises(
        ValueError, match=r"frames of .*push are 64x64, but .* 32x32 \(the size its LAM .*lam32"
    ):
        train_world_model(data, tmp_path / "a", small_frames, "tiny", max_steps=1, **FAST)
    assert not (tmp_path / "a").exists()
    narrow = save_lam(tmp_path / "lam16", latent_dim=16)
    with pytest.raises(ValueError, match="latent_dim 16 does not match the world model's action_dim 32"):
        overrides = {"action_dim": 32}  # sizes given explicitly must agree with the LAM
        train_world_model(
            data, tmp_path / "b", narrow, "tiny", max_steps=1, model_overrides=overrides, **FAST
        )
    with pytest.raises(ValueError, match="image_size 32 does not match the world model's sample_size 64"):
        overrides = {"sample_size": 64}
        train_world_model(
            data, tmp_path / "b2", small_frames, "tiny", max_steps=1, model_overrides=overrides, **FAST
        )
    with pytest.raises(ValueError, match="needs a LAM"):
        train_world_model(data, tmp_path / "c", None, "tiny", max_steps=1, **FAST)
    with pytest.raises(FileNotFoundError, match="no LAM found"):
        train_world_model(data, tmp_path / "d", tmp_path / "nothing", "tiny", max_steps=1, **FAST)
    with pytest.raises(ValueError, match="unknown world model preset"):
        train_world_model(data, tmp_path / "e", None, "huge", action_agnostic=True, max_steps=1)


def test_init_from_starts_at_the_saved_weights(tmp_path, data):
    first = train_world_model(data, tmp_path / "a", None, "tiny", action_agnostic=True, max_steps=2, **FAST)
    # max_steps=0: nothing is trained, so the saved (EMA) model must equal the one it started from.
    again = train_world_model(
        data, tmp_path / "b", None, "tiny", action_agnostic=True, max_steps=0, init_from=first, **FAST
    )
    a, b = DiffusionWorldModel.from_pretrained(first), DiffusionWorldModel.from_pretrained(again)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["init_from"] == str(first)
    with pytest.raises(ValueError, match="its model config differs in num_history"):
        train_world_model(
            data, tmp_path / "c", None, "tiny", action_agnostic=True, max_steps=1,
            model_overrides={"num_history": 2}, init_from=first, **FAST,
        )  # fmt: skip


def test_the_lam_takes_the_datas_frame_size_and_the_world_model_the_lams_sizes(tmp_path):
    # 32-px videos with a 16-d LAM used to stop train-lam (64 px) and then train-wm (with a hint for a flag it
    # did not have).
    from adaworld_gym.data.episodes import Episode, EpisodeStore
    from adaworld_gym.models.world_model import DiffusionWorldModel
    from adaworld_gym.training.lam import train_lam
    from adaworld_gym.training.world_model import train_world_model

    rng = np.random.default_rng(0)
    store = EpisodeStore(tmp_path / "data" / "video-a", create=True)
    for i in range(2):
        store.write(f"ep_{i:06d}", Episode(frames=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)))
    # train-lam takes the data's frame size (32 px) without being told; train-wm then takes the LAM's sizes
    overrides = {"latent_dim": 16}
    lam = train_lam(
        [tmp_path / "data"], tmp_path / "lam", preset="tiny", max_steps=2, model_overrides=overrides
    )
    model = DiffusionWorldModel.from_pretrained(
        train_world_model([tmp_path / "data"], tmp_path / "wm", lam, preset="tiny", max_steps=2)
    )
    assert (model.config.action_dim, model.config.sample_size) == (16, 32)
    frames = model.predict_next(np.zeros((1, 2, 32, 32, 3), np.uint8), np.zeros((1, 16), np.float32))
    assert frames.shape == (1, 32, 32, 3)


def test_a_run_directory_of_another_model_is_refused_in_one_line(tmp_path, data, lam_dir):
    from adaworld_gym.training.lam import train_lam

    train_lam(data, tmp_path / "run", "tiny", max_steps=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="is a checkpoint of another kind of model") as refused:
        train_world_model(data, tmp_path / "run", lam_dir, "tiny", max_steps=2, **FAST)
    assert len(str(refused.value)) < 300


@pytest.mark.usefixtures("one_thread")
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


def test_a_warm_start_trained_on_another_lam_is_warned_about(tmp_path, data, lam_dir):
    first = train_world_model(data, tmp_path / "a", lam_dir, "tiny", max_steps=1, **FAST)
    torch.manual_seed(1)
    LatentActionModel(**lam_preset("tiny")).save_pretrained(tmp_path / "other_lam")
    with pytest.warns(UserWarning, match="trained on the latent actions of another LAM"):
        train_world_model(
            data, tmp_path / "b", str(tmp_path / "other_lam"), "tiny", max_steps=1, init_from=first, **FAST
        )
