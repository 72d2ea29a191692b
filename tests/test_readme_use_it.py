"""The README's Python blocks run as written, on the shipped weights, and do what their comments say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def python_block_after(marker: str) -> str:
    """The first python block after ``marker`` in the README, before the next section."""
    text = README.read_text(encoding="utf-8")
    assert marker in text, f"README has no {marker!r}"
    block = re.search(r"```python\n(.*?)```", text.split(marker, 1)[1].split("\n## ", 1)[0], re.S)
    assert block, f"no python block after {marker!r} in the README"
    return block.group(1)


def test_the_readme_use_it_block_runs(tmp_path, monkeypatch):
    from adaworld_gym.data.collect import read_video

    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme_use_it"}
    try:
        exec(compile(python_block_after("\n## Use it\n"), "README.md (Use it)", "exec"), scope)
        frames, _ = read_video(tmp_path / "imagined.gif")
        assert len(frames) == 21 and frames[0].shape == (64 * 4, 64 * 4, 3)
        assert scope["obs"].shape == (16, 64, 64, 3) and scope["obs"].dtype == np.uint8
        assert scope["reward"].shape == (16,)
        assert scope["agent"].num_timesteps == 256
    finally:
        for name in ("env", "venv"):
            if name in scope:
                scope[name].close()


def test_the_readme_own_model_planning_block_runs(capsys):
    from adaworld_gym.plan import VP2_STEPS

    scope: dict = {"__name__": "readme_own_model"}
    block = python_block_after("**Your own model from Python.**")
    try:
        exec(compile(block, "README.md (own model)", "exec"), scope)
        result = scope["result"]
        assert isinstance(result.success, bool) and result.best_distance > 0
        assert capsys.readouterr().out.split() == [str(result.success), str(result.best_distance)]
        # The block's comment: 15 steps, a zero action and then a replan before each of the other 14.
        assert VP2_STEPS == 15 and len(result.distances) == VP2_STEPS + 1
        assert result.summary()["replans"] == VP2_STEPS - 1
    finally:
        if "env" in scope:
            scope["env"].close()
