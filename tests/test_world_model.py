"""Tests for the latent-action diffusion world model (tiny 64x64 config, CPU)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset

K, D, SIZE = 4, 32, 64
OFFSETS = [(0, 6), (0, -6), (6, 0), (-6, 0)]  # square displacement per action


def make_model(**overrides) -> DiffusionWorldModel:
    torch.manual_seed(0)
    kwargs = {**world_model_preset("tiny"), "autocast_dtype": None, **overrides}
    return DiffusionWorldModel(**kwargs).eval()


def randomise_condition(model: DiffusionWorldModel) -> None:
    """Give the zero-initialised condition weights non-zero values, as training would."""
    torch.manual_seed(1)
    with torch.no_grad():
        model.cond_mlp[-1].weight.normal_(0.0, 0.5)
        model.null_action.normal_(0.0, 1.0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def frames(batch: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, h, SIZE, SIZE, 3), dtype=np.uint8)


def actions(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, D)).astype(np.float32)


def moving_square_batch(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A white square that stands still in the history, then moves by the offset of a one-hot action z."""
    hist = np.zeros((n, K, SIZE, SIZE, 3), np.uint8)
    nxt = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    z = np.zeros((n, D), np.float32)
    for i in range(n):
        y, x = rng.integers(12, 44, 2)
        a = rng.integers(len(OFFSETS))
        dy, dx = OFFSETS[a]
        hist[i, :, y : y + 8, x : x + 8] = 255
        nxt[i, y + dy : y + dy + 8, x + dx : x + dx + 8] = 255
        z[i, a] = 1.0
    return torch.from_numpy(hist), torch.from_numpy(nxt), torch.from_numpy(z)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> DiffusionWorldModel:
    return make_model()


def test_shapes_and_dtypes(model: DiffusionWorldModel) -> None:
    out = model.predict_next(frames(2, 3), actions(2), steps=1, generator=gen(0))
    assert isinstance(out, np.ndarray) and out.shape == (2, SIZE, SIZE, 3) and out.dtype == np.uint8

    out_t = model.predict_next(torch.from_numpy(frames(2, K)), torch.from_numpy(actions(2)), steps=2)
    assert (
        isinstance(out_t, torch.Tensor) and out_t.shape == (2, SIZE, SIZE, 3) and out_t.dtype == torch.uint8
    )

    z_seq = np.random.default_rng(0).standard_normal((2, 5, D)).astype(np.float32)
    roll = model.rollout(frames(2, 1), z_seq, steps=1, generator=gen(0))
    assert isinstance(roll, np.ndarray) and roll.shape == (2, 5, SIZE, SIZE, 3) and roll.dtype == np.uint8


@pytest.mark.parametrize("autocast_dtype", [None, "bfloat16"])
def test_same_seed_same_frames(autocast_dtype: str | None) -> None:
    model = make_model(autocast_dtype=autocast_dtype)
    randomise_condition(model)
    hist, z = frames(3, 2), actions(3)

    def run(seed: int) -> np.ndarray:
        return model.predict_next(hist, z, steps=3, generator=gen(seed))

    assert np.array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))
    z_seq = np.stack([actions(3, 1), actions(3, 2)], axis=1)
    a = model.rollout(hist, z_seq, steps=2, generator=gen(3))
    b = model.rollout(hist, z_seq, steps=2, generator=gen(3))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("autocast_dtype", [None, "bfloat16"])
def test_seeded_sampling_leaves_the_global_rng_alone(autocast_dtype: str | None) -> None:
    """Callers seed their own torch RNG (a PPO agent, say): sampling, first call included, must not move it."""
    model = make_model(autocast_dtype=autocast_dtype)
    state = torch.get_rng_state()
    model.predict_next(frames(2, 3), actions(2), steps=2, generator=[gen(0), gen(1)])
    model.rollout(frames(2, 1), np.stack([actions(2)] * 2, axis=1), steps=1, generator=gen(2))
    assert torch.equal(state, torch.get_rng_state())


