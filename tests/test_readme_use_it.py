"""The README's "Use it" Python block runs as written, on the shipped weights, and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def use_it_block() -> str:
    section = README.read_text(encoding="utf-8").split("\n## Use it\n", 1)
    assert len(section) == 2, "README has no '## Use it' section"
    block = re.search(r"```python\n(.*?)```", section[1].split("\n## ", 1)[0], re.S)
    assert block, "the README's 'Use it' section has no python block"
    return block.group(1)


def test_the_readme_use_it_block_runs(tmp_path, monkeypatch):
    from adaworld_gym.data.collect import read_video

    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme_use_it"}
    exec(compile(use_it_block(), "README.md (Use it)", "exec"), scope)
    frames, _ = read_video(tmp_path / "imagined.gif")
    assert len(frames) == 21 and frames[0].shape == (64 * 4, 64 * 4, 3)
    assert scope["obs"].shape == (16, 64, 64, 3) and scope["obs"].dtype == np.uint8
    assert scope["reward"].shape == (16,)
    scope["env"].close()
    scope["venv"].close()
