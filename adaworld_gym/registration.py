"""Gymnasium ids for everything the package provides, registered once on import.

An id names its game (``AdaWorld/Procgen-heist-v0``) or shipped world model (``AdaWorld/WorldModel-<name>-v0``):
``gymnasium.make`` with a ``game`` or ``name`` keyword naming another one raises ``ValueError`` (gymnasium would
quietly let the keyword win, so ``make("AdaWorld/Procgen-heist-v0", game="maze")`` ran maze). The registered
kwargs carry the id's own value a second time (``registered_game`` / ``registered_name``) for that check.
"""

from __future__ import annotations

from typing import Any

import gymnasium

from adaworld_gym.sims.games import PROCGEN_GAMES
from adaworld_gym.sims.procgen import ProcgenEnv

PUSH_EPISODE_STEPS = 15
WORLD_MODEL_EPISODE_STEPS = 50  # imagined episodes' default length (Procgen and any bundle)


def procgen_env_id(game: str) -> str:
    return f"AdaWorld/Procgen-{game}-v0"


def procgen_game(env_id: str) -> str | None:
    """The game of a real Procgen id (``AdaWorld/Procgen-heist-v0`` -> ``heist``); None for other ids."""
    game = env_id.removeprefix("AdaWorld/Procgen-").removesuffix("-v0")
    return game if procgen_env_id(game) == env_id else None


def check_id_keyword(env_id: str, key: str, given: Any, registered: Any, other_id: str | None = None) -> None:
    """Refuse ``key=given`` when the id ``env_id`` stands for ``key=registered`` (None: not made by id)."""
    if registered is None or given == registered:
        return
    hint = f": make {other_id} instead" if other_id is not None and other_id in gymnasium.registry else ""
    raise ValueError(f"{env_id} is {key}={registered!r}; it cannot be made with {key}={given!r}{hint}")


def make_procgen_env(game: str, registered_game: str | None = None, **kwargs: Any) -> ProcgenEnv:
    """``gymnasium.make`` entry point of ``AdaWorld/Procgen-<game>-v0``: :class:`ProcgenEnv`, refusing a ``game``
    keyword other than the id's."""
    if registered_game is not None:
        check_id_keyword(procgen_env_id(registered_game), "game", game, registered_game, procgen_env_id(game))
    return ProcgenEnv(game, **kwargs)


make_procgen_env.metadata = ProcgenEnv.metadata  # read by gymnasium.make (render modes)


def register_envs() -> None:
    """Register the real-simulator envs; safe to call more than once."""
    registry = gymnasium.envs.registration.registry
    for game in PROCGEN_GAMES:
        env_id = procgen_env_id(game)
        if env_id not in registry:
            gymnasium.register(
                id=env_id,
                entry_point="adaworld_gym.registration:make_procgen_env",
                kwargs={"game": game, "registered_game": game},
            )
    if "AdaWorld/RobosuitePush-v0" not in registry:
        gymnasium.register(
            id="AdaWorld/RobosuitePush-v0",
            entry_point="adaworld_gym.sims.push:RobosuitePushEnv",
            max_episode_steps=PUSH_EPISODE_STEPS,
        )
    # Imagined environments over any adapted bundle: gymnasium.make("AdaWorld/WorldModel-v0", bundle=PATH).
    # gymnasium.make ends their episodes with a TimeLimit wrapper (its max_episode_steps never reaches the env,
    # whose own limit the entry points turn off); make_vec passes max_episode_steps to the vector env.
    envs = "adaworld_gym.envs.world_model_env"
    if "AdaWorld/WorldModel-v0" not in registry:
        gymnasium.register(
            id="AdaWorld/WorldModel-v0",
            entry_point=f"{envs}:make_world_model_env",
            vector_entry_point=f"{envs}:WorldModelVectorEnv",
            max_episode_steps=WORLD_MODEL_EPISODE_STEPS,
        )
    if "AdaWorld/GoalWorldModel-v0" not in registry:
        gymnasium.register(
            id="AdaWorld/GoalWorldModel-v0",
            entry_point=f"{envs}:make_goal_env",
            max_episode_steps=WORLD_MODEL_EPISODE_STEPS,
        )
    # World models of the real simulators over the bundles shipped in adaworld_gym/assets/bundles/ (see
    # adaworld_gym/envs/shipped.py); making one before its bundle is there raises an error naming the path.
    for name in shipped_world_model_names():
        env_id = f"AdaWorld/WorldModel-{name}-v0"
        if env_id not in registry:
            gymnasium.register(
                id=env_id,
                entry_point="adaworld_gym.envs.shipped:gymnasium_shipped_env",
                vector_entry_point="adaworld_gym.envs.shipped:gymnasium_shipped_vector_env",
                kwargs={"name": name, "registered_name": name},
                max_episode_steps=PUSH_EPISODE_STEPS
                if name == "RobosuitePush"
                else WORLD_MODEL_EPISODE_STEPS,
            )


def shipped_world_model_names() -> list[str]:
    """``RobosuitePush`` and ``Procgen-<game>``: the world models registered as ``AdaWorld/WorldModel-<name>-v0``.

    Kept free of torch imports so ``import adaworld_gym`` stays light; ``envs/shipped.py`` holds the loaders.
    """
    return ["RobosuitePush", *(f"Procgen-{game}" for game in PROCGEN_GAMES)]
