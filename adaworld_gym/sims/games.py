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


DISTRIBUTION_MODES = ("easy", "hard", "extreme", "memory", "exploration")  # Procgen's difficulty settings
