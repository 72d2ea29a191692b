"""What the training loops share: when they save (CheckpointClock), how a run resumes from its checkpoints, the
wall-clock budget all processes agree on, and the run settings checked before training."""

import pytest
import torch

from adaworld_gym.training.common import CheckpointClock, budget_spent, with_overrides


class _Bar:
    closed = False

    def close(self):
        self.closed = True


def test_saves_every_n_steps_and_unsaved_steps_at_the_end():
    saved, bar = [], _Bar()
    clock = CheckpointClock(lambda: saved.append(clock.step), step=0, every=3, minutes=60)
    with clock.guard(bar):
        for step in range(1, 8):
            clock.tick(step)
    assert saved == [3, 6, 7] and bar.closed


def test_nothing_saved_twice_when_the_last_step_was_saved():
    saved = []
    clock = CheckpointClock(lambda: saved.append(clock.step), step=5, every=2, minutes=60)
    with clock.guard(_Bar()):
        clock.tick(6)
    assert saved == [6]


def test_interrupt_saves_the_work_done_and_is_re_raised():
    saved, bar = [], _Bar()
    clock = CheckpointClock(lambda: saved.append(clock.step), step=10, every=100, minutes=60)
    with pytest.raises(KeyboardInterrupt), clock.guard(bar):
        clock.tick(11)
        clock.tick(12)
        raise KeyboardInterrupt
    assert saved == [12] and bar.closed


def test_a_signal_during_a_step_is_held_until_the_step_is_complete():
    import signal

    saved, bar = [], _Bar()
    clock = CheckpointClock(lambda: saved.append(clock.step), step=0, every=100, minutes=60)
    before = signal.getsignal(signal.SIGTERM)
    finished = []
    with pytest.raises(KeyboardInterrupt, match="held until step 3"), clock.guard(bar):
        for step in range(1, 10):
            if step == 3:
                signal.raise_signal(signal.SIGTERM)  # mid-step: the rest of the step still runs
            finished.append(step)
            clock.tick(step)
    assert finished == [1, 2, 3] and saved == [3] and bar.closed
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


def test_a_second_signal_interrupts_at_once():
    import signal

    saved = []
    clock = CheckpointClock(lambda: saved.append(clock.step), step=0, every=100, minutes=60)
    with pytest.raises(KeyboardInterrupt), clock.guard(_Bar()):
        clock.tick(1)
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        pytest.fail("the second signal should have interrupted")
    assert saved == [1]  # the last complete step


@pytest.mark.parametrize("interrupted", [False, True])
def test_signals_during_the_final_save_wait_for_it(interrupted):
    import signal

    written = []

    def save():  # two signals arrive while the checkpoint is being written
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        written.append(clock.step)

    clock = CheckpointClock(save, step=0, every=100, minutes=60)
    before = signal.getsignal(signal.SIGTERM)
    with (
        pytest.raises(KeyboardInterrupt, match=None if interrupted else "held until the final save"),
        clock.guard(_Bar()),
    ):
        clock.tick(1)
        clock.tick(2)
        if interrupted:
            raise KeyboardInterrupt
    assert written == [2]  # the save ran to its end; then the run stopped, as asked
    assert signal.getsignal(signal.SIGTERM) == before


def _tiny_run(lr: float = 1e-3, decay: float = 0.99):
    import torch
    from diffusers.training_utils import EMAModel

    from adaworld_gym.training.common import make_lr_scheduler

    class Cfg:
        lr_schedule, warmup_steps, max_steps = "cosine", 1, 10

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    return model, optimizer, make_lr_scheduler(optimizer, Cfg), EMAModel(model.parameters(), decay=decay)


def _save(root, step, run):
    import torch

    from adaworld_gym.training.checkpoint import save_checkpoint
    from adaworld_gym.training.common import training_state

    model, optimizer, scheduler, ema = run
    with torch.no_grad():
        model.weight.fill_(float(step))
    state = training_state(model, optimizer, scheduler, ema, torch.Generator(), {"n": 2}, step=step)
    return save_checkpoint(root, step, state)


def test_resume_falls_back_to_the_previous_checkpoint_when_the_newest_is_corrupt(tmp_path):
    from adaworld_gym.training.common import resume_state

    run = _tiny_run()
    _save(tmp_path, 1, run)
    newest = _save(tmp_path, 2, run)
    for f in newest.iterdir():
        if f.suffix == ".safetensors":
            f.write_bytes(f.read_bytes()[:-10])  # truncated, as by a kill during a copy
    fresh = _tiny_run()
    with pytest.warns(UserWarning, match="checkpoint before it"):
        state = resume_state(tmp_path, {"n": 2}, fresh[0], fresh[1], fresh[2], fresh[3])
    assert state["step"] == 1 and float(fresh[0].weight[0, 0].detach()) == 1.0


