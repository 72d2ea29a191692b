"""Neural models: the latent action model (more to come: world model, adapters)."""

from adaworld_gym.models.latent_action import (
    PRESETS,
    REGULARIZERS,
    LatentActionModel,
    LatentActionOutput,
    lam_preset,
)

__all__ = ["PRESETS", "REGULARIZERS", "LatentActionModel", "LatentActionOutput", "lam_preset"]
