"""--dynamics: your own model in the planning benchmarks, under the built-in models' planner, cost, tasks and
seeds. The proof: the real simulator handed in as a plug-in plays exactly the oracle's episodes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from benchmarks import pool_planning, procgen_planning, vp2_push
from benchmarks._common import load_plugin, parse_plugins

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def forget_plugin_modules(tmp_path_factory):
    """A FILE.py plug-in is imported once per process under its file's name, its folder first on sys.path: the
    tests write files of one name in many folders, so each test forgets what the last one imported."""
    modules, path = set(sys.modules), list(sys.path)
    # pytest's own temporary folders, not the system's: a checkout (and its .venv) under /tmp would have the
    # libraries a test imported first forgotten too, and imported (and registered) again by the next.
    written_here = str(tmp_path_factory.getbasetemp())
    yield
    for name in set(sys.modules) - modules:  # the test's own plug-in files, not the libraries they imported
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(written_here):
            del sys.modules[name]
    sys.path[:] = path


EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "copy_last_dynamics.py"

# The oracle re-made outside the benchmark: the simulator restored to the current state, in-process.
SIMULATOR_PLUGIN = """
import functools
from adaworld_gym.planning import SimulatorDynamics
from adaworld_gym.registration import procgen_game

def make(env_id):
    game = procgen_game(env_id)
    if game is None:
        from benchmarks.vp2_push import oracle_env_factory
        return SimulatorDynamics(oracle_env_factory(), workers=0)
    from benchmarks.procgen_planning import make_env
    return SimulatorDynamics(functools.partial(make_env, game), workers=0)
"""

# Records the seed it is given before each episode (what makes a plug-in's own randomness comparable).
RECORDING_PLUGIN = """
import json, os
import numpy as np
from gymnasium import spaces

class Recorder:
    context_frames, uses_state = 2, False
    action_space = spaces.Discrete(15)
    def __init__(self, log):
        self.log = log
    def reseed(self, seed):
        with open(self.log, "a") as f:
            f.write(json.dumps(seed) + "\\n")
    def rollout(self, context, actions, state=None):
        assert context.shape[1] <= 2 and context.dtype == np.uint8
        return np.repeat(context[:, -1:], actions.shape[1], axis=1)

def make(env_id):
    return Recorder(os.environ["PLUGIN_LOG"])
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return str(path)


def test_the_simulator_as_a_plug_in_plays_the_oracles_push_episodes(tmp_path):
    sim = _write(tmp_path, "sim", SIMULATOR_PLUGIN)
    out = tmp_path / "out"
    results = vp2_push.main(
        vp2_push.Args(
            preset="smoke",
            models="oracle,random",
            dynamics=[f"sim={sim}:make", f"still={EXAMPLE}:make"],
            out=out,
        )
    )
    oracle, sim_rows = results["per_task"]["oracle"], results["per_task"]["sim"]
    strip = ("seconds_per_replan",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in sim_rows] == [
        {k: v for k, v in r.items() if k not in strip} for r in oracle
    ]
    # A model that cannot tell actions apart leaves MPPI blind on every replan; the oracle rarely is.
    assert results["blind_replan_fraction"]["still"] == 1.0
    assert results["meta"]["plugins"] == {"sim": f"{sim}:make", "still": f"{EXAMPLE}:make"}
    on_disk = json.loads((out / "results.json").read_text())
    assert set(on_disk["success"]) == {*vp2_push.MODELS, "sim", "still"}
    assert "| still |" in (out / "results.md").read_text()
    assert (out / "still_task000.gif").is_file() and (out / "sim_task000.gif").is_file()


