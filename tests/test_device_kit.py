"""The GPU kit (scripts/device, docs/gpu.md): cheap checks of what fails before or during the one device call."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

DEVICE = Path(__file__).resolve().parents[1] / "scripts" / "device"


@pytest.fixture(scope="module")
def pack():
    spec = importlib.util.spec_from_file_location("device_pack", DEVICE / "pack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_train_script_parses():
    subprocess.run(["bash", "-n", str(DEVICE / "train_wm.sh")], check=True)


def test_wheels_are_pinned_by_the_lock(pack):
    """An unpinned wheel would be the newest release, not the version the code was checked with."""
    pins = pack.locked_versions()
    assert [name for name in pack.WHEELS if name not in pins] == []


def test_check_refuses_an_unpacked_folder(pack, tmp_path):
    with pytest.raises(SystemExit, match="pack first"):
        pack.main(["--check", "--out", str(tmp_path)])


def test_no_wheels_refuses_when_there_are_none(pack, tmp_path):
    with pytest.raises(SystemExit, match="holds none"):
        pack.main(["--take", "data=1", "--no-wheels", "--out", str(tmp_path)])


def test_travel_limit(pack, tmp_path, monkeypatch):
    room = pack.TRAVEL_LIMIT - pack.MARGIN
    monkeypatch.setattr(pack, "tracked_bytes", lambda: room - 10)
    (tmp_path / "f").write_bytes(b"x" * 10)
    pack.check_travel(tmp_path)  # exactly at the limit: travels
    (tmp_path / "f").write_bytes(b"x" * 11)
    with pytest.raises(SystemExit, match="would travel"):
        pack.check_travel(tmp_path)
