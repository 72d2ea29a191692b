"""adaworld-gym: latent-action diffusion world models from video, served as Gymnasium environments.

Importing the package registers with Gymnasium the real simulators (``AdaWorld/Procgen-<game>-v0``,
``AdaWorld/RobosuitePush-v0``) and the imagined environments over an adapted bundle
(``AdaWorld/WorldModel-v0``, ``AdaWorld/GoalWorldModel-v0``; pass ``bundle=PATH``).
"""

from adaworld_gym._version import __version__
from adaworld_gym.registration import register_envs

register_envs()

__all__ = ["__version__", "register_envs"]
