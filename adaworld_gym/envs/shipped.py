"""Registered world-model environments over the bundles shipped inside the package.

``gymnasium.make("AdaWorld/WorldModel-Procgen-heist-v0")`` (one id per Procgen game) and
``gymnasium.make("AdaWorld/WorldModel-RobosuitePush-v0")`` load the adapted bundle at

    adaworld_gym/assets/bundles/procgen-<game>/
    adaworld_gym/assets/bundles/robosuite-push/

(:func:`shipped_bundle_dir`), checking that its action space is the real environment's (``Discrete(15)`` for
Procgen, ``Box(-1, 1, (4,), float32)`` for RobosuitePush). The shipped bundles (``scripts/build_shipped_bundles.py``)
share the package's world model and LAM and add a zero-shot adapter: each action's mean latent action over
1,500 labelled real transitions (Procgen), or an MLP pre-fit on 100 scripted push episodes; no finetuning.
Bundles whose reward head predicts held-out real rewards (``assets/bundles/rewards.json``: chaser, coinrun,
leaper, ninja and plunder) pay rewards and terminate; the others pay 0 unless a goal image is given at reset (attach a head with
``adaworld train-reward --bundle``). A missing bundle raises ``FileNotFoundError`` naming the path and how to
create one. Any bundle directory over the same action space works in its place: ``gymnasium.make(id, bundle=PATH)``
(one whose ``meta["env_id"]`` names another real env than the id's warns); every other keyword goes to
:class:`WorldModelEnv` (or, with ``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``,
to :class:`WorldModelVectorEnv`).

Imagined RobosuitePush episodes are truncated after 15 steps, like the real ones; Procgen ones after
``WorldModelEnv``'s default of 50 (pass ``max_episode_steps`` to ``gymnasium.make``, ``make_vec`` or the
make functions below to change either). Their ``metadata["render_fps"]`` is the real env's (1 for RobosuitePush,
whose actions last 1 s; 15 for Procgen), so played and recorded episodes run at the real pace. An id's ``name``
keyword is fixed: ``make("AdaWorld/WorldModel-Procgen-coinrun-v0", name="RobosuitePush")`` raises ``ValueError``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from adaworld_gym.envs.world_model_env import WorldModelEnv, WorldModelVectorEnv
from adaworld_gym.registration import PUSH_EPISODE_STEPS, check_id_keyword
from adaworld_gym.sims.games import PROCGEN_GAMES

__all__ = [
    "SHIPPED_WORLD_MODELS",
    "check_recorded_env",
    "make_shipped_env",
    "make_shipped_vector_env",
    "shipped_bundle_dir",
    "shipped_bundles_root",
    "shipped_env_id",
]

PROCGEN_ACTIONS = 15


def _procgen_space() -> spaces.Space:
    return spaces.Discrete(PROCGEN_ACTIONS)


def _push_space() -> spaces.Space:
    return spaces.Box(-1.0, 1.0, (4,), np.float32)


# name -> (bundle folder under assets/bundles, real env id, action space factory, default env kwargs)
SHIPPED_WORLD_MODELS: dict[str, tuple[str, str, Any, dict[str, Any]]] = {
    "RobosuitePush": (
        "robosuite-push",
        "AdaWorld/RobosuitePush-v0",
        _push_space,
        {"max_episode_steps": PUSH_EPISODE_STEPS},
    ),
    **{
        f"Procgen-{game}": (f"procgen-{game}", f"AdaWorld/Procgen-{game}-v0", _procgen_space, {})
        for game in PROCGEN_GAMES
    },
}


# Each real env's metadata["render_fps"] (sims.push.CONTROL_FREQ: one push action lasts 1 s; ProcgenEnv's 15),
# written out since importing sims.push loads MuJoCo and robosuite (tests compare them with the real classes).
_REAL_RENDER_FPS = {"RobosuitePush": 1, **{f"Procgen-{game}": 15 for game in PROCGEN_GAMES}}


def _real_pace(env: Any, name: str) -> Any:
    """``env`` with its real env's frame rate in (a copy of) its metadata; warns when its bundle records that
    it was adapted to another real env than ``name``'s (a ``bundle=`` of another game, say)."""
    env.metadata = {**env.metadata, "render_fps": _REAL_RENDER_FPS[name]}
    recorded, real_id = env.bundle.meta.get("env_id"), _entry(name)[1]
    if isinstance(recorded, str) and recorded != real_id:
        warnings.warn(
            f"{shipped_env_id(name)}: the bundle given was adapted to {recorded}, not {real_id}; its frames and "
            f'actions are {recorded}\'s (gymnasium.make("AdaWorld/WorldModel-v0", bundle=...) takes any bundle)',
            stacklevel=_caller_level(),
        )
    return env


def _caller_level() -> int:
    """``warnings.warn``'s stacklevel, called right here, that points at the user's line: past this package's
    frames and Gymnasium's (``gymnasium.make`` and ``make_vec`` reach the env through different depths)."""
    frame, level = sys._getframe(2), 2  # the frame that calls warnings.warn, then its callers
    inside = (str(Path(__file__).resolve().parents[1]), f"{os.sep}gymnasium{os.sep}")
    while frame is not None and any(part in frame.f_code.co_filename for part in inside):
        frame, level = frame.f_back, level + 1
    return level


