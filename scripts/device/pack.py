"""Pack what a GPU run of the world model needs and the GPU machine lacks into ``.device/`` (gitignored).

The lent GPU machine (see docs/gpu.md) has Python 3.12 with torch and accelerate but no diffusers or gymnasium,
no simulators and no package index; a call carries the working tree plus named ignored paths, 64 MiB in all.
This writes

* ``.device/wheels/``: diffusers and gymnasium (and gymnasium's one missing dependency) for CPython 3.12,
  at the versions of ``requirements.lock``;
* ``.device/data/<name>/<subset>/``: the first episodes (in name order) of each subset of each ``--take``
  source, byte-identical shards with a manifest of just those, up to the source's MiB budget (shared among
  its subsets in proportion to their size);

and refuses when the tracked tree plus ``.device`` would not travel.

    python scripts/device/pack.py --take data/push=11 data/procgen-train=4.5 data/push-test=all
    python scripts/device/pack.py --check   # right before the call: the tree may have grown since
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from adaworld_gym.data.clips import find_subsets
from adaworld_gym.data.episodes import COLLECTION, FORMAT, MANIFEST, EpisodeStore, atomic_write_bytes

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
TRAVEL_LIMIT = 64 * MIB  # what one device call carries: tracked files + untracked-not-ignored + carried paths
MARGIN = MIB // 2
WHEELS = ["diffusers", "gymnasium", "farama-notifications"]  # the rest is installed there (docs/gpu.md)
PLATFORM_FLAGS = [
    "--only-binary=:all:", "--no-deps", "--python-version", "3.12", "--implementation", "cp",
    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
]  # fmt: skip


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def fetch_wheels(dest: Path) -> None:
    pins = locked_versions()
    specs = [f"{name}=={pins[name]}" if name in pins else name for name in WHEELS]
    # Wheels of an older lock would travel too, and clash with the new ones when installed.
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", *PLATFORM_FLAGS, "-d", str(dest), *specs]
    subprocess.run(cmd, check=True)


def tracked_bytes() -> int:
    """Bytes of what travels anyway: tracked files and untracked files git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout  # fmt: skip
    return sum((ROOT / p).stat().st_size for p in out.decode().split("\0") if p and (ROOT / p).is_file())


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def take_episodes(subset: Path, dest: Path, budget: float | None) -> tuple[int, int]:
    """Copy the first episodes of ``subset`` (name order) that fit in ``budget`` bytes (None: all)."""
    store = EpisodeStore(subset)
    kept: dict[str, dict] = {}
    used = 0
    for name in store.names():
        size = store.path(name).stat().st_size
        if budget is not None and used + size > budget:
            break
        kept[name] = store.manifest[name]
        used += size
    if not kept:
        raise SystemExit(f"{subset}: its first episode alone is over the {budget / MIB:.2f} MiB given to it")
    dest.mkdir(parents=True, exist_ok=True)
    for name in kept:
        shutil.copyfile(store.path(name), dest / store.path(name).name)
    if (subset / COLLECTION).exists():
        shutil.copyfile(subset / COLLECTION, dest / COLLECTION)
    manifest = {"format": FORMAT, "episodes": kept}
    atomic_write_bytes(dest / MANIFEST, json.dumps(manifest, indent=1).encode())
    return len(kept), used


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--take", nargs="+", metavar="DIR=MIB",
        help="episode directory (or directory of them) and its MiB budget, or 'all'",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / ".device")
    parser.add_argument("--no-wheels", action="store_true", help="keep the wheels already in OUT/wheels")
    parser.add_argument(
        "--check", action="store_true", help="pack nothing: check what OUT holds still travels"
    )
    args = parser.parse_args(argv)
    if args.check:
        if not any((args.out / "wheels").glob("*.whl")) or not (args.out / "data").is_dir():
            raise SystemExit(f"{args.out} holds no wheels or no data: pack first")
        check_travel(args.out)
        return
    if not args.take:
        parser.error("--take is required (or --check)")
    if args.no_wheels and not any((args.out / "wheels").glob("*.whl")):
        raise SystemExit(f"--no-wheels, but {args.out / 'wheels'} holds none: the install there would fail")

    data_out = args.out / "data"
    if data_out.exists():
        shutil.rmtree(data_out)
    for item in args.take:
        source, _, amount = item.partition("=")
        if not amount:
            raise SystemExit(f"--take wants DIR=MIB or DIR=all, got {item!r}")
        budget = None if amount == "all" else float(amount) * MIB
        subsets = find_subsets([source])
        sizes = [dir_bytes(s) for s in subsets]
        name = Path(source).name
        for subset, size in zip(subsets, sizes, strict=True):
            share = None if budget is None else budget * size / sum(sizes)
            dest = data_out / name / subset.name if len(subsets) > 1 else data_out / name
            count, used = take_episodes(subset, dest, share)
            total = len(EpisodeStore(subset).names())
            print(f"{source}: {subset.name}: {count}/{total} episodes, {used / MIB:.2f} MiB")
    if not args.no_wheels:
        fetch_wheels(args.out / "wheels")
    check_travel(args.out)


def check_travel(out: Path) -> None:
    travel = tracked_bytes() + dir_bytes(out)
    print(f"travels: {travel / MIB:.1f} MiB of {TRAVEL_LIMIT / MIB:.0f} (tree + {out.name})")
    if travel > TRAVEL_LIMIT - MARGIN:
        raise SystemExit(
            f"{travel / MIB:.1f} MiB would travel; the device call carries at most {TRAVEL_LIMIT / MIB:.0f}: "
            "take less data"
        )


if __name__ == "__main__":
    main()
