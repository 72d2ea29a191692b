"""Model edge cases: bundle digests, stale shards, bf16 casts, configs of the wrong type or of numpy numbers, empty,
read-only and out-of-range inputs."""

import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from synthetic_data import random_frames

from adaworld_gym.latent import save_options
from adaworld_gym.models import (
    ActionCodebook,
    ActionMLP,
    AdaWorldBundle,
    DiffusionWorldModel,
    LatentOptions,
    tiny_random_bundle,
    world_model_preset,
)
from adaworld_gym.models.bundle import bundle_digest
from adaworld_gym.models.loading import directory_digest


@pytest.fixture(scope="module")
def bundle(one_thread):
    return tiny_random_bundle("discrete", reward_head=True)


def _frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 2, 64, 64, 3), dtype=np.uint8)


def _tiny_world_model(seed):
    torch.manual_seed(seed)
    return DiffusionWorldModel(**world_model_preset("tiny"), num_history=2, action_dim=8).eval()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bundle_digest_covers_shared_models(bundle, tmp_path):
    # The shared path is "../../shared_wm": its ".." parts used to exclude every file of the shared model.
    bundle.world_model.save_pretrained(tmp_path / "shared_wm")
    bundle.save_pretrained(tmp_path / "bundles" / "a", shared={"world_model": tmp_path / "shared_wm"})
    before = bundle_digest(tmp_path / "bundles" / "a")
    model = DiffusionWorldModel.from_pretrained(tmp_path / "shared_wm")
    with torch.no_grad():
        model.null_action.add_(1.0)
    model.save_pretrained(tmp_path / "shared_wm")
    assert bundle_digest(tmp_path / "bundles" / "a") != before
    with pytest.raises(ValueError, match="changed since the bundle was saved"):
        AdaWorldBundle.from_pretrained(tmp_path / "bundles" / "a")


def test_shared_model_notes_may_change(bundle, tmp_path):
    bundle.world_model.save_pretrained(tmp_path / "shared_wm")
    bundle.save_pretrained(tmp_path / "b", shared={"world_model": tmp_path / "shared_wm"})
    (tmp_path / "shared_wm" / "train_summary.json").write_text('{"stages": 2}')  # not weights: still loads
    loaded = AdaWorldBundle.from_pretrained(tmp_path / "b")
    assert _same_weights(loaded.world_model, bundle.world_model)


def test_latent_options_stored_beside_a_shared_model_keep_the_bundle_loading(bundle, tmp_path):
    # `adaworld cluster --lam adaworld_gym/assets/lam` stores its options in the LAM's folder, which every shipped
    # bundle shares: that must not read as changed weights.
    bundle.world_model.save_pretrained(tmp_path / "shared_wm")
    bundle.save_pretrained(tmp_path / "b", shared={"world_model": tmp_path / "shared_wm"})
    save_options(tmp_path / "shared_wm", np.zeros((3, 8), np.float32))
    assert _same_weights(AdaWorldBundle.from_pretrained(tmp_path / "b").world_model, bundle.world_model)


def test_a_model_with_non_finite_weights_is_refused_at_load(tmp_path):
    model = _tiny_world_model(0)
    with torch.no_grad():
        model.null_action[0] = float("nan")
    model.save_pretrained(tmp_path / "wm")
    with pytest.raises(ValueError, match="NaN or inf in the weights \\(null_action\\)"):
        DiffusionWorldModel.from_pretrained(tmp_path / "wm")


def test_bundle_saved_without_shared_digests_loads(bundle, tmp_path):
    bundle.world_model.save_pretrained(tmp_path / "shared_wm")
    bundle.save_pretrained(tmp_path / "b", shared={"world_model": tmp_path / "shared_wm"})
    header = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert set(header.pop("shared_digests")) == {"world_model"}
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(header))  # as bundles saved before session 25
    assert _same_weights(AdaWorldBundle.from_pretrained(tmp_path / "b").world_model, bundle.world_model)
    header["shared_digests"] = {"lam": "0" * 64}  # names a model the bundle does not share
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="bad 'shared_digests'"):
        AdaWorldBundle.from_pretrained(tmp_path / "b")