def shipped_env_id(name: str) -> str:
    """The Gymnasium id of a shipped world model, e.g. ``AdaWorld/WorldModel-Procgen-heist-v0``."""
    return f"AdaWorld/WorldModel-{name}-v0"


def shipped_bundles_root() -> Path:
    """The folder holding the shipped bundles (``adaworld_gym.defaults.ASSETS``/bundles, read at call time)."""
    from adaworld_gym import defaults

    return Path(defaults.ASSETS) / "bundles"


def shipped_bundle_dir(name: str) -> Path:
    """Where the bundle of ``name`` (a key of :data:`SHIPPED_WORLD_MODELS`) is looked for.

    Read from ``adaworld_gym.defaults.ASSETS`` at call time, so a relocated asset directory is followed.
    """
    return shipped_bundles_root() / _entry(name)[0]


def _entry(name: str) -> tuple[str, str, Any, dict[str, Any]]:
    if name not in SHIPPED_WORLD_MODELS:
        raise ValueError(f"unknown shipped world model {name!r}; known: {', '.join(SHIPPED_WORLD_MODELS)}")
    return SHIPPED_WORLD_MODELS[name]


def _bundle_path(name: str, bundle: Any) -> Any:
    if bundle is not None:
        return bundle
    path = shipped_bundle_dir(name)
    if not (path / "bundle.json").is_file():
        real_id = _entry(name)[1]
        raise FileNotFoundError(
            f"{shipped_env_id(name)}: no adapted world-model bundle is shipped in this installation "
            f"({path} is missing). Create one by adapting a pretrained world model to {real_id} with "
            f"`adaworld adapt` and save the bundle directory (AdaWorldBundle.save_pretrained) at {path}, "
            f'or pass your own: gymnasium.make("{shipped_env_id(name)}", bundle="path/to/bundle")'
        )
    return path


def make_shipped_env(name: str, bundle: str | os.PathLike | None = None, **kwargs: Any) -> WorldModelEnv:
    """:class:`WorldModelEnv` over the shipped bundle of ``name`` (or ``bundle``), action space checked."""
    _, _, space, defaults = _entry(name)
    path = _bundle_path(name, bundle)
    return _real_pace(WorldModelEnv(path, expected_action_space=space(), **{**defaults, **kwargs}), name)


def _check_registered_name(name: str, registered_name: str | None) -> None:
    if registered_name is not None:
        env_id = shipped_env_id(registered_name)
        check_id_keyword(env_id, "name", name, registered_name, shipped_env_id(name))


def gymnasium_shipped_env(
    name: str, bundle: str | os.PathLike | None = None, registered_name: str | None = None, **kwargs: Any
) -> WorldModelEnv:
    """``gymnasium.make`` entry point: :func:`make_shipped_env` without its own episode limit, since the
    registered ``TimeLimit`` wrapper (15 steps for push, 50 for Procgen, or ``max_episode_steps=N``) ends them.
    ``registered_name`` is the id's own name: a ``name`` keyword naming another model raises ``ValueError``."""
    _check_registered_name(name, registered_name)
    return make_shipped_env(name, bundle, **kwargs, max_episode_steps=None)


gymnasium_shipped_env.metadata = WorldModelEnv.metadata  # read by gymnasium.make (see make_world_model_env)


def make_shipped_vector_env(
    name: str, bundle: str | os.PathLike | None = None, **kwargs: Any
) -> WorldModelVectorEnv:
    """:class:`WorldModelVectorEnv` over the shipped bundle of ``name`` (or ``bundle``), action space checked."""
    _, _, space, defaults = _entry(name)
    path = _bundle_path(name, bundle)
    return _real_pace(
        WorldModelVectorEnv(path, expected_action_space=space(), **{**defaults, **kwargs}), name
    )


def gymnasium_shipped_vector_env(
    name: str, bundle: str | os.PathLike | None = None, registered_name: str | None = None, **kwargs: Any
) -> WorldModelVectorEnv:
    """``gymnasium.make_vec`` entry point: :func:`make_shipped_vector_env`, refusing a ``name`` keyword other than
    the id's (``registered_name``)."""
    _check_registered_name(name, registered_name)
    return make_shipped_vector_env(name, bundle, **kwargs)


def check_recorded_env(found: Iterable[str], expected: str | None, what: str, one_at_a_time: str) -> None:
    """Refuse data recorded in several envs (``found``: its episodes' env ids), or in another adaptable env than
    ``expected``. The action-space check cannot tell Procgen games apart (all ``Discrete(15)``); env ids of no
    adaptable env (custom or synthetic recordings) are left to the caller. ``one_at_a_time``: what to do
    instead of mixing ("adapt to one env at a time")."""
    found = sorted(set(found))
    if len(found) > 1:
        raise ValueError(f"{what} mixes episodes of {len(found)} envs ({', '.join(found)}): {one_at_a_time}")
    if expected is None or not found or found[0] == expected:
        return
    if found[0] in {entry[1] for entry in SHIPPED_WORLD_MODELS.values()}:
        raise ValueError(f"{what} was recorded in {found[0]}, not in {expected}: use episodes of {expected}")