@pytest.mark.parametrize("other_process_first", [False, True])
def test_a_corrupt_checkpoint_is_set_aside_once_when_several_processes_find_it(
    tmp_path, monkeypatch, other_process_first
):
    """Every process of a run finds the same corrupt newest checkpoint; whichever moves it first, none fails.
    A stale set-aside copy from an earlier resume is replaced."""
    from adaworld_gym.training import checkpoint
    from adaworld_gym.training.common import resume_state

    run = _tiny_run()
    _save(tmp_path, 1, run)
    newest = _save(tmp_path, 2, run)
    for f in newest.iterdir():
        if f.suffix == ".safetensors":
            f.write_bytes(f.read_bytes()[:-10])
    aside = newest.with_name(f".corrupt-{newest.name}")
    aside.mkdir()
    (aside / "stale").write_text("from an earlier resume")
    real_load = checkpoint.load_checkpoint

    def load_as_another_process_moves_it(path):
        try:
            return real_load(path)
        except checkpoint.CheckpointError:
            if other_process_first:  # the other process set it aside between our read and our rename
                import shutil

                shutil.rmtree(aside)
                path.rename(aside)
            raise

    monkeypatch.setattr(checkpoint, "load_checkpoint", load_as_another_process_moves_it)
    fresh = _tiny_run()
    with pytest.warns(UserWarning, match="checkpoint before it"):
        state = resume_state(tmp_path, {"n": 2}, fresh[0], fresh[1], fresh[2], fresh[3])
    assert state["step"] == 1 and not newest.exists()
    assert not (aside / "stale").exists() and any(f.suffix == ".safetensors" for f in aside.iterdir())


def test_a_checkpoint_moved_away_while_it_is_read_is_a_checkpoint_error(tmp_path, monkeypatch):
    from adaworld_gym.training import checkpoint

    path = _save(tmp_path, 1, _tiny_run())

    def vanished(f):
        raise FileNotFoundError(2, "No such file or directory", str(f))

    monkeypatch.setattr(checkpoint, "sha256_file", vanished)
    with pytest.raises(checkpoint.CheckpointError, match="missing"):
        checkpoint.load_checkpoint(path)


def test_resume_refuses_another_learning_rate_or_ema_decay(tmp_path):
    from adaworld_gym.training.common import resume_state

    _save(tmp_path, 1, _tiny_run(lr=1e-3, decay=0.99))
    model, optimizer, scheduler, ema = _tiny_run(lr=5e-4)
    with pytest.raises(ValueError, match="learning rate"):
        resume_state(tmp_path, {"n": 2}, model, optimizer, scheduler, ema)
    model, optimizer, scheduler, ema = _tiny_run(decay=0.9)
    with pytest.raises(ValueError, match="EMA decay"):
        resume_state(tmp_path, {"n": 2}, model, optimizer, scheduler, ema)
    model, optimizer, scheduler, ema = _tiny_run()
    assert resume_state(tmp_path, {"n": 2}, model, optimizer, scheduler, ema)["step"] == 1


@pytest.mark.usefixtures("one_thread")
def test_a_resumed_run_of_another_config_names_the_settings_that_differ(tmp_path):
    from adaworld_gym.training.checkpoint import save_checkpoint
    from adaworld_gym.training.common import resume_state, training_state

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    class NoEma:
        decay = 0.9

        def state_dict(self):
            return {"decay": 0.9}

    config = {"motion_dim": 0, "widths": [1, 2], "name": "x"}
    state = training_state(model, optimizer, scheduler, NoEma(), torch.Generator(), config, step=1)
    save_checkpoint(tmp_path, 1, state)
    with pytest.raises(ValueError, match=r"\(motion_dim: 0 then, 8 now\); use a new out_dir") as err:
        resume_state(tmp_path, {**config, "motion_dim": 8}, model, optimizer, scheduler)
    assert "widths" not in str(err.value)


@pytest.mark.usefixtures("one_thread")
def test_a_negative_warm_up_is_refused_by_the_api_too():
    """The CLI refused --warmup-steps -5, but train_world_model(warmup_steps=-5) still trained."""
    from dataclasses import replace

    from adaworld_gym.training.common import validate_run
    from adaworld_gym.training.world_model import WorldModelTrainConfig

    cfg = WorldModelTrainConfig.from_preset("tiny")
    validate_run(replace(cfg, warmup_steps=0))
    for bad in (-5, 2.5):
        with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
            validate_run(replace(cfg, warmup_steps=bad))