def test_directory_digest_under_hidden_folder(bundle, tmp_path):
    bundle.world_model.save_pretrained(tmp_path / "plain" / "wm")
    shutil.copytree(tmp_path / "plain", tmp_path / ".cache")
    (tmp_path / ".cache" / "wm" / ".notes").mkdir()
    (tmp_path / ".cache" / "wm" / ".notes" / "x.json").write_text("{}")  # hidden below the root: skipped
    assert directory_digest(tmp_path / ".cache" / "wm") == directory_digest(tmp_path / "plain" / "wm")
    assert directory_digest(tmp_path / "plain" / "wm") != directory_digest(tmp_path / "plain")  # not empty


def test_unsharded_save_over_sharded_save_loads(tmp_path, one_thread):
    sharded, single = _tiny_world_model(0), _tiny_world_model(1)
    sharded.save_pretrained(tmp_path / "wm", max_shard_size="50KB")
    assert (tmp_path / "wm" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    single.save_pretrained(tmp_path / "wm")  # diffusers left the old index, naming deleted shards
    assert _same_weights(DiffusionWorldModel.from_pretrained(tmp_path / "wm"), single)
    assert sorted(os.listdir(tmp_path / "wm")) == ["config.json", "diffusion_pytorch_model.safetensors"]
    sharded.save_pretrained(tmp_path / "wm", max_shard_size="50KB")  # the old single file goes
    assert not (tmp_path / "wm" / "diffusion_pytorch_model.safetensors").exists()
    assert _same_weights(DiffusionWorldModel.from_pretrained(tmp_path / "wm"), sharded)


def test_save_pretrained_is_atomic_and_keeps_other_files(tmp_path, one_thread, monkeypatch):
    first, second = _tiny_world_model(0), _tiny_world_model(1)
    first.save_pretrained(tmp_path / "wm")
    (tmp_path / "wm" / "train_summary.json").write_text('{"steps": 1}')
    (tmp_path / "wm" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"another variant")
    before = {p.name: p.read_bytes() for p in (tmp_path / "wm").iterdir()}

    import safetensors.torch

    real_save = safetensors.torch.save_file

    def killed(*args, **kwargs):  # the weights file half written, then the process dies
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        second.save_pretrained(tmp_path / "wm")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "wm").iterdir()} == before  # the old save, whole
    assert sorted(os.listdir(tmp_path)) == ["wm"]  # no side directory left behind
    assert _same_weights(DiffusionWorldModel.from_pretrained(tmp_path / "wm"), first)

    second.save_pretrained(tmp_path / "wm")
    assert _same_weights(DiffusionWorldModel.from_pretrained(tmp_path / "wm"), second)
    assert (tmp_path / "wm" / "train_summary.json").read_text() == '{"steps": 1}'  # notes and variants stay
    assert (tmp_path / "wm" / "diffusion_pytorch_model.fp16.safetensors").read_bytes() == b"another variant"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        second.save_pretrained(tmp_path / "file")
    first.save_pretrained(tmp_path / "wm", variant="fp16")  # another variant: the main weights stay
    assert _same_weights(DiffusionWorldModel.from_pretrained(tmp_path / "wm"), second)
    assert _same_weights(DiffusionWorldModel.from_pretrained(tmp_path / "wm", variant="fp16"), first)


