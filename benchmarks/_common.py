"""Small helpers the benchmarks share (results files, seeds, argument parsing, reuse of finished runs)."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def derived_seed(*keys: int) -> int:
    """A 32-bit seed derived from ``keys`` (e.g. run seed and episode index): the same for every model."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def machine_info() -> dict[str, Any]:
    """The CPU a speed figure was measured on: model name, the matrix/vector extensions bf16 kernels use."""
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "extensions": [f for f in wanted if f in flags],
        "torch": torch.__version__,
    }


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (``successes`` may be a mean over repeats of each trial)."""
    if n == 0:
        return (math.nan, math.nan)
    phat = successes / n
    denom = 1 + z**2 / n
    centre = (phat + z**2 / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z**2 / (4 * n**2)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def parse_dataclass_args(cls: type[T], description: str, argv: list[str] | None = None) -> T:
    """``--field-name VALUE`` for every field of the dataclass ``cls`` (typed by its default; lists take several;
    a bool field is a switch that flips its default)."""
    parser = argparse.ArgumentParser(description=description)
    for name, value in asdict(cls()).items():  # type: ignore[call-overload]
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):  # a switch: --flag sets it (type=bool would read "False" as true)
            parser.add_argument(flag, dest=name, action="store_false" if value else "store_true")
        elif isinstance(value, list):  # a list field takes one or more values, typed by its default's items
            item = type(value[0]) if value else str
            parser.add_argument(flag, dest=name, type=item, nargs="+", default=value)
        else:
            parser.add_argument(flag, dest=name, type=type(value), default=value)
    return cls(**vars(parser.parse_args(argv)))


def resolve_data(args: Any) -> Path:
    """The episode root of a benchmark's ``--data``: as given, else ``data/``, or ``OUT/data`` for ``--preset
    smoke``, whose tiny collections written into ``data/`` would sit beside (or be refused by) the real ones."""
    if str(args.data):
        return Path(args.data)
    return Path(args.out) / "data" if args.preset == "smoke" else Path("data")


def jsonable_args(args: Any) -> dict[str, Any]:
    """``asdict(args)`` with paths (also inside list fields) as strings."""

    def plain(v: Any) -> Any:
        return v if isinstance(v, (bool, int, float, str, type(None))) else str(v)

    return {k: [plain(x) for x in v] if isinstance(v, list) else plain(v) for k, v in asdict(args).items()}


def write_results(
    out: Path, results: dict[str, Any], markdown_table: Callable[[dict[str, Any]], str]
) -> None:
    """``results.json`` and ``results.md`` (the table), each written atomically (``out`` is created if needed)."""
    from adaworld_gym.data.episodes import atomic_write_bytes

    write_json(out / "results.json", results)
    atomic_write_bytes(out / "results.md", markdown_table(results).encode())


def make_out_dir(out: Path) -> Path:
    """Create the results directory ``out`` before any work: an ``--out`` that is a file (or lies under one)
    exits at once, naming it, instead of after the whole measurement."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise SystemExit(f"--out {out}: cannot be a results directory ({e})") from None
    return out


def check_out_file(out: str | os.PathLike) -> Path:
    """An ``--out`` results file checked before any work (not a directory, not under a file, writable); its
    missing parent directories are created when it is written (:func:`write_json`)."""
    from adaworld_gym.viz import check_output_file

    try:
        return check_output_file(out, None, "--out")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def write_json(out: str | os.PathLike, payload: Any) -> None:
    """``payload`` as indented JSON at ``out``, atomically, creating its parent directories."""
    from adaworld_gym.data.episodes import atomic_write_bytes

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(payload, indent=1).encode())


