"""napari-seamless: exact tile-based segmentation inference, streamed into napari.

Public API (re-exports only; importing this package imports neither torch nor Qt):

>>> import napari_seamless as ns
>>> model = ns.load_model("nuclei").module              # doctest: +SKIP
>>> ns.receptive_field(model)                           # doctest: +SKIP
>>> labels = ns.segment(model, image, tile=512)         # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ReceptiveField": "analysis",
    "receptive_field": "analysis",
    "verify_halo": "analysis",
    "NotTileableError": "analysis",
    "SeamlessError": "errors",
    "ArgumentError": "errors",
    "ArgumentTypeError": "errors",
    "Tile": "grid",
    "TileGrid": "grid",
    "TileSizeError": "grid",
    "ArrayStore": "stores",
    "PyramidStore": "stores",
    "PercentileNormalization": "preprocessing",
    "Predictor": "engine",
    "TileEvent": "engine",
    "ChannelError": "engine",
    "predict": "engine",
    "segment": "engine",
    "load_model": "models",
    "ModelLoadError": "models",
    "UNet": "models",
    "label_instances": "instances",
    "InstanceResult": "instances",
    "InstanceError": "instances",
    "run_on_cluster": "engine.cluster",
    "ClusterRun": "engine.cluster",
    "DaskExecutor": "engine.cluster",
    "local_cluster": "engine.cluster",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'napari_seamless' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
