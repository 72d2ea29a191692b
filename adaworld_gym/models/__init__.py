"""Neural models: the latent action model, the diffusion world model, adapters and the bundle joining them."""

from adaworld_gym.models.adapters import (
    ActionCodebook,
    ActionMLP,
    LatentAdapter,
    LatentOptions,
    LatentPassthrough,
    load_adapter,
)
from adaworld_gym.models.bundle import AdaWorldBundle, tiny_random_bundle
from adaworld_gym.models.latent_action import (
    PRESETS,
    REGULARIZERS,
    LatentActionModel,
    LatentActionOutput,
    lam_preset,
)
from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset

__all__ = [
    "PRESETS",
    "REGULARIZERS",
    "ActionCodebook",
    "ActionMLP",
    "AdaWorldBundle",
    "DiffusionWorldModel",
    "LatentActionModel",
    "LatentActionOutput",
    "LatentAdapter",
    "LatentOptions",
    "LatentPassthrough",
    "lam_preset",
    "load_adapter",
    "tiny_random_bundle",
    "world_model_preset",
]
