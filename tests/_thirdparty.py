"""Import third-party model libraries (torchvision, timm, smp, MONAI) beside CPU torch.

PyPI's torchvision wheel is a CUDA build: next to the CPU build of torch its C extension does
not load and ``import torchvision`` fails with ``RuntimeError: operator torchvision::nms does
not exist`` (it registers fake kernels for two operators the missing extension would have
defined). The model code we need (``torchvision.models.resnet``) is pure Python, so when the
real extension is missing we define those two operator schemas ourselves and import again.
Nothing is changed when torchvision imports on its own.

Used by ``tests/zoo.py``, ``tests/test_zoo.py`` and ``scripts/compat_table.py``.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_SHIM_LIBRARY = None  # the torch.library.Library that holds the schemas; must stay alive


def import_torchvision() -> ModuleType:
    """Import torchvision, defining its two operator schemas first if its extension is missing.

    Returns
    -------
    module
        The ``torchvision`` module.

    Raises
    ------
    ImportError
        If torchvision is not installed.
    """
    global _SHIM_LIBRARY
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    import torch

    if _SHIM_LIBRARY is None:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _SHIM_LIBRARY = lib
    return importlib.import_module("torchvision")


def import_smp() -> ModuleType:
    """``segmentation_models_pytorch`` (imports torchvision and timm, so shim first)."""
    import_torchvision()
    return importlib.import_module("segmentation_models_pytorch")


def import_monai() -> ModuleType:
    """``monai`` (imports torchvision lazily in places, so shim first when it is installed)."""
    try:
        import_torchvision()
    except ImportError:
        pass
    return importlib.import_module("monai")


def version(package: str) -> str:
    """Installed version of a distribution, or ``"not installed"``."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
