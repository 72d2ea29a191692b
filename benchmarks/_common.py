"""Small helpers the benchmarks share (results files, seeds, argument parsing, reuse of finished runs)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from adaworld_gym._checks import add_note

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


# --help for the fields most benchmarks share, where their dataclass says nothing more.
GENERIC_HELP = {
    "preset": "named settings (tasks, sizes, planner budget: the module's PRESETS)",
    "seed": "run seed: every draw follows from it (same seed, same numbers on the same kind of CPU, timings aside)",
    "out": "results directory (results.json, results.md, plots and GIFs)",
    "threads": "torch threads",
    "lam": "trained latent action model directory",
    "data": "episode root",
}


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)  # argparse turns a ValueError into "invalid ... value"
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # what argparse names in its message
    return parse


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


_finite_float.__name__ = "finite number"

# Fields every benchmark reads the same way, checked when parsed rather than deep inside torch or numpy (or not at
# all: a negative count sliced a sample short, or ran nothing and exited 0).
GENERIC_TYPES: dict[str, Callable[[str], Any]] = {
    "seed": _int_at_least(0),
    "threads": _int_at_least(1),
    "workers": _int_at_least(-1),  # -1: the preset's
    "guidance": _finite_float,
}
# Counts: at least 1, or at least 0 where the default is 0 ("0: the preset's").
COUNT_FIELDS = frozenset(
    {"seeds", "jobs", "denoise_steps", "episodes", "steps", "max_events", "samples", "tasks", "scenes",
     "push_train", "procgen_train", "procgen_test"}
)  # fmt: skip


def parse_dataclass_args(
    cls: type[T], doc: str | None, argv: list[str] | None = None, choices: dict[str, Any] | None = None
) -> T:
    """``--field-name VALUE`` for every field of the dataclass ``cls`` (typed by its default; lists take several;
    a bool field is a switch that flips its default).

    A list flag given twice takes both values (``--reuse A --reuse B`` as ``--reuse A B``).
    ``--help`` shows ``doc`` (a benchmark's module docstring: its first paragraph as the description, the rest
    below the options), each field's comments as its help, its default, and ``choices[field]`` where given.
    """
    import textwrap

    first, _, rest = (doc or "").strip().partition("\n\n")
    parser = argparse.ArgumentParser(
        description=textwrap.fill(" ".join(first.split()), width=100),
        epilog=rest or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    helps = {**GENERIC_HELP, **{k: v for k, v in field_comments(cls).items() if v}}
    for name, value in asdict(cls()).items():  # type: ignore[call-overload]
        flag = f"--{name.replace('_', '-')}"
        text = helps.get(name, "")
        if value not in ("", [], None) and not isinstance(value, bool):
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            text = f"{text} (default: {shown})".strip()
        text = text.replace("%", "%%")  # argparse formats help strings
        if isinstance(value, bool):  # a switch: --flag sets it (type=bool would read "False" as true)
            action = "store_false" if value else "store_true"
            parser.add_argument(flag, dest=name, action=action, help=text or None)
        elif isinstance(value, list):  # a list field takes one or more values, typed by its default's items
            item = type(value[0]) if value else str
            parser.add_argument(
                flag, dest=name, type=item, nargs="+", default=value, action=_ExtendGiven, help=text or None
            )
        else:
            allowed = list((choices or {}).get(name, ())) or None
            kind = GENERIC_TYPES.get(name, type(value))
            if name in COUNT_FIELDS and isinstance(value, int):
                kind = _int_at_least(0 if value == 0 else 1)
            parser.add_argument(flag, dest=name, type=kind, default=value, choices=allowed, help=text or None)
    return cls(**vars(parser.parse_args(argv)))


class _ExtendGiven(argparse.Action):
    """A list option whose values replace its default the first time and add to the list after that."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        current = getattr(namespace, self.dest)
        setattr(namespace, self.dest, list(values) if current is self.default else [*current, *values])


