"""Where tiled results go: plain arrays, multiscale pyramids and OME-Zarr on disk.

A store receives one ZoR block at a time through ``write(zor, block)``. Stores never see
the model or the grid; the engine hands them image-coordinate slices. No torch, no Qt.
"""

from __future__ import annotations

from .array import ArrayStore, LabelsStore, Store
from .pyramid import PyramidStore, level_slices, pyramid_shapes

__all__ = ["Store", "ArrayStore", "LabelsStore", "PyramidStore", "level_slices", "pyramid_shapes"]
