"""Built-in architectures, the model registry and loaders (imports torch)."""

from .registry import (
    DEFAULT_MODEL,
    LoadedModel,
    ModelLoadError,
    builtin_models,
    load_model,
    save_checkpoint,
)
from .unet import UNet, UNetConfig

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelLoadError",
    "UNet",
    "UNetConfig",
    "builtin_models",
    "load_model",
    "save_checkpoint",
]