def field_comments(cls: type) -> dict[str, str]:
    """The ``#`` comments of each field of a dataclass: on the lines right above it and at its end (its help
    text in ``--help``); empty when the source cannot be read."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    helps = {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        end = node.end_lineno or node.lineno
        trailing = [comments[n] for n in range(node.lineno, end + 1) if n in comments]
        helps[node.target.id] = " ".join(above + trailing)
    return helps


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


def reuse_problem(
    directory: Path, protocol: dict[str, Any], notes: dict[str, str] | None = None
) -> str | None:
    """Why the ``results.json`` of a ``--reuse`` directory cannot contribute to a run under ``protocol`` (none
    there, no ``meta``, other settings, each followed by its entry in ``notes`` if any), or None when it can;
    an unreadable file exits (:func:`read_json`)."""
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
        why = "".join(f"; {notes[key]}" for key in changed if notes and key in notes)
        return f"{path} was run under another protocol ({there}){why}"
    return None


def check_reuse_dirs(
    out: Path, reuse: list[Path], protocol: dict[str, Any], notes: dict[str, str] | None = None
) -> None:
    """Exit before anything runs if a ``--reuse`` directory cannot contribute under ``protocol`` (saying why,
    with ``notes`` on a changed setting: rather than run its models again) or if ``out`` holds an unreadable
    ``results.json``; one of ``out`` made under another protocol is moved aside (``results.superseded-*``),
    saying why, so that the new run's first snapshot does not overwrite what it held."""
    for directory in reuse:
        problem = reuse_problem(Path(directory), protocol, notes)
        if problem is not None:
            raise SystemExit(f"--reuse {directory}: {problem}")
    results = Path(out) / "results.json"
    if results.is_file():
        read_json(results, "results file")
        problem = reuse_problem(Path(out), protocol, notes)
        if problem is not None:  # nothing there is taken over; keep the file rather than overwrite it
            supersede(out, f"{problem}. Nothing there is taken over")


