"""Where tiled results go: plain arrays, multiscale pyramids and OME-Zarr on disk.

A store receives one ZoR block at a time through ``write(zor, block)``. Stores never see
the model or the grid; the engine hands them image-coordinate slices. No torch, no Qt.
"""

from __future__ import annotations

from .array import ArrayStore, LabelsStore, PyramidStore, Store, pyramid_shapes

__all__ = ["Store", "ArrayStore", "LabelsStore", "PyramidStore", "pyramid_shapes"]
