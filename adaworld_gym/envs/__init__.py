"""World models served as Gymnasium environments (single, vectorised, goal-conditioned, SB3, shipped bundles)."""

from adaworld_gym.envs.shipped import (
    SHIPPED_WORLD_MODELS,
    make_shipped_env,
    make_shipped_vector_env,
    shipped_bundle_dir,
    shipped_env_id,
)
from adaworld_gym.envs.world_model_env import (
    GoalWorldModelEnv,
    SB3VecEnvAdapter,
    WorldModelEnv,
    WorldModelVectorEnv,
    goal_reward,
)

__all__ = [
    "SHIPPED_WORLD_MODELS",
    "GoalWorldModelEnv",
    "SB3VecEnvAdapter",
    "WorldModelEnv",
    "WorldModelVectorEnv",
    "goal_reward",
    "make_shipped_env",
    "make_shipped_vector_env",
    "shipped_bundle_dir",
    "shipped_env_id",
]