def test_cpu_bf16_copy_matches_autocast_and_follows_weight_updates(monkeypatch) -> None:
    from adaworld_gym.models import world_model

    model = make_model(autocast_dtype="bfloat16")
    randomise_condition(model)
    hist, z = frames(2, 3), actions(2)

    def sample(copy: bool) -> np.ndarray:
        monkeypatch.setattr(world_model, "CPU_BF16_COPY", copy)
        return model.predict_next(hist, z, steps=2, generator=gen(0)).astype(int)

    before = sample(True)
    assert np.abs(before - sample(False)).mean() < 1.0  # bf16 rounding only, in uint8 levels
    with torch.no_grad():  # an in-place update, as an optimizer makes: the cached copy must be re-cast
        model.unet.conv_out.bias.add_(0.5)
    after = sample(True)
    assert np.abs(after - sample(False)).mean() < 1.0
    assert np.abs(after - before).mean() > 5.0
    for param in model.unet.parameters():  # as diffusers' EMAModel.copy_to writes: no version bump
        param.data.copy_(param.data * 0.9)
    assert np.abs(sample(True) - sample(False)).mean() < 1.0
    assert all("bf16" not in name for name in model.state_dict())  # the copy is never saved
    with torch.no_grad():  # one weight written through .data, which the sampled check may miss
        model.unet.conv_out.bias.data += 0.5
    model.invalidate_sampling_cache()
    assert np.abs(sample(True) - sample(False)).mean() < 1.0
    other = make_model(autocast_dtype="bfloat16")
    randomise_condition(other)
    model.load_state_dict(
        other.state_dict(), assign=True
    )  # new tensors, nothing bumped: the hook drops the copy
    assert np.abs(sample(True) - sample(False)).mean() < 1.0
    model.unet.load_state_dict(other.unet.state_dict(), assign=True)  # on the UNet itself too
    assert np.abs(sample(True) - sample(False)).mean() < 1.0


def test_a_model_that_has_sampled_pickles_and_copies() -> None:
    """Envs are pickled and copied (WorldModelEnv.__getstate__): the CPU sampling cache must not stop that."""
    import copy
    import pickle

    model = make_model(autocast_dtype="bfloat16")
    randomise_condition(model)
    hist, z = frames(2, 3), actions(2)
    before = model.predict_next(hist, z, steps=2, generator=gen(0))  # builds the bf16 copy
    clone = pickle.loads(pickle.dumps(model))
    assert "_bf16_unet" not in clone.__dict__  # the cache is not pickled: it is rebuilt on demand
    assert np.array_equal(clone.predict_next(hist, z, steps=2, generator=gen(0)), before)
    # The clone's copy follows its own weights, replaced without a version bump (assign=True)...
    other = make_model(autocast_dtype="bfloat16")
    clone.load_state_dict(other.state_dict(), assign=True)
    want = other.predict_next(hist, z, steps=2, generator=gen(0))
    assert np.array_equal(clone.predict_next(hist, z, steps=2, generator=gen(0)), want)
    # ...and the original's copy is untouched by it.
    assert np.array_equal(model.predict_next(hist, z, steps=2, generator=gen(0)), before)
    twin = copy.deepcopy(model)
    twin.load_state_dict(other.state_dict(), assign=True)
    assert np.array_equal(twin.predict_next(hist, z, steps=2, generator=gen(0)), want)
    assert np.array_equal(model.predict_next(hist, z, steps=2, generator=gen(0)), before)


def test_bad_generators_and_guidance_are_named(model: DiffusionWorldModel) -> None:
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        model.predict_next(frames(1, 2), actions(1), steps=1, generator=0)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        model.predict_next(frames(1, 2), actions(1), steps=1, generator=gen(0), guidance_scale=None)


def test_rollout_equals_chained_predictions(model: DiffusionWorldModel) -> None:
    hist, z1, z2 = frames(2, 3), actions(2, 1), actions(2, 2)
    roll = model.rollout(hist, np.stack([z1, z2], axis=1), steps=2, generator=gen(0))

    g = gen(0)
    first = model.predict_next(hist, z1, steps=2, generator=g)
    window = np.concatenate([hist, first[:, None]], axis=1)  # 4 frames = k: nothing dropped yet
    second = model.predict_next(window, z2, steps=2, generator=g)
    assert np.array_equal(roll[:, 0], first) and np.array_equal(roll[:, 1], second)


def test_save_and_reload_same_output(tmp_path) -> None:
    model = make_model()
    randomise_condition(model)
    model.save_pretrained(tmp_path)
    loaded = DiffusionWorldModel.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.block_out_channels) == tuple(model.config.block_out_channels)
    assert loaded.config.autocast_dtype is None

    torch.manual_seed(0)
    noisy, hist = torch.randn(2, 3, SIZE, SIZE), torch.rand(2, 3 * K, SIZE, SIZE) * 2 - 1
    sigma, z = torch.tensor([0.3, 2.0]), torch.from_numpy(actions(2))
    length, aug = torch.tensor([1, K]), torch.tensor([0.0, 0.5])
    with torch.no_grad():
        ref = model(noisy, sigma, hist, model.condition_embedding(z, length, aug))
        out = loaded(noisy, sigma, hist, loaded.condition_embedding(z, length, aug))
    torch.testing.assert_close(out, ref, atol=5e-5, rtol=0)

    ref_frames = model.predict_next(frames(2, 2), actions(2), generator=gen(0))
    assert np.array_equal(loaded.predict_next(frames(2, 2), actions(2), generator=gen(0)), ref_frames)


