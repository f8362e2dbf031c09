"""Built-in models: the bundled nuclei U-Net, a random U-Net, the paper's architectures."""

from __future__ import annotations

from pathlib import Path

import torch

from ..unet import UNet, he_init
from .base import LoadedModel
from .files import from_checkpoint

__all__ = ["WEIGHTS", "DEFAULT_MODEL", "builtin_models", "is_builtin", "load_builtin"]

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "nuclei"


def builtin_models() -> dict[str, str]:
    """Names of the built-in models with a one-line description."""
    return {
        "nuclei": "U-Net (depth 4, width 8) trained on fluorescent nuclei; 2 classes (default)",
        "unet-random": "U-Net (depth 4, width 16) with random weights, 1 channel, 2 classes",
        "unet4-random": (
            "U-Net (depth 4, width 16), He-initialised random weights, 1 channel, 4 classes: "
            "the paper's Table 3 setting"
        ),
    }


def is_builtin(name: str) -> bool:
    """True for a built-in model name or a paper architecture (random weights)."""
    from ..architectures import ARCHITECTURES

    return name in builtin_models() or name in ARCHITECTURES


def load_builtin(name: str) -> LoadedModel:
    """Load a built-in model (no network: the nuclei weights ship in the package).

    Parameters
    ----------
    name : str
        ``"nuclei"``, ``"unet-random"``, ``"unet4-random"`` (4 classes, He
        initialisation: see :func:`~napari_seamless.models.unet.he_init`) or a key of
        :data:`~napari_seamless.models.architectures.ARCHITECTURES` (1 channel, 2 classes,
        the paper's widths, seeded random weights).

    Returns
    -------
    LoadedModel
        Two-class softmax models normalised with 1-99.8 percentiles.
    """
    if name == "nuclei":
        obj = torch.load(WEIGHTS / "nuclei_unet.pt", map_location="cpu", weights_only=True)
        loaded = from_checkpoint(obj, "nuclei")
        loaded.name = "nuclei"
        return loaded
    if name == "unet-random":
        torch.manual_seed(0)
        return LoadedModel(UNet(width=16).eval(), name, 2, 1, {"kind": "random"})
    if name == "unet4-random":
        module = he_init(UNet(width=16, classes=4), seed=0).eval()
        return LoadedModel(module, name, 2, 1, {"kind": "random", "init": "he"})
    from ..architectures import ARCHITECTURES

    torch.manual_seed(0)
    module = ARCHITECTURES[name](in_channels=1, classes=2, ndim=2)
    return LoadedModel(module.eval(), name, 2, 1, {"kind": "random", "paper": True})