def test_a_procgen_plug_in_gets_the_same_scenes_and_seeds_and_is_pooled(tmp_path, monkeypatch):
    sim = _write(tmp_path, "sim", SIMULATOR_PLUGIN)
    rec = _write(tmp_path, "rec", RECORDING_PLUGIN)
    log = tmp_path / "seeds.jsonl"
    monkeypatch.setenv("PLUGIN_LOG", str(log))
    runs = []
    for seed in (0, 1):
        args = procgen_planning.Args(
            preset="smoke",
            seed=seed,
            games="maze",
            models="oracle,random",
            dynamics=[f"sim={sim}:make", f"rec={rec}:make"],
            out=tmp_path / f"seed{seed}",
        )
        results = procgen_planning.main(args)
        episodes = results["maze"]["per_episode"]
        assert [r["actions"] for r in episodes["sim"]] == [r["actions"] for r in episodes["oracle"]]
        assert [r["success"] for r in episodes["sim"]] == [r["success"] for r in episodes["oracle"]]
        planner_seeds = [r["planner_seed"] for r in episodes["oracle"]]
        assert [r["planner_seed"] for r in episodes["rec"]] == planner_seeds
        recorded = [json.loads(line) for line in log.read_text().splitlines()]
        # Before each episode the planner's seed; before the first episode's GIF, that seed + 1.
        assert recorded == [planner_seeds[0], planner_seeds[0] + 1, *planner_seeds[1:]]
        log.unlink()
        runs.append(results)
    pooled = pool_planning.pool(runs, ["seed0", "seed1"])
    assert {"sim", "rec"} <= set(pooled["all"]) and "rec_vs_random" in pooled["tests"]
    assert pooled["all"]["sim"]["successes"] == pooled["all"]["oracle"]["successes"]
    # The same code spelled another way pools; other code under the same name is left out, and says so.
    runs[1]["meta"]["plugins"]["rec"] = "elsewhere/rec.py:make"
    assert "rec" in pool_planning.pool(runs, ["seed0", "seed1"])["all"]
    runs[1]["meta"]["plugin_digests"]["rec"] = "sha256:other"
    pooled = pool_planning.pool(runs, ["seed0", "seed1"])
    assert "rec" not in pooled["all"] and "rec" in pooled["meta"]["left_out"]
    assert pooled["meta"]["plugins"]["rec"] == [f"{rec}:make", "elsewhere/rec.py:make"]
    left_out = pool_planning.markdown_table(pooled).split("Left out", 1)[1]
    assert "rec" in left_out and "sim" not in left_out

    # Rerun seed 0 into the same --out with the simulator plug-in alone (no built-in model): it runs again,
    # and what --out held of the others, the recorder plug-in included, stays.
    again = procgen_planning.main(
        procgen_planning.Args(
            preset="smoke",
            seed=0,
            games="maze",
            models="",
            dynamics=[f"sim={sim}:make"],
            out=tmp_path / "seed0",
        )
    )
    assert again["maze"]["per_episode"]["rec"] == runs[0]["maze"]["per_episode"]["rec"]
    assert again["maze"]["per_episode"]["oracle"] == runs[0]["maze"]["per_episode"]["oracle"]
    assert [r["actions"] for r in again["maze"]["per_episode"]["sim"]] == [
        r["actions"] for r in runs[0]["maze"]["per_episode"]["oracle"]
    ]
    assert again["meta"]["plugins"] == {"sim": f"{sim}:make", "rec": f"{rec}:make"}
    assert again["meta"]["reused"]["maze"]["rec"] == str(tmp_path / "seed0")


def test_a_push_plug_in_of_an_earlier_run_in_out_is_kept(tmp_path):
    out = tmp_path / "out"
    first = vp2_push.main(
        vp2_push.Args(preset="smoke", models="random", dynamics=[f"still={EXAMPLE}:make"], out=out)
    )
    second = vp2_push.main(vp2_push.Args(preset="smoke", models="oracle", out=out))
    assert second["per_task"]["still"] == first["per_task"]["still"]
    assert second["meta"]["plugins"] == {"still": f"{EXAMPLE}:make"}
    assert second["meta"]["reused"]["still"] == str(out)
    assert second["success"]["oracle"] is not None and second["success"]["random"] is not None


FLAKY_PLUGIN = """
import os
import numpy as np
from gymnasium import spaces

class Still:
    context_frames, uses_state = 1, False
    def __init__(self, space):
        self.action_space = space
    def rollout(self, context, actions, state=None):
        if os.environ.get("PLUGIN_FAILS") and len(actions) > 1:  # passes the one-candidate probe at load
            raise RuntimeError("out of memory")
        return np.repeat(context[:, -1:], actions.shape[1], axis=1)

def make(env_id):
    return Still(spaces.Box(-1.0, 1.0, (4,), np.float32))
"""


