"""The wheel a user installs with pip carries the whole package, shipped weights and bundles included, and
serves a shipped world model from outside this checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked_package_files() -> set[str]:
    """The package's files as git tracks them (the filesystem's, less caches, outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "adaworld_gym"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        return set(out.split())
    except (OSError, subprocess.CalledProcessError):
        return {
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / "adaworld_gym").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the tracked files: setuptools' build/ in the checkout would keep files since deleted.
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for rel in [*tracked_package_files(), "pyproject.toml", "README.md", "LICENSE"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w"]
    build = subprocess.run(
        [*pip_wheel, str(out), str(src)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = out.glob("adaworld_gym-*.whl")
    return wheel


def test_the_wheel_holds_every_package_file_and_the_shipped_weights(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    missing = sorted(tracked_package_files() - names)
    assert not missing, f"{len(missing)} package file(s) left out of the wheel: {missing[:10]}"
    for asset in (
        "adaworld_gym/assets/world_model/diffusion_pytorch_model.safetensors",
        "adaworld_gym/assets/lam/config.json",
        "adaworld_gym/assets/bundles/procgen-coinrun/bundle.json",
    ):
        assert asset in names
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)  # license = "MIT" ships its text


def test_the_installed_wheel_serves_a_shipped_env_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    script = (
        "import gymnasium, torch, adaworld_gym\n"
        "torch.set_num_threads(1)\n"
        "print(adaworld_gym.__file__)\n"
        "env = gymnasium.make('AdaWorld/WorldModel-Procgen-coinrun-v0', denoise_steps=1)\n"
        "obs, _ = env.reset(seed=0)\n"
        "obs, *_ = env.step(0)\n"
        "print(obs.shape, obs.dtype)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # not the checkout: the import must come from the installed wheel
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    where, shape = run.stdout.split("\n")[:2]
    assert Path(where).is_relative_to(site)
    assert shape == "(64, 64, 3) uint8"
