"""Subprocess smoke runs of the training and transfer commands, chained as a user would."""

import argparse
import json
import subprocess
import sys

import pytest

from adaworld_gym.cli import _games
from adaworld_gym.data.collect import collect_procgen
from adaworld_gym.sims.games import ADAPTATION_GAMES, PRETRAIN_GAMES


def _cli(*args, timeout=300):
    cmd = [sys.executable, "-m", "adaworld_gym.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    collect_procgen(["maze"], 2, 30, path, seed=0, batch=2)
    return path


def test_train_lam_then_world_model_then_transfer(data_dir, tmp_path):
    r = _cli(
        "train-lam", "--data", data_dir, "--preset", "tiny", "--max-steps", "3",
        "--set", "pixel_channels=12", "--batch-size", "5", "--out", tmp_path / "lam",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lam = tmp_path / "lam" / "model"
    assert json.loads((lam / "config.json").read_text())["pixel_channels"] == 12
    assert json.loads((tmp_path / "lam" / "train_config.json").read_text())["batch_size"] == 5
    r = _cli(
        "train-wm",
        "--lam",
        lam,
        "--data",
        data_dir,
        "--preset",
        "tiny",
        "--max-steps",
        "2",
        "--batch-size",
        "3",
        "--out",
        tmp_path / "wm",
    )
    assert r.returncode == 0, r.stderr
    wm = tmp_path / "wm" / "model"
    assert (wm / "config.json").exists()
    assert json.loads((tmp_path / "wm" / "train_config.json").read_text())["batch_size"] == 3
    episode = data_dir / "procgen-maze" / "ep_000000.awe"
    target = data_dir / "procgen-maze" / "ep_000001.awe"
    gif = tmp_path / "t.gif"
    r = _cli(
        "transfer",
        "--source",
        episode,
        "--target",
        target,
        "--steps",
        "5",
        "--lam",
        lam,
        "--model",
        wm,
        "--out",
        gif,
    )
    assert r.returncode == 0, r.stderr
    assert gif.read_bytes()[:6] == b"GIF89a"


def test_train_wm_needs_a_lam_unless_agnostic(data_dir, tmp_path):
    r = _cli("train-wm", "--data", data_dir, "--preset", "tiny", "--max-steps", "1", "--out", tmp_path / "wm")
    assert r.returncode == 2 and "--lam is required" in r.stderr
    r = _cli(
        "train-wm",
        "--action-agnostic",
        "--data",
        data_dir,
        "--preset",
        "tiny",
        "--max-steps",
        "1",
        "--out",
        tmp_path / "twin",
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("command", [["train-lam"], ["train-wm", "--action-agnostic"]])
def test_shares_must_match_the_data_directories(data_dir, tmp_path, command):
    r = _cli(
        *command, "--data", data_dir, "--shares", "0.5", "0.5", "--preset", "tiny", "--out", tmp_path / "o"
    )
    assert r.returncode == 2 and "--shares has 2 values for 1 --data directories" in r.stderr


def test_missing_data_is_reported(tmp_path):
    r = _cli(
        "train-lam",
        "--data",
        tmp_path / "nothing",
        "--preset",
        "tiny",
        "--max-steps",
        "1",
        "--out",
        tmp_path / "o",
    )
    assert r.returncode == 2 and "nothing" in r.stderr


def test_sigterm_becomes_keyboard_interrupt_so_trainers_checkpoint():
    import signal

    from adaworld_gym import cli

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a nohup'd background job
    try:
        cli._stop_gracefully_on_signals()
        for sig in saved:
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(sig)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize(
    ("setting", "message"),
    [("pixel_width=64", "no setting 'pixel_width'"), ("pixel_channels", "expects KEY=VALUE")],
)
def test_bad_model_setting_is_named(tmp_path, setting, message):
    r = _cli("train-lam", "--data", tmp_path, "--preset", "tiny", "--set", setting, "--out", tmp_path / "o")
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_game_lists_and_unknown_games():
    assert _games("adaptation") == list(ADAPTATION_GAMES)
    assert _games("pretrain") == list(PRETRAIN_GAMES)
    assert not set(ADAPTATION_GAMES) & set(_games("pretrain"))
    assert _games(" Maze, heist ") == ["maze", "heist"]
    with pytest.raises(argparse.ArgumentTypeError, match="mazee"):
        _games("maze,mazee")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train-lam", "--data", "DATA", "--max-steps", "0", "--out", "OUT"], "max_steps must be >= 1"),
        (["train-lam", "--data", "NOWHERE", "--max-steps", "1", "--out", "OUT"], "data directory not found"),
        (
            [
                "train-wm",
                "--action-agnostic",
                "--lam",
                "L",
                "--data",
                "DATA",
                "--max-steps",
                "1",
                "--out",
                "OUT",
            ],
            "drop --lam",
        ),
        (["play", "--env", "AdaWorld/WorldModel-v0", "--headless", "--steps", "1"], "pass --bundle"),
        (["play", "--env", "AdaWorld/Procgen-heist-v0", "--policy", "keys"], "add --headless"),
    ],
)
def test_bad_commands_fail_fast_with_one_line(cli_main, data_dir, tmp_path, capsys, argv, message):
    argv = [str(data_dir) if a == "DATA" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    argv = [str(tmp_path / "nowhere") if a == "NOWHERE" else a for a in argv]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_interactive_play_without_a_display_is_refused(cli_main, capsys, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(var, raising=False)
    assert cli_main(["play", "--env", "AdaWorld/Procgen-heist-v0", "--steps", "1"]) == 2
    assert "no display" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train-lam", "--data", "d", "--threads", "0", "--out", "o"], "--threads"),
        (["collect", "procgen", "--games", "heist", "--distribution-mode", "bogus", "--out", "o"],
         "--distribution-mode"),
        (["plot", "--data", "d", "--samples", "1", "--out", "p.png"], "--samples"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_by_the_parser(cli_main, capsys, argv, flag):
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    # Refused for the bad value, not for another parser error (a missing or misspelt argument exits 2 too).
    assert stop.value.code == 2 and f"error: argument {flag}:" in capsys.readouterr().err


def test_adapt_checks_the_model_before_collecting(cli_main, tmp_path, capsys):
    from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset

    twin = tmp_path / "twin"
    DiffusionWorldModel(**world_model_preset("tiny"), action_agnostic=True).save_pretrained(twin)
    argv = ["adapt", "--model", str(twin), "--lam", str(twin), "--env", "AdaWorld/Procgen-heist-v0"]
    assert cli_main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "takes no LAM" in capsys.readouterr().err and not (tmp_path / "run" / "data").exists()


@pytest.mark.usefixtures("one_thread")
def test_a_game_named_twice_is_collected_once():
    assert _games("coinrun,maze,coinrun") == ["coinrun", "maze"]