@pytest.mark.usefixtures("one_thread")
def test_the_wall_clock_budget_is_spent_everywhere_once_any_process_spent_it():
    """Regression: each process read its own clock, so one could stop a step before the others and leave them
    waiting in a collective for ever."""
    votes = []

    def agree(flags):
        votes.append(list(flags))
        return [True]  # another process's clock says the budget is spent

    assert budget_spent(None, 1.0, 5, 10.0, agree)
    assert not budget_spent(None, 1.0, 5, 10.0, lambda flags: [False])
    assert (
        budget_spent(None, 1.0, 5, 61.0, lambda flags: [False]) is False
    )  # the vote decides, on every process
    assert votes == [[False]]
    assert budget_spent(3, None, 3, 0.0, agree) and votes == [[False]]  # a step budget needs no vote


def test_timed_saves_and_held_signals_are_decided_by_all_processes():
    # Another process's clock ran out at step 2, another got a signal at step 4: this one saves, then stops too
    # (a save is a collective), each decided in one agreement per step.
    saved, asked = [], []

    def agree(flags):
        asked.append(list(flags))
        return [flags[0] or clock.step == 4, flags[1] or clock.step == 2]

    clock = CheckpointClock(lambda: saved.append(clock.step), step=0, every=100, minutes=60, agree=agree)
    with pytest.raises(KeyboardInterrupt, match="another process"), clock.guard(_Bar()):
        for step in range(1, 6):
            clock.tick(step)
    assert saved == [2, 4] and asked == [[False, False]] * 4


def test_provenance_compares_frozen_models_by_name_and_leaves_older_digests_alone():
    from adaworld_gym.training.common import _changed_inputs

    now = {"data": ["/d"], "models": {"lam": "new", "pretrained": "p"}}
    assert _changed_inputs(now, now) == {}
    assert _changed_inputs({"data": ["/d"], "models": {"lam": "other", "pretrained": "p"}}, now) == {
        "lam": "other"
    }
    assert _changed_inputs({"data": ["/e"], "models": {"lam": "new"}}, now) == {"data": ["/e"]}
    # A checkpoint from before the one fingerprint kept another digest of the same LAM at the top level:
    # its data is still compared, its models are not.
    assert _changed_inputs({"data": ["/d"], "lam": "older digest"}, now) == {}
    assert _changed_inputs({"data": ["/e"], "lam": "older digest"}, now) == {"data": ["/e"]}


def test_a_wall_clock_budget_alone_trains_without_a_step_limit_at_a_constant_rate():
    from adaworld_gym.training.lam import LamTrainConfig
    from adaworld_gym.training.reward import RewardTrainConfig
    from adaworld_gym.training.world_model import WorldModelTrainConfig

    for cls in (LamTrainConfig, WorldModelTrainConfig):
        preset = cls.from_preset("tiny")
        clock = cls.from_preset("tiny", max_steps=None, max_minutes=5.0, lr=None)
        assert (clock.max_steps, clock.max_minutes, clock.lr_schedule) == (None, 5.0, "constant")
        assert clock.lr == preset.lr  # None: the preset's
        both = cls.from_preset("tiny", max_steps=7, max_minutes=5.0)
        assert (both.max_steps, both.max_minutes, both.lr_schedule) == (7, 5.0, preset.lr_schedule)
    chosen = WorldModelTrainConfig.from_preset("tiny", max_minutes=5.0, lr_schedule="cosine")
    assert chosen.lr_schedule == "cosine"  # a schedule given wins (validate_run then asks for max_steps)
    reward = with_overrides(RewardTrainConfig(), max_minutes=2.0, batch_size=None)
    assert (reward.max_steps, reward.lr_schedule, reward.batch_size) == (
        None,
        "constant",
        RewardTrainConfig().batch_size,
    )


def test_a_run_counter_continues_a_checkpoints_counts_and_clock():
    from types import SimpleNamespace

    from adaworld_gym.training.common import RunCounter

    run = RunCounter({"step": 3, "samples": 96, "train_seconds": 60.0, "other": 1})
    run.start()
    run.count(32)
    assert (run.step, run.samples) == (4, 128) and 60.0 <= run.train_seconds < 70.0
    assert set(run.state()) == {"step", "samples", "train_seconds"}
    assert run.summary()["steps"] == 4 and run.summary()["train_minutes"] == run.train_seconds / 60
    assert run.spent(SimpleNamespace(max_steps=4, max_minutes=None))
    assert not run.spent(SimpleNamespace(max_steps=None, max_minutes=2.0))
    assert run.spent(SimpleNamespace(max_steps=None, max_minutes=1.0))  # the minute came with the checkpoint
    fresh = RunCounter()
    assert (fresh.step, fresh.samples, fresh.train_seconds) == (0, 0, 0.0)