def test_saved_weights_get_the_usual_file_permissions(tmp_path) -> None:
    # safetensors writes through mkstemp (mode 0600); a saved model must be readable as any other file is.
    umask = os.umask(0o022)
    os.umask(umask)
    make_model().save_pretrained(tmp_path / "model")
    for path in (tmp_path / "model").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_fresh_model_ignores_condition(model: DiffusionWorldModel) -> None:
    hist = frames(2, 2)
    outs = [model.predict_next(hist, z, generator=gen(0)) for z in (actions(2, 1), actions(2, 2))]
    assert np.array_equal(outs[0], outs[1])
    # Guidance is a no-op too: the conditional and unconditional branches coincide.
    guided = model.predict_next(hist, actions(2, 1), generator=gen(0), guidance_scale=2.0)
    assert np.abs(guided.astype(int) - outs[0].astype(int)).max() <= 1


def test_training_learns_the_action() -> None:
    model = make_model().train()
    rng = np.random.default_rng(0)
    eval_batch = moving_square_batch(16, rng)

    def eval_loss() -> float:
        with torch.no_grad():
            return model.training_loss(*eval_batch, generator=gen(1)).item()

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = gen(0)
    for _ in range(30):
        loss = model.training_loss(*moving_square_batch(4, rng), generator=g)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)

    model.eval()
    hist = eval_batch[0][:1].expand(len(OFFSETS), -1, -1, -1, -1)
    preds = model.predict_next(hist, torch.eye(len(OFFSETS), D), steps=2, generator=gen(0))
    diffs = [(preds[0].int() - preds[i].int()).abs().float().mean().item() for i in range(1, len(OFFSETS))]
    assert min(diffs) > 1.0, diffs  # mean absolute difference in uint8 levels


def test_action_agnostic_ignores_z() -> None:
    agnostic, conditioned = make_model(action_agnostic=True), make_model()
    for m in (agnostic, conditioned):
        randomise_condition(m)
    hist = frames(2, 3)

    def pair(m: DiffusionWorldModel) -> list[np.ndarray]:
        return [m.predict_next(hist, z, generator=gen(0)) for z in (actions(2, 1), actions(2, 2))]

    a1, a2 = pair(agnostic)
    c1, c2 = pair(conditioned)
    assert np.array_equal(a1, a2)
    assert not np.array_equal(c1, c2)
    assert sum(p.numel() for p in agnostic.parameters()) == sum(p.numel() for p in conditioned.parameters())


def test_training_loss_is_seeded_and_accepts_float_frames(model: DiffusionWorldModel) -> None:
    hist, nxt, z = moving_square_batch(4, np.random.default_rng(0))
    with torch.no_grad():
        a = model.training_loss(hist, nxt, z, generator=gen(0))
        b = model.training_loss(hist, nxt, z, generator=gen(0))
        c = model.training_loss(hist.float() / 127.5 - 1, nxt.float() / 127.5 - 1, z, generator=gen(0))
        d = model.training_loss(hist[:, 2:], nxt, z, history_len=[1, 2, 2, 1])
    assert a.item() == b.item()
    torch.testing.assert_close(a, c)
    assert torch.isfinite(d)


def test_presets() -> None:
    tiny = DiffusionWorldModel(**world_model_preset("tiny"))
    small = DiffusionWorldModel(**world_model_preset("small"))
    assert sum(p.numel() for p in tiny.parameters()) < 100_000
    assert 2_000_000 < sum(p.numel() for p in small.parameters()) < 3_500_000
    with pytest.raises(ValueError, match="unknown world model preset"):
        world_model_preset("huge")