def test_a_rerun_that_fails_keeps_the_plug_ins_earlier_rows(tmp_path, monkeypatch):
    (tmp_path / "flaky.py").write_text(FLAKY_PLUGIN)
    args = dict(
        preset="smoke", models="random", dynamics=[f"flaky={tmp_path / 'flaky.py'}:make"], out=tmp_path / "o"
    )
    first = vp2_push.main(vp2_push.Args(**args))
    monkeypatch.setenv("PLUGIN_FAILS", "1")
    with pytest.raises(RuntimeError, match="out of memory") as error:  # after the oracle ran and was written
        vp2_push.main(vp2_push.Args(**{**args, "models": "random,oracle"}))
    assert "raised by the rollout of plug-in 'flaky'" in error.value.__notes__[0]
    on_disk = json.loads((tmp_path / "o" / "results.json").read_text())
    assert on_disk["per_task"]["flaky"] == first["per_task"]["flaky"]  # kept while the rerun ran, and after
    assert on_disk["meta"]["reused"]["flaky"] == str(tmp_path / "o")


def test_a_bad_plug_in_stops_the_run_before_any_model_runs(tmp_path):
    for module, args in [
        (vp2_push, vp2_push.Args(preset="smoke", models="random", out=tmp_path / "push")),
        (
            procgen_planning,
            procgen_planning.Args(preset="smoke", games="maze", models="random", out=tmp_path / "pg"),
        ),
    ]:
        args.dynamics = [f"mine={tmp_path / 'missing.py'}:make"]
        with pytest.raises(SystemExit, match="--dynamics mine=.*missing.py:make: no file"):
            module.main(args)
        assert not list(args.out.glob("*.gif")) and not (args.out / "results.json").exists()


# Imports a neighbour file, counts its imports and its factory calls, refuses maze, records closes.
PER_GAME_PLUGIN = """
import os
import numpy as np
from gymnasium import spaces
from neighbour import SHIFT

IMPORTS = int(os.environ.get("PLUGIN_IMPORTS", "0")) + 1
os.environ["PLUGIN_IMPORTS"] = str(IMPORTS)

class Shift:
    context_frames, uses_state = 1, False
    action_space = spaces.Discrete(15)
    def rollout(self, context, actions, state=None):
        return np.roll(np.repeat(context[:, -1:], actions.shape[1], axis=1), SHIFT, axis=3)
    def close(self):
        with open(os.environ["PLUGIN_CLOSED"], "a") as f:
            f.write("closed\\n")

def make(env_id):
    if "maze" in env_id:
        raise FileNotFoundError("no checkpoint for " + env_id)
    return Shift()
"""


def test_every_games_plug_in_is_loaded_before_any_model_runs_and_closed_whatever_happens(
    tmp_path, monkeypatch
):
    (tmp_path / "neighbour.py").write_text("SHIFT = 2\n")
    (tmp_path / "pergame.py").write_text(PER_GAME_PLUGIN)
    closed = tmp_path / "closed.txt"
    monkeypatch.setenv("PLUGIN_CLOSED", str(closed))
    monkeypatch.delenv("PLUGIN_IMPORTS", raising=False)
    args = procgen_planning.Args(
        preset="smoke", games="jumper,maze", models="random", dynamics=[f"pg={tmp_path / 'pergame.py'}:make"]
    )
    args.out = tmp_path / "out"
    with pytest.raises(
        SystemExit,
        match=r"pg=.*pergame.py:make: make\('AdaWorld/Procgen-maze-v0'\) failed: "
        "FileNotFoundError: no checkpoint for AdaWorld/Procgen-maze-v0",
    ):
        procgen_planning.main(args)
    assert not (args.out / "results.json").exists()  # no game ran
    assert closed.read_text() == "closed\n"  # jumper's, loaded before maze's failed
    # Games that load: the file (and its neighbour) imported once, one factory call per game.
    closed.unlink()
    args.games = "jumper,caveflyer"
    results = procgen_planning.main(args)
    assert os.environ["PLUGIN_IMPORTS"] == "1"
    assert closed.read_text() == "closed\nclosed\n"
    assert all(results[g]["per_episode"]["pg"] for g in ("jumper", "caveflyer"))
    assert results["meta"]["plugin_digests"]["pg"].startswith("sha256:")


