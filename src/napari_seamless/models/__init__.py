"""Built-in architectures, the model loaders and output conventions (imports torch)."""

from .loaders import (
    ACTIVATIONS,
    DEFAULT_MODEL,
    ConventionWarning,
    LoadedModel,
    ModelLoadError,
    ModelSource,
    builtin_models,
    declared_halo_warning,
    load_model,
)
from .loaders.files import save_checkpoint
from .unet import UNet, UNetConfig, he_init

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_MODEL",
    "ConventionWarning",
    "LoadedModel",
    "ModelLoadError",
    "ModelSource",
    "UNet",
    "UNetConfig",
    "builtin_models",
    "declared_halo_warning",
    "he_init",
    "load_model",
    "save_checkpoint",
]