def read_json(path: Path, what: str) -> Any:
    """``path`` parsed as JSON, else an exit naming the file. The benchmarks write theirs atomically, so an
    unreadable one was cut short or edited elsewhere: say so rather than fail deep inside a resume."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise SystemExit(f"cannot read {what} {path}: {e}; fix or delete it") from None


def reuse_problem(directory: Path, protocol: dict[str, Any]) -> str | None:
    """Why the ``results.json`` of a ``--reuse`` directory cannot contribute to a run under ``protocol`` (none
    there, no ``meta``, other settings), or None when it can; an unreadable file exits (:func:`read_json`)."""
    path = Path(directory) / "results.json"
    if not path.is_file():
        return f"no {path}"
    earlier = read_json(path, "results file")
    meta = earlier.get("meta") if isinstance(earlier, dict) else None
    if not isinstance(meta, dict):
        return f"{path} has no meta section"
    changed = [key for key, value in protocol.items() if meta.get(key) != value]
    if changed:
        there = ", ".join(f"{key} {meta.get(key)!r} there, {protocol[key]!r} now" for key in changed)
        return f"{path} was run under another protocol ({there})"
    return None


def check_reuse_dirs(out: Path, reuse: list[Path], protocol: dict[str, Any]) -> None:
    """Exit before anything runs if a ``--reuse`` directory cannot contribute under ``protocol`` (saying why:
    rather than run its models again) or if ``out`` holds an unreadable ``results.json``."""
    for directory in reuse:
        problem = reuse_problem(Path(directory), protocol)
        if problem is not None:
            raise SystemExit(f"--reuse {directory}: {problem}")
    if (Path(out) / "results.json").is_file():
        read_json(Path(out) / "results.json", "results file")


def earlier_results(directory: Path, protocol: dict[str, Any]) -> dict[str, Any] | None:
    """The ``results.json`` in ``directory`` if its ``meta`` matches every ``protocol`` setting, else None
    (also for a missing or unreadable file): what a ``--reuse`` directory may contribute."""
    try:
        earlier = json.loads((Path(directory) / "results.json").read_text())
        meta = earlier["meta"]
        if any(meta.get(key) != value for key, value in protocol.items()):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return earlier


def skip_other_bundle(directory: Path, label: str, recorded: Any, wanted: str | None) -> bool:
    """True when a model finished in ``directory`` cannot be taken over because it ran another bundle than
    ``wanted`` (None: the model is not run now); says so, since the model then runs again."""
    if wanted is None or recorded == wanted:
        return wanted is None
    print(
        f"[{label}] finished in {directory} with another bundle ({recorded}; now {wanted}): running it again"
    )
    return True


def copy_gifs(source: Path, out: Path, pattern: str) -> None:
    """Copy the GIFs matching ``pattern`` from a reused run's directory into ``out`` (none when they coincide)."""
    if Path(source).resolve() == Path(out).resolve():
        return
    for gif in sorted(Path(source).glob(pattern)):
        shutil.copyfile(gif, Path(out) / gif.name)


def check_bundle_kind(name: str, path: str, bundle: Any) -> None:
    """Exit if the bundle given as ``--<name>`` was not pretrained as that kind of model.

    An adapted twin takes actions (``adaworld adapt`` turns conditioning on), so what it was pretrained as is
    read from the bundle's ``pretrained_action_agnostic`` record, falling back to its world model's config.
    """
    agnostic = bool(bundle.meta.get("pretrained_action_agnostic", bundle.world_model.config.action_agnostic))
    if agnostic != (name == "action_agnostic"):
        kind = "an action-agnostic" if name == "action_agnostic" else "a latent-action-conditioned"
        raise SystemExit(f"--{name.replace('_', '-')} {path}: expected {kind} world model")


def parse_bundles(pairs: list[str]) -> dict[str, Path]:
    """``--bundles NAME=DIR`` pairs as ``{name: Path(DIR)}``; "real" is reserved for the simulator."""
    models = {}
    for pair in pairs:
        name, sep, directory = pair.partition("=")
        if not sep or not name or not directory:
            raise SystemExit(f"--bundles takes NAME=DIR pairs, got {pair!r}")
        if name in models or name == "real":
            raise SystemExit(f"--bundles: the name {name!r} is taken")
        models[name] = Path(directory)
    return models
