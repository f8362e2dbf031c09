"""Where tiled results go: plain arrays, multiscale pyramids and OME-Zarr on disk.

A store receives one ZoR block at a time through ``write(zor, block)``. Stores never see
the model or the grid; the engine hands them image-coordinate slices. No torch, no Qt.
"""

from __future__ import annotations

from .array import ArrayStore, LabelsStore, Store
from .ome_zarr import Level0Writer, OmeZarrError, OmeZarrStore, level_chunks
from .pyramid import PyramidStore, level_slices, pyramid_shapes
from .tiff import plain_json, read_tiff_record, write_tiff_pyramid

__all__ = [
    "ArrayStore",
    "LabelsStore",
    "Level0Writer",
    "OmeZarrError",
    "OmeZarrStore",
    "PyramidStore",
    "Store",
    "level_chunks",
    "level_slices",
    "plain_json",
    "pyramid_shapes",
    "read_tiff_record",
    "write_tiff_pyramid",
]
