"""adaworld-gym: latent-action diffusion world models from video, served as Gymnasium environments.

Importing the package registers the real simulators (``AdaWorld/Procgen-<game>-v0``,
``AdaWorld/RobosuitePush-v0``) with Gymnasium.
"""

from adaworld_gym._version import __version__
from adaworld_gym.registration import register_envs

register_envs()

__all__ = ["__version__", "register_envs"]