def test_models_may_name_plug_ins_and_may_be_empty_only_with_one(tmp_path):
    with pytest.raises(SystemExit, match="--models selects no model"):
        vp2_push.main(vp2_push.Args(preset="smoke", models="", out=tmp_path / "a"))
    with pytest.raises(SystemExit, match="--models selects no model"):
        procgen_planning.main(procgen_planning.Args(preset="smoke", models=" ", out=tmp_path / "b"))
    results = vp2_push.main(
        vp2_push.Args(preset="smoke", models="still", dynamics=[f"still={EXAMPLE}:make"], out=tmp_path / "c")
    )
    assert [n for n, rate in results["success"].items() if rate is not None] == ["still"]


def test_list_flags_given_twice_take_every_value():
    args = vp2_push.parse_args(
        ["--dynamics", "a=m:f", "--dynamics", "b=m:g", "c=./x.py:h", "--reuse", "A", "--reuse", "B"]
    )
    assert args.dynamics == ["a=m:f", "b=m:g", "c=./x.py:h"] and [str(d) for d in args.reuse] == ["A", "B"]
    assert parse_plugins(args.dynamics, ()) == {
        "a": "m:f",
        "b": "m:g",
        "c": "x.py:h",
    }  # one spelling per file
    assert vp2_push.parse_args([]).dynamics == []


def test_bad_dynamics_flags_exit_before_any_work():
    ok = parse_plugins(["mine=pkg.mod:make", "other=my/file.py:build"], ("oracle",))
    assert ok == {"mine": "pkg.mod:make", "other": "my/file.py:build"}
    for spec, message in [
        ("mine", "NAME=MODULE:FACTORY"),
        ("mine=pkg.mod", "NAME=MODULE:FACTORY"),
        ("mine=pkg.mod:", "NAME=MODULE:FACTORY"),
        ("my model=pkg.mod:make", "must be an identifier"),
        ("oracle=pkg.mod:make", "'oracle' is a built-in model"),
    ]:
        with pytest.raises(SystemExit, match=message):
            parse_plugins([spec], ("oracle",))
    with pytest.raises(SystemExit, match="the name 'a' is given twice"):
        parse_plugins(["a=x:y", "a=x:z"], ())


