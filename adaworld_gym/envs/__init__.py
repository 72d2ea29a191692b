"""World models served as Gymnasium environments (single, vectorised, goal-conditioned, SB3)."""

from adaworld_gym.envs.world_model_env import (
    GoalWorldModelEnv,
    SB3VecEnvAdapter,
    WorldModelEnv,
    WorldModelVectorEnv,
    goal_reward,
)

__all__ = ["GoalWorldModelEnv", "SB3VecEnvAdapter", "WorldModelEnv", "WorldModelVectorEnv", "goal_reward"]