def supersede(out: Path, why: str) -> None:
    """Move ``out``'s results (``results.json``, ``.md``) aside as ``results.superseded-<time>.*``, saying why."""
    results = Path(out) / "results.json"
    kept = results.with_name(f"results.superseded-{time.strftime('%Y%m%d-%H%M%S')}.json")
    results.replace(kept)
    if results.with_suffix(".md").is_file():
        results.with_suffix(".md").replace(kept.with_suffix(".md"))
    print(f"--out {out}: {why}; it is kept as {kept.name}")


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
    ``wanted``; says so, since the model then runs again. ``wanted`` None: the model does not run now, so its rows
    stand as they ran (callers keep such a model only from ``--out``, with the bundle recorded there)."""
    if wanted is None or recorded == wanted:
        return False
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


# ------------------------------------------------------------------------------------------ plug-in dynamics
def parse_plugins(specs: list[str], taken: tuple[str, ...]) -> dict[str, str]:
    """``--dynamics NAME=MODULE:FACTORY`` (or ``NAME=FILE.py:FACTORY``) as ``{name: "MODULE:FACTORY"}``.

    Names must be identifiers, not a built-in model's (``taken``), each given once; nothing is imported here,
    so a bad flag exits before any work.
    """
    plugins: dict[str, str] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        module, colon, factory = target.rpartition(":")
        if not sep or not colon or not module or not factory.isidentifier():
            raise SystemExit(f"--dynamics takes NAME=MODULE:FACTORY or NAME=FILE.py:FACTORY, got {spec!r}")
        if not name.isidentifier():
            raise SystemExit(
                f"--dynamics {spec!r}: the name {name!r} must be an identifier (letters, digits, _)"
            )
        if name in taken:
            raise SystemExit(f"--dynamics {spec!r}: {name!r} is a built-in model ({', '.join(taken)})")
        if name in plugins:
            raise SystemExit(f"--dynamics {spec!r}: the name {name!r} is given twice")
        if module.endswith(".py"):  # one spelling per file (./a.py and a.py)
            target = f"{os.path.normpath(module)}:{factory}"
        plugins[name] = target
    return plugins


def _import_plugin(flag: str, where: str) -> Any:
    """The module of a plug-in: imported by name, or a ``.py`` file imported as ``python FILE.py`` would see it
    (its folder first on ``sys.path``, so it imports its neighbours, and worker processes, which start with
    this ``sys.path``, can import it by its name); once per process, however many games load it."""
    import importlib

    if not where.endswith(".py"):
        if "/" in where or "\\" in where or where.startswith("."):  # a path, not a module name
            raise SystemExit(f"{flag}: {where!r} is not a module name; a file path needs its .py: {where}.py")
        try:
            return importlib.import_module(where)
        except ModuleNotFoundError as e:
            # Only the named module (or a package on its dotted path) missing; a missing dependency of the
            # plug-in's own code is the plug-in's error, shown with its traceback by load_plugin.
            if e.name is None or not (where == e.name or where.startswith(e.name + ".")):
                raise
            hint = (
                f"a file path needs its .py: {where}.py"
                if Path(where + ".py").is_file()
                else "give its file as FILE.py:FACTORY, or put its folder on PYTHONPATH"
            )
            raise SystemExit(f"{flag}: no module named {where!r} ({hint})") from None
    path = Path(where).resolve()
    if not path.is_file():
        raise SystemExit(
            f"{flag}: no file {where} (looked for {path}; relative paths start at the current directory)"
        )
    if not path.stem.isidentifier():
        raise SystemExit(f"{flag}: {path.name} cannot be imported (a module name is letters, digits and _)")
    known = sys.modules.get(path.stem)
    if known is None:
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        known = importlib.import_module(path.stem)
    source = getattr(known, "__file__", None)
    if source is None or Path(source).resolve() != path:
        raise SystemExit(
            f"{flag}: the module name {path.stem!r} is taken by {source or known}; rename {path.name}"
        )
    return known


def load_plugin(
    name: str, target: str, env_id: str, action_space: Any, frame_size: int = 64
) -> CheckedPlugin:
    """Import ``target`` (``MODULE:FACTORY`` or ``FILE.py:FACTORY``), call ``FACTORY(env_id)``, check that
    the result is a :class:`~adaworld_gym.planning.Dynamics` over ``action_space`` and (a learned model: not
    ``uses_state``) that one probe rollout from a grey ``frame_size`` context returns the frames it must; exits
    naming what is wrong (after printing the traceback of an error raised by the plug-in's own code)."""
    import hashlib
    import traceback

    from adaworld_gym.planning import Dynamics
    from adaworld_gym.planning.dynamics import not_a_dynamics

    where, _, attr = target.rpartition(":")
    flag = f"--dynamics {name}={target}"
    try:
        module = _import_plugin(flag, where)
    except SystemExit:
        raise
    except Exception as e:  # the plug-in's own import error, whatever it is: show it, name it and stop
        traceback.print_exc()
        raise SystemExit(f"{flag}: importing {where} failed: {type(e).__name__}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SystemExit(f"{flag}: {where} has no callable {attr!r}")
    try:
        dynamics = factory(env_id)
    except Exception as e:
        traceback.print_exc()
        raise SystemExit(f"{flag}: {attr}({env_id!r}) failed: {type(e).__name__}: {e}") from e
    try:  # from here on the plug-in exists: closed if it is refused (it may hold processes or memory)
        if not isinstance(dynamics, Dynamics):
            raise SystemExit(
                f"{flag}: {attr}({env_id!r}) returned {type(dynamics).__name__!r}, not a Dynamics; "
                + not_a_dynamics(dynamics).split(": ", 1)[1]
            )
        problems = []
        if dynamics.action_space != action_space:
            problems.append(f"action_space {dynamics.action_space} is not the env's {action_space}")
        frames = dynamics.context_frames
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            problems.append(f"context_frames must be an int >= 1, got {frames!r}")
        if not isinstance(dynamics.uses_state, bool):
            problems.append(f"uses_state must be a bool, got {dynamics.uses_state!r}")
        if problems:
            raise SystemExit(f"{flag}: " + "; ".join(problems))
        # What identifies the plug-in's code across runs (pool_planning compares it): its module file's bytes.
        source = getattr(module, "__file__", None)
        digest = f"sha256:{hashlib.sha256(Path(source).read_bytes()).hexdigest()}" if source else None
        plugin = CheckedPlugin(name, dynamics, digest)
        if not dynamics.uses_state:
            _probe(plugin, flag, action_space, frame_size)
    except BaseException:
        with contextlib.suppress(Exception):  # the refusal is the error to report, not a failing close
            close_dynamics(dynamics)
        raise
    return plugin


def _probe_action(space: Any) -> np.ndarray:
    """A fixed action of ``space`` for the probe (no draw from any generator): the first discrete action, the
    Box point nearest 0, else a sample from a copy seeded 0."""
    import copy

    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return np.asarray(space.start)
    if isinstance(space, spaces.Box):
        return np.clip(np.zeros(space.shape), space.low, space.high).astype(space.dtype)
    space = copy.deepcopy(space)
    space.seed(0)
    return np.asarray(space.sample())


def _probe(plugin: CheckedPlugin, flag: str, action_space: Any, frame_size: int) -> None:
    """One rollout (1 candidate, 1 step of a fixed action, from a grey context) before any model runs, so that
    frames of the wrong kind stop the benchmark now rather than after the models before this one (the oracle:
    ~50 min). It is one more call of the plug-in's ``rollout``: a plug-in drawing from its own generator
    should define ``reseed(seed)``, which the benchmarks call before every episode."""
    import traceback

    context = np.full((1, plugin.context_frames, frame_size, frame_size, 3), 128, np.uint8)
    actions = _probe_action(action_space)[None, None]
    try:
        plugin.rollout(context, actions)
    except ValueError as e:
        if str(e).startswith(f"plug-in {plugin.name!r}: rollout must"):  # CheckedPlugin's own check
            raise SystemExit(
                f"{flag}: a probe rollout (1 candidate, 1 step) {str(e).split(': rollout ', 1)[1]}"
            ) from e
        traceback.print_exc()
        raise SystemExit(
            f"{flag}: a probe rollout (1 candidate, 1 step) failed: {type(e).__name__}: {e}"
        ) from e
    except Exception as e:  # the plug-in's own error: show it, name it and stop
        traceback.print_exc()
        raise SystemExit(
            f"{flag}: a probe rollout (1 candidate, 1 step) failed: {type(e).__name__}: {e}"
        ) from e


class CheckedPlugin:
    """A plug-in :class:`~adaworld_gym.planning.Dynamics` whose every ``rollout`` is checked to return uint8
    frames ``[B, T, H, W, 3]`` for ``[B, T, ...]`` actions (at the context's size), with errors that name the
    plug-in; everything else (``reseed``, ``close``, other attributes) is the plug-in's own."""

    def __init__(self, name: str, dynamics: Any, digest: str | None = None) -> None:
        self.name, self.dynamics, self.digest = name, dynamics, digest
        self.action_space = dynamics.action_space
        self.context_frames = dynamics.context_frames
        self.uses_state = dynamics.uses_state

    def rollout(self, context: Any, actions: Any, state: Any = None) -> np.ndarray:
        try:
            frames = np.asarray(self.dynamics.rollout(context, actions, state=state))
        except Exception as e:  # the plug-in's own error, traceback and all, with whose it is
            add_note(e, f"raised by the rollout of plug-in {self.name!r} (--dynamics)")
            raise
        batch, steps = np.shape(actions)[:2]
        size = () if context is None else tuple(np.shape(context)[2:4])
        if frames.dtype != np.uint8:
            raise ValueError(
                f"plug-in {self.name!r}: rollout must return uint8 frames, got {_describe(frames)}"
            )
        if (
            frames.ndim != 5
            or frames.shape[:2] != (batch, steps)
            or frames.shape[-1] != 3
            or (size and frames.shape[2:4] != size)
        ):
            want = f"[{batch}, {steps}, {', '.join(map(str, size)) if size else 'H, W'}, 3]"
            raise ValueError(f"plug-in {self.name!r}: rollout must return frames {want}, got {frames.shape}")
        return frames

    def __getattr__(self, attribute: str) -> Any:
        if "dynamics" not in self.__dict__:  # not yet initialised (e.g. while unpickling)
            raise AttributeError(attribute)
        return getattr(self.__dict__["dynamics"], attribute)


def _describe(frames: np.ndarray) -> str:
    """A non-uint8 prediction's dtype, with its range and the fix when that says how it went wrong."""
    if frames.dtype.kind not in "fiub" or frames.size == 0:
        return str(frames.dtype)
    values = frames.astype(np.float64)
    finite = values[np.isfinite(values)]
    bad = values.size - finite.size
    if not finite.size:
        return f"{frames.dtype} with no finite value (NaN/inf everywhere)"
    low, high = finite.min(), finite.max()
    text = f"{frames.dtype} in [{low:.3g}, {high:.3g}]"
    if bad:
        return text + f" with {bad} NaN/inf values (a uint8 cast would turn them into silent zeros)"
    cast = ".round().clip(0, 255).astype(np.uint8)"
    if frames.dtype.kind == "f" and low >= 0 and high <= 1:
        return text + f": scale to 0-255 first, e.g. (frames * 255){cast}"
    if frames.dtype.kind == "f" and low >= -1 and high <= 1:
        return text + f": a [-1, 1] output? map it to 0-255 first, e.g. ((frames + 1) * 127.5){cast}"
    if low >= 0 and high <= 255:
        return text + f": cast with frames{cast}"
    return text + f": outside 0-255; rescale to 0-255, then cast with {cast}"


def earlier_plugins(meta: dict[str, Any] | None) -> tuple[dict[str, str], dict[str, str]]:
    """``({name: target}, {name: digest})`` of the plug-ins an earlier results file's ``meta`` records."""
    meta = meta if isinstance(meta, dict) else {}
    targets, digests = meta.get("plugins"), meta.get("plugin_digests")
    targets = {str(k): str(v) for k, v in targets.items()} if isinstance(targets, dict) else {}
    digests = {str(k): str(v) for k, v in digests.items()} if isinstance(digests, dict) else {}
    return targets, digests


def kept_plugins(
    meta: dict[str, Any] | None, finished: Iterable[str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """``({name: target}, {name: digest})`` of the plug-ins an earlier run in ``--out`` (its ``meta``) finished
    (``finished``: the model names with complete rows there): kept until a plug-in run now replaces them."""
    targets, digests = earlier_plugins(meta)
    done = set(finished)
    return {n: t for n, t in targets.items() if n in done}, {n: digests.get(n) for n in targets if n in done}


def select_models(text: str, builtin: tuple[str, ...], plugins: dict[str, str]) -> list[str]:
    """The built-in models a ``--models`` comma list selects; it may name the plug-ins too (always run) and may
    be empty when there are plug-ins, but must select something."""
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(builtin) - set(plugins))
    if unknown:
        raise SystemExit(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join((*builtin, *plugins))}"
        )
    if not chosen and not plugins:
        raise SystemExit(f"--models selects no model; choose from {', '.join(builtin)} (or add --dynamics)")
    return [m for m in builtin if m in chosen]


def reseed(dynamics: Any, seed: int) -> None:
    """Seed a dynamics' own randomness for an episode, if it has any (a ``reseed(seed)`` method, as the world
    models' and any plug-in's that defines one), so every model's episode ``i`` starts from the same seed."""
    method = getattr(dynamics, "reseed", None)
    if callable(method):
        method(seed)


def imagining_dynamics(dynamics: Any, bundle: Any, denoise_steps: int, seed: int) -> Any:
    """What draws a GIF's imagined column (each executed action predicted from the real frames): a fresh world
    model over ``bundle``, a plug-in reseeded to ``seed``, or None (random actions, the oracle, a plug-in
    that needs the simulator state)."""
    if bundle is not None:
        from adaworld_gym.planning import WorldModelDynamics

        return WorldModelDynamics(bundle, steps=denoise_steps, generator_seed=seed)
    if dynamics is None or dynamics.uses_state:
        return None
    reseed(dynamics, seed)
    return dynamics


def close_dynamics(dynamics: Any) -> None:
    """Close a dynamics that holds resources (the oracle's worker processes, a plug-in's ``close``)."""
    method = getattr(dynamics, "close", None)
    if callable(method):
        method()