@pytest.mark.parametrize(
    "source, factory, message",
    [
        (None, "make", "no file"),
        ("raise ImportError('needs jax')", "make", "importing .* failed: ImportError: needs jax"),
        ("x = 1", "make", ".*plugin.py has no callable 'make'"),
        (
            "def make(env_id):\n    return object()",
            "make",
            r"make\('AdaWorld/Procgen-maze-v0'\) returned 'object', not a Dynamics",
        ),
        (
            "from gymnasium import spaces\nclass D:\n    action_space = spaces.Discrete(4)\n"
            "    context_frames, uses_state = 0, 'no'\n    def rollout(self, c, a, state=None): pass\n"
            "def make(env_id):\n    return D()",
            "make",
            r"action_space Discrete\(4\) is not the env's Discrete\(15\); context_frames must be an int >= 1, "
            r"got 0; uses_state must be a bool",
        ),
    ],
)
def test_a_broken_plug_in_is_named_with_what_is_wrong(tmp_path, source, factory, message):
    path = tmp_path / "plugin.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(SystemExit, match=f"--dynamics mine={path}:{factory}: {message}"):
        load_plugin("mine", f"{path}:{factory}", "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))


def test_a_plug_in_file_is_a_module_as_an_import_would_make_it(tmp_path):
    # Dataclasses (and pickling) look the defining module up in sys.modules.
    path = tmp_path / "dc.py"
    path.write_text(
        "from __future__ import annotations\nimport dataclasses, pickle\nimport numpy as np\n"
        "from gymnasium import spaces\n\n@dataclasses.dataclass\nclass Still:\n"
        "    action_space: spaces.Space\n    context_frames: int = 1\n    uses_state: bool = False\n"
        "    def rollout(self, context, actions, state=None):\n"
        "        return np.repeat(context[:, -1:], actions.shape[1], axis=1)\n\n"
        "def make(env_id):\n    return pickle.loads(pickle.dumps(Still(spaces.Discrete(15))))\n"
    )
    dynamics = load_plugin("dc", f"{path}:make", "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))
    assert dynamics.rollout(np.zeros((1, 1, 64, 64, 3), np.uint8), np.zeros((1, 2), np.int64)).shape == (
        1,
        2,
        64,
        64,
        3,
    )


@pytest.mark.parametrize(
    "body, probed, message",
    [
        (
            "return np.zeros((*actions.shape[:2], 64, 64, 3), np.float32)",
            r"uint8 frames, got float32 in \[0, 0\]: scale to 0-255 first",
            "must return uint8 frames, got float32",
        ),
        (
            "return np.zeros((*actions.shape[:2], 3, 64, 64), np.uint8)",
            r"frames \[1, 1, 64, 64, 3\], got \(1, 1, 3, 64, 64\)",
            r"must return frames \[2, 3, 64, 64, 3\], got \(2, 3, 3, 64, 64\)",
        ),
        (
            "return np.zeros((1, 3, 64, 64, 3), np.uint8)",
            r"frames \[1, 1, 64, 64, 3\], got \(1, 3, 64, 64, 3\)",
            r"must return frames \[2, 3, 64, 64, 3\], got \(1, 3, 64, 64, 3\)",
        ),
    ],
)
def test_what_a_plug_in_predicts_is_checked_and_named(tmp_path, body, probed, message):
    from benchmarks._common import CheckedPlugin

    path = tmp_path / "bad_frames.py"
    path.write_text(
        "import numpy as np\nfrom gymnasium import spaces\n\nclass D:\n    action_space = spaces.Discrete(15)\n"
        f"    context_frames, uses_state = 1, False\n    def rollout(self, context, actions, state=None):\n        {body}\n\n"
        "def make(env_id):\n    return D()\n"
    )
    # Loading probes one rollout, so the benchmark stops before any model runs ...
    with pytest.raises(
        SystemExit, match=rf"--dynamics odd=.*: a probe rollout \(1 candidate, 1 step\) must return {probed}"
    ):
        load_plugin("odd", f"{path}:make", "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))
    # ... and every later rollout is checked the same way.
    from bad_frames import D

    with pytest.raises(ValueError, match=f"plug-in 'odd': rollout {message}"):
        CheckedPlugin("odd", D()).rollout(np.zeros((2, 1, 64, 64, 3), np.uint8), np.zeros((2, 3), np.int64))


@pytest.mark.parametrize(
    "frames, described",
    [
        ("np.full((1, 1, 64, 64, 3), np.nan, np.float32)", "no finite value"),
        (
            "np.where(np.arange(3) == 1, np.nan, 200.0) * np.ones((1, 1, 64, 64, 3))",
            "NaN/inf values .*silent zeros",
        ),
        ("np.full((1, 1, 64, 64, 3), 200.0)", r"in \[200, 200\]: cast with frames.round\(\)"),
        ("np.full((1, 1, 64, 64, 3), -0.5, np.float32)", r"a \[-1, 1\] output\? map it to 0-255 first"),
        ("np.full((1, 1, 64, 64, 3), 300.0)", r"outside 0-255; rescale to 0-255"),
    ],
)
def test_float_frames_are_described_with_their_fix(tmp_path, frames, described):
    path = tmp_path / "float_frames.py"
    path.write_text(
        "import numpy as np\nfrom gymnasium import spaces\n\nclass D:\n    action_space = spaces.Discrete(15)\n"
        f"    context_frames, uses_state = 1, False\n    def rollout(self, context, actions, state=None):\n"
        f"        return {frames}\n\ndef make(env_id):\n    return D()\n"
    )
    with pytest.raises(SystemExit, match=described):
        load_plugin("odd", f"{path}:make", "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))


def test_plug_in_paths_that_miss_get_a_hint(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text("def make(env_id):\n    return None\n")
    space = spaces.Discrete(15)
    with pytest.raises(SystemExit, match=r"'.*/mine' is not a module name; a file path needs its \.py"):
        load_plugin("m", f"{tmp_path / 'mine'}:make", "AdaWorld/Procgen-maze-v0", space)
    with pytest.raises(
        SystemExit, match=r"no module named 'not_on_the_path_xyz' \(give its file as FILE\.py"
    ):
        load_plugin("m", "not_on_the_path_xyz:make", "AdaWorld/Procgen-maze-v0", space)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        SystemExit, match=r"no file other.py \(looked for .*other.py; relative paths start at"
    ):
        load_plugin("m", "other.py:make", "AdaWorld/Procgen-maze-v0", space)
    with pytest.raises(
        SystemExit, match=r"returned 'NoneType', not a Dynamics; it lacks rollout, action_space"
    ):
        load_plugin("m", "mine.py:make", "AdaWorld/Procgen-maze-v0", space)


def test_the_example_plug_in_predicts_the_last_frame():
    dynamics = load_plugin("still", f"{EXAMPLE}:make", "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))
    context = np.random.default_rng(0).integers(0, 256, (3, 2, 64, 64, 3), dtype=np.uint8)
    frames = dynamics.rollout(context, np.zeros((3, 4), np.int64))
    assert frames.shape == (3, 4, 64, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, np.repeat(context[:, -1:], 4, axis=1))


PROBED_PLUGIN = """
import os
import numpy as np
from gymnasium import spaces

class D:
    context_frames = 1
    def __init__(self):
        self.action_space = spaces.Discrete(15)
        self.uses_state = os.environ.get("PLUGIN_USES_STATE") == "1"
    def rollout(self, context, actions, state=None):
        with open(os.environ["PLUGIN_LOG"], "a") as f:
            f.write(f"rollout {np.asarray(actions).tolist()}\\n")
        if os.environ.get("PLUGIN_RAISES"):
            raise RuntimeError("weights not found")
        return np.zeros((*np.shape(actions)[:2], 64, 64, 3), np.float32)
    def close(self):
        with open(os.environ["PLUGIN_LOG"], "a") as f:
            f.write("close\\n")

def make(env_id):
    return D()
"""


def test_a_plug_in_refused_at_load_is_closed_and_its_probe_is_fixed(tmp_path, monkeypatch):
    (tmp_path / "probed.py").write_text(PROBED_PLUGIN)
    log = tmp_path / "log.txt"
    monkeypatch.setenv("PLUGIN_LOG", str(log))
    target = f"{tmp_path / 'probed.py'}:make"
    with pytest.raises(SystemExit, match=r"probe rollout \(1 candidate, 1 step\) must return uint8 frames"):
        load_plugin("p", target, "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))
    assert log.read_text().splitlines() == ["rollout [[0]]", "close"]  # the first action, then closed
    log.unlink()
    monkeypatch.setenv("PLUGIN_RAISES", "1")  # its own error in the probe: named, shown, closed
    with pytest.raises(SystemExit, match=r"probe rollout .* failed: RuntimeError: weights not found"):
        load_plugin("p", target, "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))
    assert log.read_text().splitlines()[-1] == "close"
    log.unlink()
    monkeypatch.setenv("PLUGIN_USES_STATE", "1")  # a simulator-backed plug-in is not probed from frames
    load_plugin("p", target, "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))
    assert not log.exists()


def test_a_plug_ins_missing_dependency_is_its_own_error_not_a_missing_plug_in(tmp_path, monkeypatch):
    (tmp_path / "wm_diff.py").write_text("import wm_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        SystemExit, match=r"importing wm_diff failed: ModuleNotFoundError: .*wm_missing_dependency"
    ):
        load_plugin("m", "wm_diff:make", "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))
    with pytest.raises(SystemExit, match=r"'./wm_diff' is not a module name; a file path needs its .py"):
        load_plugin("m", "./wm_diff:make", "AdaWorld/Procgen-maze-v0", spaces.Discrete(15))