def test_models_cast_to_bfloat16_run(bundle):
    frames = _frames(2)
    f_t, f_t1 = frames[:, 0], frames[:, 1]
    lam = copy.deepcopy(bundle.lam).to(torch.bfloat16)
    mu32, mu16 = bundle.lam.encode(f_t, f_t1), lam.encode(f_t, f_t1)
    assert mu16.dtype == np.float32 and np.abs(mu16 - mu32).max() < 0.05
    assert lam.decode(f_t, mu16).shape == (2, 64, 64, 3)
    out = lam(torch.rand(2, 3, 64, 64, dtype=torch.bfloat16), torch.rand(2, 3, 64, 64, dtype=torch.bfloat16))
    assert torch.isfinite(out.loss)
    z = bundle.adapter.to_latent(np.array([0, 3]))
    wm = copy.deepcopy(bundle.world_model).to(torch.bfloat16)
    assert wm.predict_next(frames, z, guidance_scale=1.5).shape == (2, 64, 64, 3)
    assert torch.isfinite(wm.training_loss(frames, f_t1, z))
    rewards, _, probs = copy.deepcopy(bundle.reward_head).to(torch.bfloat16).predict(f_t, f_t1, z)
    assert rewards.shape == probs.shape == (2,)
    codebook = ActionCodebook(3, 4, motion_dim=2).to(torch.bfloat16)
    assert codebook.to_latent(np.array([1]), np.zeros((1, 3), np.float32)).shape == (1, 4)
    mlp = ActionMLP(2, 4, motion_dim=2).to(torch.bfloat16)
    assert mlp.to_latent(np.zeros((1, 2)), np.zeros((1, 3), np.float32)).dtype == np.float32


def test_lam_empty_batch(bundle):
    empty = np.zeros((0, 64, 64, 3), np.uint8)
    mu = bundle.lam.encode(empty, empty)
    assert mu.shape == (0, 32) and mu.dtype == np.float32
    assert bundle.lam.encode(np.zeros((0, 2, 64, 64, 3), np.uint8)).shape == (0, 32)
    out = bundle.lam.decode(empty, mu)
    assert out.shape == (0, 64, 64, 3) and out.dtype == np.uint8