GOOD_H, GOOD_Z = frames(2, 2), actions(2)
BAD_PREDICT_INPUTS = {
    "history_ndim": (dict(history=GOOD_H[:, 0]), r"history must have shape \[B, h, H, W, 3\]"),
    "history_too_long": (dict(history=frames(2, K + 1)), "5 frames"),
    "history_resolution": (dict(history=GOOD_H[:, :, :32, :32]), "resolution"),
    "history_channels": (dict(history=GOOD_H[..., :1]), r"history must have shape \[B, h, H, W, 3\]"),
    "history_float": (dict(history=GOOD_H.astype(np.float32)), "history must have dtype uint8"),
    "history_type": (dict(history="frames"), "numpy array or torch tensor"),
    "z_nan": (dict(z=np.where(np.arange(D) == 3, np.nan, GOOD_Z).astype(np.float32)), "NaN"),
    "z_inf": (dict(z=np.full((2, D), np.inf, np.float32)), "NaN or inf"),
    "z_dim": (dict(z=actions(2)[:, :16]), "action_dim is 32"),
    "z_batch": (dict(z=actions(3)), r"z must have shape \[B=2, 32\]"),
    "z_int": (dict(z=np.zeros((2, D), np.int64)), "float"),
    "steps": (dict(steps=0), "steps"),
    "history_len": (dict(history_len=[1, 3]), "history_len"),
}


@pytest.mark.parametrize("case", list(BAD_PREDICT_INPUTS))
def test_bad_inputs_raise(model: DiffusionWorldModel, case: str) -> None:
    overrides, message = BAD_PREDICT_INPUTS[case]
    kwargs = {"history": GOOD_H, "z": GOOD_Z, **overrides}
    with pytest.raises(ValueError, match=message):
        model.predict_next(**kwargs)


def test_bad_rollout_and_training_inputs(model: DiffusionWorldModel) -> None:
    with pytest.raises(ValueError, match="z_seq"):
        model.rollout(GOOD_H, GOOD_Z)  # [B, d] instead of [B, T, d]
    with pytest.raises(ValueError, match=r"z_seq\[:, 1\] contains NaN"):
        model.rollout(GOOD_H, np.stack([GOOD_Z, np.full_like(GOOD_Z, np.nan)], axis=1))
    hist, nxt, z = moving_square_batch(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model.training_loss(hist.float(), nxt, z)  # float frames left in [0, 255]
    with pytest.raises(ValueError, match="batch"):
        model.training_loss(hist, nxt[:1], z)
    with pytest.raises(ValueError, match="history_len"):
        model.training_loss(hist, nxt, z, history_len=[0, 1])


def test_residual_model_adds_the_last_frame_to_the_same_sample() -> None:
    """Same weights and noise: the residual model's frame = the plain model's + the last history frame."""
    plain, residual = make_model(), make_model(predict_residual=True)
    residual.load_state_dict(plain.state_dict())
    history = frames(2, 3, seed=4) // 4 + 96  # mid-grey frames, so neither sum is clipped at 0 or 255
    z = actions(2)
    a = plain.predict_next(history, z, steps=2, generator=gen(0)).astype(np.float32)
    b = residual.predict_next(history, z, steps=2, generator=gen(0)).astype(np.float32)
    unclipped = (a > 0) & (a < 255) & (b > 0) & (b < 255)
    last = history[:, -1].astype(np.float32)
    assert unclipped.mean() > 0.2
    # uint8 [0,255] <-> [-1,1]: b = ((a/127.5 - 1) + (last/127.5 - 1) + 1) * 127.5 = a + last - 127.5
    assert np.abs(b - (a + last - 127.5))[unclipped].max() <= 1.5


def test_generators_and_steps_are_checked(model: DiffusionWorldModel) -> None:
    h, z = frames(2, 2), actions(2)
    one = model.predict_next(h, z, steps=np.int64(1), generator=gen(0))  # numpy integers are integers
    np.testing.assert_array_equal(one, model.predict_next(h, z, steps=1, generator=gen(0)))
    np.testing.assert_array_equal(  # any sequence of per-sample generators
        model.predict_next(h, z, steps=1, generator=(gen(0), gen(1))),
        model.predict_next(h, z, steps=1, generator=[gen(0), gen(1)]),
    )
    with pytest.raises(ValueError, match="torch.Generator per sample"):
        model.predict_next(h, z, steps=1, generator=[None, None])  # would draw from the global RNG
    with pytest.raises(ValueError, match="one torch.Generator"):
        model.training_loss(*moving_square_batch(2, np.random.default_rng(0)), generator=[gen(0), gen(1)])


def test_a_config_the_unet_cannot_halve_is_refused() -> None:
    with pytest.raises(ValueError, match="sample_size 63 must be a positive multiple"):
        DiffusionWorldModel(**{**world_model_preset("tiny"), "sample_size": 63})


def test_incomplete_or_foreign_weights_are_refused(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    make_model().save_pretrained(tmp_path / "m")
    weights = next((tmp_path / "m").glob("*.safetensors"))
    tensors = load_file(weights)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=f"do not fit.*{dropped}"):
        DiffusionWorldModel.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="model directory not found"):  # never a hub download
        DiffusionWorldModel.from_pretrained(tmp_path / "elsewhere")


