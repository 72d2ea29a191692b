"""The Procgen games and how they are split between pretraining and the adaptation benchmark.

This is the one place that names the split; the README repeats it.
"""

PROCGEN_GAMES: tuple[str, ...] = (
    "bigfish",
    "bossfight",
    "caveflyer",
    "chaser",
    "climber",
    "coinrun",
    "dodgeball",
    "fruitbot",
    "heist",
    "jumper",
    "leaper",
    "maze",
    "miner",
    "ninja",
    "plunder",
    "starpilot",
)

# Held out of latent-action and world-model pretraining; used only by the adaptation benchmark.
ADAPTATION_GAMES: tuple[str, ...] = ("bossfight", "chaser", "coinrun", "leaper")

# The rest is pretraining data. Heist, Jumper, Maze and CaveFlyer stay here, as in the paper,
# because the planning benchmark uses them.
PRETRAIN_GAMES: tuple[str, ...] = tuple(g for g in PROCGEN_GAMES if g not in ADAPTATION_GAMES)

# Level ranges: training levels for data collection, held-out levels for evaluation.
TRAIN_LEVELS = (0, 9000)
TEST_LEVELS = (9000, 10000)


def check_game(game: str) -> str:
    if game not in PROCGEN_GAMES:
        raise ValueError(f"unknown Procgen game {game!r}; known games: {', '.join(PROCGEN_GAMES)}")
    return game


# Procgen's difficulty settings that a ProcgenEnv can play. Exploration mode is left out: Procgen runs it on one
# fixed level of its own choosing and refuses a level range, which would bypass the train/test split.
DISTRIBUTION_MODES = ("easy", "hard", "extreme", "memory")
# Procgen's C code accepts extreme and memory only for these games and kills the process for any other.
EXTREME_GAMES = ("chaser", "dodgeball", "leaper", "starpilot")
MEMORY_GAMES = ("caveflyer", "dodgeball", "heist", "jumper", "maze", "miner")
# Steps before Procgen ends an episode on its own (its ``timeout``): 1000 unless the game sets another.
_TIMEOUTS = {"bigfish": 6000, "bossfight": 4000, "leaper": 500, "maze": 500, "plunder": 4000}


def check_distribution_mode(game: str, mode: str) -> str:
    """``mode`` if Procgen supports it for ``game``; a ValueError naming the games that do otherwise."""
    if mode not in DISTRIBUTION_MODES:
        raise ValueError(f"unknown distribution_mode {mode!r}; choose from {DISTRIBUTION_MODES}")
    games = {"extreme": EXTREME_GAMES, "memory": MEMORY_GAMES}.get(mode)
    if games is not None and game not in games:
        raise ValueError(f"Procgen has no {mode!r} mode for {game}; only for {', '.join(games)}")
    return mode


def episode_timeout(game: str, mode: str) -> int:
    """The number of steps after which Procgen ends an episode of ``game`` that nothing else ended."""
    return 2000 if (game, mode) == ("jumper", "memory") else _TIMEOUTS.get(game, 1000)
