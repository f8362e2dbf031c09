"""Model registry (kept for compatibility): the loaders live in :mod:`.loaders`.

No network access: the default weights ship inside the package.
"""

from __future__ import annotations

from .loaders import (
    DEFAULT_MODEL,
    WEIGHTS,
    LoadedModel,
    ModelLoadError,
    builtin_models,
    declared_halo_warning,
    load_model,
)
from .loaders.base import shape_of as _shape_of
from .loaders.files import CHECKPOINT_FORMAT, save_checkpoint
from .loaders.files import from_checkpoint as _from_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelLoadError",
    "WEIGHTS",
    "builtin_models",
    "declared_halo_warning",
    "load_model",
    "save_checkpoint",
]

# private names some callers used before the loaders package existed
_ = (_shape_of, _from_checkpoint)