def test_non_finite_predictions_raise_instead_of_turning_black() -> None:
    broken = make_model()
    with torch.no_grad():
        for parameter in broken.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        broken.predict_next(frames(1, K), actions(1), steps=1, generator=gen(0))
    with pytest.raises(FloatingPointError, match="non-finite"):
        broken.rollout(frames(1, 1), actions(1)[:, None], steps=1, generator=gen(0))


@pytest.mark.parametrize("shift", ["scale_shift", "default"])
def test_in_place_resnet_blocks_give_the_frames_of_diffusers_blocks(monkeypatch, shift: str) -> None:
    """The CPU sampling copy's in-place blocks compute the same values (bit for bit); blocks they cannot reproduce (another time-embedding norm) stay diffusers' own."""
    from diffusers.models.resnet import ResnetBlock2D

    from adaworld_gym.models import world_model

    model = make_model(autocast_dtype="bfloat16", resnet_time_scale_shift=shift)
    randomise_condition(model)
    with torch.no_grad():  # untrained scale-shift weights are zero: give them values, as training would
        for module in model.unet.modules():
            if isinstance(module, ResnetBlock2D):
                module.time_emb_proj.weight.normal_(0.0, 0.2)
    hist, z = frames(3, 3), actions(3)

    g = torch.Generator().manual_seed(3)
    x = (
        torch.randn(3, 3 * (K + 1), SIZE, SIZE, generator=g)
        .bfloat16()
        .contiguous(memory_format=torch.channels_last)
    )
    t, cond = (
        torch.rand(3, generator=g),
        torch.randn(3, model.unet.config.block_out_channels[0] * 4, generator=g),
    )

    def sample(in_place: bool) -> tuple[np.ndarray, torch.Tensor, set[str]]:
        monkeypatch.setattr(world_model, "CPU_INPLACE_RESNETS", in_place)
        model.invalidate_sampling_cache()
        out = model.predict_next(hist, z, steps=2, generator=[gen(0), gen(1), gen(2)])
        unet = model._cpu_bf16_unet()
        with torch.no_grad():
            raw = unet(x, t, class_labels=cond.bfloat16()).sample  # the network's own output, before rounding
        kinds = {type(m).__name__ for m in unet.modules() if isinstance(m, ResnetBlock2D)}
        return out, raw, kinds

    fused, fused_raw, fused_kinds = sample(True)
    plain, plain_raw, plain_kinds = sample(False)
    assert np.array_equal(fused, plain) and torch.equal(fused_raw, plain_raw)
    assert plain_kinds == {"ResnetBlock2D"}
    expected = {"_InferenceResnetBlock2D"} if shift == "scale_shift" else {"ResnetBlock2D"}
    assert fused_kinds == expected


def test_bf16_counts_as_fast_only_with_the_cpu_instructions_for_it(monkeypatch):
    """oneDNN's check said yes on any AVX-512 CPU, where bf16 is emulated (slower than fp32)."""
    from adaworld_gym import precision

    try:
        for avx512_bf16, amx, expected in [(False, False, False), (True, False, True), (False, True, True)]:
            monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
            monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
            precision.bf16_is_fast.cache_clear()
            assert precision.bf16_is_fast("cpu") is expected
    finally:
        monkeypatch.undo()
        precision.bf16_is_fast.cache_clear()


def test_bf16_takes_effect_only_where_the_hardware_computes_it(monkeypatch):
    import adaworld_gym.models.world_model as world_model_module
    from adaworld_gym.precision import bf16_is_fast

    model = DiffusionWorldModel(**world_model_preset("tiny"), autocast_dtype="bfloat16").eval()
    history = np.random.default_rng(0).integers(0, 256, (1, 1, 64, 64, 3), np.uint8)
    z = np.zeros((1, model.config.action_dim), np.float32)
    frames = {}
    for native in (True, False):
        monkeypatch.setattr(world_model_module, "bf16_is_fast", lambda _, native=native: native)
        assert model._autocast_name() == ("bfloat16" if native else None)
        frames[native] = model.predict_next(history, z, generator=torch.Generator().manual_seed(0))
    # The same model in fp32 on a CPU without native bf16: the fp32 model's frames exactly.
    fp32 = DiffusionWorldModel(**world_model_preset("tiny"), autocast_dtype=None).eval()
    fp32.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(
        frames[False], fp32.predict_next(history, z, generator=torch.Generator().manual_seed(0))
    )
    assert model.config.autocast_dtype == "bfloat16"  # the setting is kept, for machines that have it
    assert isinstance(bf16_is_fast("cpu"), bool)
