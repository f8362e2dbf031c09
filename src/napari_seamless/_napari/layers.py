"""Overlay and result layers: the ZoR grid, the halo box, the live labels pyramid.

Functions here build layer *data* from a :class:`~napari_seamless.grid.TileGrid`; the
widget adds or updates the layers on the GUI thread. Only napari's public API is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..grid import Tile, TileGrid

GRID_NAME = "seamless ZoR grid"
HALO_NAME = "seamless halo"
GRID_COLOR = "yellow"
HALO_COLOR = "cyan"


def grid_lines(grid: TileGrid) -> np.ndarray:
    """ZoR boundary lines of a 2D grid as napari Vectors data.

    Returns
    -------
    numpy.ndarray, shape (n_lines, 2, 2), float
        One ``[start, direction]`` pair (Y, X, pixels) per line: a horizontal line at
        every row boundary and a vertical one at every column boundary, image edges
        included, so ``n_lines = (rows + 1) + (cols + 1)``.
    """
    if grid.ndim != 2:
        raise ValueError("the grid overlay is drawn for 2D images")
    h, w = grid.shape
    rows = [[[y, 0.0], [0.0, w]] for y in grid.boundaries(0)]
    cols = [[[0.0, x], [h, 0.0]] for x in grid.boundaries(1)]
    return np.asarray(rows + cols, dtype=float).reshape(-1, 2, 2)


def tile_boxes(grid: TileGrid, tile: Tile) -> list[np.ndarray]:
    """The halo box (input window, clipped to the image) and the ZoR of ``tile``.

    Returns
    -------
    list of numpy.ndarray, each shape (4, 2)
        Rectangle corners (Y, X, pixels): ``[window, zor]``.
    """

    def rect(y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
        return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)

    (wy, wx), (zy, zx) = tile.window, tile.zor
    h, w = grid.shape
    return [
        rect(wy.start, min(wy.stop, h), wx.start, min(wx.stop, w)),
        rect(zy.start, zy.stop, zx.start, zx.stop),
    ]


def line_width(grid: TileGrid) -> float:
    """Overlay line width in data pixels, readable at full view of the image."""
    return max(1.0, max(grid.shape) / 400)


def placement(image_layer: Any) -> dict[str, Any]:
    """Scale and translate of the image layer's spatial axes, so overlays line up."""
    return {"scale": tuple(image_layer.scale[-2:]), "translate": tuple(image_layer.translate[-2:])}
