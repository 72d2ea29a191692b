"""Every benchmark's --help says what each flag does: the description in full, the fields' comments, their
defaults and the named presets; a preset that does not exist is refused by the parser."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

from benchmarks._common import field_comments, parse_dataclass_args

BENCHMARKS = sorted(
    path.stem
    for path in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
    if path.stem[0] != "_"
)


# fmt: off
@dataclass
class _Example:
    # Above the field,
    # over two lines.
    first: int = 3  # and after it
    second: str = (
        "x"  # inside a wrapped default
    )
    third: list[str] = field(default_factory=list)
    switch: bool = False
# fmt: on


def test_field_comments_are_read_above_beside_and_inside_a_field():
    assert field_comments(_Example) == {
        "first": "Above the field, over two lines. and after it",
        "second": "inside a wrapped default",
        "third": "",
        "switch": "",
    }


def test_help_shows_the_description_comments_defaults_and_the_rest_of_the_doc(capsys):
    doc = "One line that\nwraps.\n\nThe rest, below the options."
    with pytest.raises(SystemExit) as exit_info:
        parse_dataclass_args(_Example, doc, ["--help"], choices={"second": ["x", "y"]})
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "One line that wraps." in text and text.endswith("The rest, below the options.")
    assert "Above the field, over two lines. and after it (default: 3)" in text
    assert "--second {x,y} inside a wrapped default (default: x)" in text
    with pytest.raises(SystemExit) as exit_info:
        parse_dataclass_args(_Example, doc, ["--second", "z"], choices={"second": ["x", "y"]})
    assert exit_info.value.code == 2 and "invalid choice: 'z'" in capsys.readouterr().err


@dataclass
class _Generic:
    seed: int = 0
    threads: int = 1
    workers: int = -1
    seeds: int = 0  # a count whose 0 means the preset's
    jobs: int = 2  # a count without that meaning
    guidance: float = 1.0


@pytest.mark.parametrize(
    "argv, message",
    [(["--seed", "-1"], "--seed: must be an integer >= 0"), (["--threads", "0"], "--threads: must be an integer >= 1"),
     (["--workers", "-3"], "--workers: must be an integer >= -1"), (["--seed", "x"], "invalid integer >= 0 value"),
     (["--seeds", "-2"], "--seeds: must be an integer >= 0"), (["--jobs", "0"], "--jobs: must be an integer >= 1"),
     (["--guidance", "nan"], "--guidance: must be a finite number")],
)  # fmt: skip
def test_seed_threads_and_workers_are_checked_by_the_parser(argv, message, capsys):
    """--threads 0 or --seed -1 ended in a traceback from torch or numpy after the benchmark had begun; --seeds -2
    ran nothing and exited 0."""
    with pytest.raises(SystemExit) as exit_info:
        parse_dataclass_args(_Generic, "doc", argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert parse_dataclass_args(_Generic, "doc", ["--workers", "-1", "--seed", "0"]) == _Generic()


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_flag_has_help(name, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    args_class = getattr(module, "Args", None)
    with pytest.raises(SystemExit) as exit_info:
        if hasattr(module, "parse_args"):
            module.parse_args(["--help"])
        elif args_class is not None:  # modules that parse in their __main__ block
            parse_dataclass_args(args_class, module.__doc__, ["--help"])
        else:  # their own argparse parser
            module.main(["--help"])
    assert exit_info.value.code == 0
    options = capsys.readouterr().out.split("options:", 1)[1]
    entries = dict(re.findall(r"^  (--[\w-]+)(.*?)(?=^  -|\Z)", options, re.S | re.M))
    if args_class is not None:
        assert set(entries) == {f"--{f.name.replace('_', '-')}" for f in fields(args_class)}
    assert entries
    for flag, entry in entries.items():
        # Beyond the metavar and the default, the entry must say what the flag does.
        metavar = flag.lstrip("-").upper().replace("-", "_")
        text = re.sub(r"\(default:[^)]*\)", "", re.sub(r"\{[^}]*\}", "", entry))
        words = set(text.split()) - {metavar, f"[{metavar}", "...]"}
        assert words, f"{name}: {flag} has no help text"
    if hasattr(module, "PRESETS"):
        assert "{" + ",".join(module.PRESETS) + "}" in options