def test_read_only_inputs_do_not_warn():
    # torch warns once per process about read-only arrays: only a fresh process shows it.
    code = """
import warnings
import numpy as np
import torch
torch.set_num_threads(1)
from adaworld_gym.models import tiny_random_bundle
b = tiny_random_bundle("discrete", reward_head=True)
warnings.simplefilter("error")
def frozen(a):
    a = np.array(a)
    a.flags.writeable = False
    return a
frames = frozen(np.random.default_rng(0).integers(0, 256, (2, 2, 64, 64, 3), dtype=np.uint8))
z = frozen(b.adapter.to_latent(np.array([0, 1])))
b.lam.encode(frames[:, 0], frames[:, 1])
b.lam.decode(frames[:, 0], z)
b.world_model.predict_next(frames, z, steps=1)
b.reward_head.predict(frames[:, 0], frames[:, 1], z)
ActionMLP = type(b.adapter).__mro__[1].registry["ActionMLP"]
ActionMLP(2, 32).fit(frozen(np.zeros((4, 2), np.float32)), z.repeat(2, 0), steps=1)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]


def test_latent_options_copies_centres():
    centres = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    options = LatentOptions(centres)
    before = options.to_latent(np.array([0])).copy()
    centres[:] = 0.0  # the caller reuses its array
    np.testing.assert_array_equal(options.to_latent(np.array([0])), before)
    grad = torch.ones(2, 4, requires_grad=True)
    assert LatentOptions(grad).centres.dtype == torch.float32
    assert LatentOptions(torch.ones(2, 4, dtype=torch.bfloat16)).centres.dtype == torch.float32


def test_adapter_fits_reject_empty_or_zero_inputs():
    codebook = ActionCodebook(3, 4)
    with pytest.raises(ValueError, match="max_per_action"):  # used to write a NaN row
        codebook.init_from_labelled(np.zeros(3, np.int64), np.zeros((3, 4)), max_per_action=0)
    assert torch.isfinite(codebook.embedding.weight).all()
    assert codebook.init_from_labelled(np.zeros(0, np.int64), np.zeros((0, 4))) == [0, 1, 2]
    moving = ActionCodebook(3, 4, motion_dim=2)
    with pytest.raises(ValueError, match="0 transitions"):  # used to zero the motion term, returning NaN
        moving.fit_motion(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros((0, 3), np.float32))
    mlp = ActionMLP(2, 4)
    with pytest.raises(ValueError, match="0 transitions"):
        mlp.fit(np.zeros((0, 2), np.float32), np.zeros((0, 4), np.float32), steps=1)
    with pytest.raises(ValueError, match="batch_size"):
        mlp.fit(np.zeros((3, 2), np.float32), np.zeros((3, 4), np.float32), steps=1, batch_size=0)


def test_moved_sharing_bundle_and_newer_format_errors(bundle, tmp_path):
    bundle.world_model.save_pretrained(tmp_path / "shared_wm")
    bundle.save_pretrained(tmp_path / "bundles" / "a", shared={"world_model": tmp_path / "shared_wm"})
    shutil.move(tmp_path / "bundles" / "a", tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match="shares its world_model with '../../shared_wm'"):
        AdaWorldBundle.from_pretrained(tmp_path / "moved")
    shutil.move(tmp_path / "moved", tmp_path / "bundles" / "a")
    header_path = tmp_path / "bundles" / "a" / "bundle.json"
    header = json.loads(header_path.read_text())
    header_path.write_text(json.dumps({**header, "format": "adaworld-bundle/2", "version": "9.0"}))
    with pytest.raises(ValueError, match=r"format 'adaworld-bundle/2' \(written by adaworld-gym 9.0\)"):
        AdaWorldBundle.from_pretrained(tmp_path / "bundles" / "a")


def test_sharing_a_folder_inside_the_bundles_own_directory_is_refused(bundle, tmp_path):
    bundle.save_pretrained(tmp_path / "c", shared={})
    loaded = AdaWorldBundle.from_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match="lies in .*which this save replaces"):
        loaded.save_pretrained(tmp_path / "c", shared={"world_model": tmp_path / "c" / "world_model"})
    assert _same_weights(AdaWorldBundle.from_pretrained(tmp_path / "c").world_model, bundle.world_model)


def test_a_float64_latent_beyond_float32_is_named_as_input_not_blamed_on_the_weights():
    model = _tiny_world_model(0)
    history = np.zeros((1, 2, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="beyond float32's range"):
        model.predict_next(history, np.full((1, 8), 1e39), steps=1)


def test_saved_configs_with_wrong_types_bad_schedules_or_missing_fields_are_named(bundle, tmp_path):
    from adaworld_gym.models import LatentActionModel

    bundle.world_model.save_pretrained(tmp_path / "wm")
    config = json.loads((tmp_path / "wm" / "config.json").read_text())

    def load_with(name, drop=(), **fields):
        shutil.copytree(tmp_path / "wm", tmp_path / name)
        edited = {k: v for k, v in {**config, **fields}.items() if k not in drop}
        (tmp_path / name / "config.json").write_text(json.dumps(edited))
        return DiffusionWorldModel.from_pretrained(tmp_path / name)

    # "no" is a non-empty string: it used to build a model that ignores its actions.
    with pytest.raises(ValueError, match=r"config.json: action_agnostic must be true or false, got 'no'"):
        load_with("str_bool", action_agnostic="no")
    with pytest.raises(ValueError, match="sample_size must be a finite int, got 64.5"):
        load_with("float_int", sample_size=64.5)
    with pytest.raises(ValueError, match="sigma_max must be above sigma_min"):
        load_with("sigma", sigma_max=0)
    with pytest.raises(ValueError, match="rho must be > 0"):
        load_with("rho", rho=0)
    with pytest.raises(ValueError, match="norm_num_groups 7 must divide"):
        load_with("groups", norm_num_groups=7)
    with pytest.warns(UserWarning, match="lacks predict_residual=False: the defaults are used"):
        load_with("missing", drop=["predict_residual"])
    with pytest.warns(UserWarning, match="has fields DiffusionWorldModel does not take: num_histroy"):
        load_with("typo", num_histroy=4)  # a typo left the real field at its default, silently

    # A truncated weights file: the reader's own reason, not only "Unable to load weights".
    LatentActionModel(**bundle.lam.config).save_pretrained(tmp_path / "lam")
    weights = tmp_path / "lam" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(OSError, match="cannot read the weights: Safetensor"):
        LatentActionModel.from_pretrained(tmp_path / "lam")
    with pytest.raises(ValueError, match="safe_serialization=False is refused"):  # a pickle it would not read
        LatentActionModel(**bundle.lam.config).save_pretrained(tmp_path / "lam", safe_serialization=False)
    assert (tmp_path / "lam" / "config.json").is_file()  # the earlier save is untouched

    # A field out of range, or one the weights' shapes contradict: named with the config, without diffusers' advice
    # to load random weights in place of the mismatched ones.
    LatentActionModel(**bundle.lam.config).save_pretrained(tmp_path / "lam2")
    lam_config = json.loads((tmp_path / "lam2" / "config.json").read_text())
    for name, fields, message in [
        ("lam_depth", {"decoder_depth": -1}, r"lam_depth/config.json: decoder_depth must be"),
        ("lam_size", {"image_size": 32}, r"weights do not fit the LatentActionModel of .*config.json: .*expected shape"),
    ]:  # fmt: skip
        shutil.copytree(tmp_path / "lam2", tmp_path / name)
        (tmp_path / name / "config.json").write_text(json.dumps({**lam_config, **fields}))
        with pytest.raises(ValueError, match=message) as info:
            LatentActionModel.from_pretrained(tmp_path / name)
        assert "ignore_mismatched_sizes" not in str(info.value) and "Cannot load  because" not in str(
            info.value
        )


def _bf16_model(seed: int) -> DiffusionWorldModel:
    torch.manual_seed(seed)
    return DiffusionWorldModel(**world_model_preset("tiny"), num_history=2, action_dim=8).eval()


@pytest.mark.usefixtures("one_thread")
def test_a_world_model_built_under_inference_mode_samples_on_a_cpu():
    """Its tensors have no version counter: the bf16 sampling copy's cache key raised a RuntimeError."""
    hist, z = (
        random_frames((2, 2, 64, 64, 3)),
        np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32),
    )
    reference = _bf16_model(3).predict_next(hist, z, steps=2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model = _bf16_model(3)
    assert model.config.autocast_dtype == "bfloat16"
    out = model.predict_next(hist, z, steps=2, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(out, reference)
    with torch.inference_mode():  # rewriting such weights is noticed, like any rewrite
        for p in model.unet.parameters():
            p.mul_(0.5)
    assert not np.array_equal(
        model.predict_next(hist, z, steps=2, generator=torch.Generator().manual_seed(0)), out
    )


@pytest.mark.usefixtures("one_thread")
def test_a_config_field_of_the_wrong_type_names_the_config_file(tmp_path):
    """ "num_history": "four" failed with a bare TypeError from inside the constructor."""
    model = DiffusionWorldModel(**world_model_preset("tiny"))
    model.save_pretrained(tmp_path / "wm")
    config = tmp_path / "wm" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_history": "four"}))
    with pytest.raises(ValueError, match="config.json"):
        DiffusionWorldModel.from_pretrained(tmp_path / "wm")


@pytest.mark.usefixtures("one_thread")
def test_a_world_model_configured_with_numpy_numbers_saves_and_loads(tmp_path):
    """diffusers records constructor arguments as given; np.int64 ones failed in its JSON writer at save."""
    config = {**world_model_preset("tiny"), "num_history": np.int64(2), "sigma_data": np.float32(0.5)}
    config["block_out_channels"] = tuple(np.int64(c) for c in config["block_out_channels"])
    DiffusionWorldModel(**config).save_pretrained(tmp_path / "wm")
    loaded = DiffusionWorldModel.from_pretrained(tmp_path / "wm")
    assert loaded.config.num_history == 2 and type(loaded.config.num_history) is int
    assert list(loaded.config.block_out_channels) == [int(c) for c in config["block_out_channels"]]


@pytest.mark.usefixtures("one_thread")
def test_huge_latent_actions_are_blamed_on_z_not_the_weights():
    model = tiny_random_bundle("latent").world_model
    with pytest.raises(FloatingPointError, match="from z values up to 1e\\+30: .* scale z down"):
        model.predict_next(np.zeros((1, 1, 64, 64, 3), np.uint8), np.full((1, 32), 1e30, np.float32))
