"""CheckpointClock: when the training loops save."""

import pytest

from adaworld_gym.training.common import CheckpointClock


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
