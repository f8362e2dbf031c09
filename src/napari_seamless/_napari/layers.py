"""Overlay and result layers: the ZoR grid, the halo box, the live labels pyramid.

Functions here build layer *data* from a :class:`~napari_seamless.grid.TileGrid`; the
widget adds or updates the layers on the GUI thread. Only napari's public API is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..grid import Tile, TileGrid

OVERLAY_PREFIX = "seamless "  # every layer the plugin draws over an image (not a result)
GRID_NAME = "seamless ZoR grid"
HALO_NAME = "seamless halo"
GRID_COLOR = "yellow"
HALO_COLOR = "cyan"


def is_overlay(layer: Any) -> bool:
    """True for a layer the plugin draws (grid, halo, tile status, QA maps): not an input."""
    return str(getattr(layer, "name", "")).startswith(OVERLAY_PREFIX)


def grid_lines(grid: TileGrid) -> np.ndarray:
    """ZoR boundary lines of a grid's (Y, X) axes as 2D napari Vectors data.

    For a 3D grid the lines are those of its last two axes: a 2D layer over a volume
    shows them on whichever slice is current.

    Returns
    -------
    numpy.ndarray, shape (n_lines, 2, 2), float
        One ``[start, direction]`` pair (Y, X, pixels) per line: a horizontal line at
        every row boundary and a vertical one at every column boundary, image edges
        included, so ``n_lines = (rows + 1) + (cols + 1)``.
    """
    if grid.ndim not in (2, 3):
        raise ValueError("the grid overlay is drawn for 2D images and 3D volumes")
    h, w = grid.shape[-2:]
    rows = [[[y, 0.0], [0.0, w]] for y in grid.boundaries(grid.ndim - 2)]
    cols = [[[0.0, x], [h, 0.0]] for x in grid.boundaries(grid.ndim - 1)]
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

    (wy, wx), (zy, zx) = tile.window[-2:], tile.zor[-2:]
    h, w = grid.shape[-2:]
    return [
        rect(wy.start, min(wy.stop, h), wx.start, min(wx.stop, w)),
        rect(zy.start, zy.stop, zx.start, zx.stop),
    ]


def line_width(grid: TileGrid) -> float:
    """Overlay line width in data pixels, readable at full view of the image."""
    return _width(grid.shape)


def _width(shape: Any) -> float:
    """Line width in data pixels for a 2D ``shape``: 1 px per 400 px of its long side."""
    return max(1.0, max(shape[-2:]) / 400)


def placement(image_layer: Any, ndim: int = 2) -> dict[str, Any]:
    """Scale and translate of the image layer's last ``ndim`` axes, so overlays line up."""
    return {
        "scale": tuple(image_layer.scale[-ndim:]),
        "translate": tuple(image_layer.translate[-ndim:]),
    }


def placement_of(image_layer: Any, choice: Any) -> dict[str, Any]:
    """Scale and translate of a result of ``choice.labels_shape`` over ``image_layer``.

    The image's axes without its channel axis (an RGB layer has none in its scale), so a
    stack's labels line up plane by plane.
    """
    scale, translate = list(image_layer.scale), list(image_layer.translate)
    if "C" in choice.axes and not image_layer.rgb:
        c = choice.axes.index("C")
        del scale[c], translate[c]
    return {"scale": tuple(scale), "translate": tuple(translate)}


# --- seam QA layers: the |difference| map on a log scale, its legend, the error map ---

LOG_FLOOR = 1e-9  # |difference| below this shows as the floor (float32 rounding is ~1e-7)
LOG_LIMITS = (-9.0, 0.0)  # log10 of the floor and of the largest possible difference
LEGEND_TICKS = ("<=1e-9", "1e-6", "1e-3", "1")


def log_difference(difference: np.ndarray) -> np.ndarray:
    """``log10(max(|difference|, 1e-9))`` as float32: an Image layer's data (LOG_LIMITS)."""
    return np.log10(np.maximum(np.abs(difference), LOG_FLOOR)).astype(np.float32)


def legend_rgba(width: int = 256, height: int = 12, colormap: str = "inferno") -> np.ndarray:
    """A horizontal colour bar of ``colormap`` as ``(height, width, 4)`` uint8 RGBA."""
    from napari.utils.colormaps import ensure_colormap

    colors = ensure_colormap(colormap).map(np.linspace(0.0, 1.0, width))
    row = (np.clip(colors, 0, 1) * 255).astype(np.uint8)
    return np.repeat(row[None], height, axis=0)


def error_colormap() -> Any:
    """Labels colormap of the error map: 1 (label differs) red, everything else clear."""
    from napari.utils import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "red"})


def error_marks(error_map: np.ndarray, most: int = 2000) -> np.ndarray:
    """Where to draw a ring: the differing pixels of ``error_map`` (at most ``most``, spread).

    Returns
    -------
    numpy.ndarray, shape (n, 2), float
        Pixel centres (Y, X) in the map's own coordinates.
    """
    where = np.argwhere(np.asarray(error_map) != 0).astype(float)
    if len(where) > most:
        where = where[np.linspace(0, len(where) - 1, most).astype(int)]
    return where.reshape(-1, 2)


def visible_box(center: Any, zoom: float, canvas_size: Any) -> np.ndarray:
    """World corners ``[[y0, x0], [y1, x1]]`` of what a 2D canvas shows.

    Parameters
    ----------
    center : sequence of float
        Camera centre in world units; the last two are (Y, X).
    zoom : float
        Screen pixels per world unit.
    canvas_size : sequence of int
        Canvas (height, width) in screen pixels.
    """
    c = np.asarray(center, dtype=float)[-2:]
    half = np.asarray(canvas_size, dtype=float)[-2:] / (2.0 * float(zoom))
    return np.array([c - half, c + half])


def camera_of(viewer: Any) -> Any:
    """The viewer's camera model (``viewer.scene.camera`` from napari 0.9, else ``.camera``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def visible_data_box(viewer: Any, image_layer: Any) -> np.ndarray:
    """Data-pixel corners ``[[y0, x0], [y1, x1]]`` of what the canvas shows of ``image_layer``.

    The camera's visible world box (:func:`visible_box`) mapped through the layer's
    transform; not clipped to the image (it may lie partly or wholly outside).
    """
    camera = camera_of(viewer)
    world = visible_box(camera.center, camera.zoom, viewer.canvas.size)
    data = np.array([image_layer.world_to_data(w) for w in world])[:, -2:]
    return np.array([data.min(axis=0), data.max(axis=0)])


def visible_slices(viewer: Any, image_layer: Any, shape: Any) -> tuple[slice, ...] | None:
    """What the canvas shows of an image of spatial ``shape``, as pixel slices; None if none.

    ``shape`` is (Y, X), or (Z, Y, X) for a volume shown slice by slice: then the Z slice
    is the current one (one pixel thick).
    """
    lo, hi = visible_data_box(viewer, image_layer)
    lo = [max(0, int(np.floor(v))) for v in lo]
    hi = [min(int(n), int(np.ceil(v))) for v, n in zip(hi, shape[-2:], strict=True)]
    if any(b <= a for a, b in zip(lo, hi, strict=True)):
        return None
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    if len(shape) == 3:
        z = int(np.round(image_layer.world_to_data(viewer.dims.point)[-3]))
        if not 0 <= z < shape[0]:
            return None
        box = (slice(z, z + 1), *box)
    return box


# --- tile status: one label pixel per ZoR, drawn over the result while a run goes ---

STATUS_NAME = "seamless tile status"
PENDING, RUNNING, DONE, FAILED = 1, 2, 3, 4
STATUS_COLORS = {
    PENDING: (0.55, 0.55, 0.55, 0.45),  # dimmed: not computed yet
    RUNNING: (1.0, 0.85, 0.0, 0.55),  # in the model now
    DONE: (0.0, 0.0, 0.0, 0.0),  # clear: the result shows through
    FAILED: (1.0, 0.1, 0.1, 0.65),
}


def status_rgba(status: np.ndarray) -> np.ndarray:
    """The tile status codes as an RGBA image: ``(*grid_shape, 4)`` uint8, one pixel per tile.

    Colours from :data:`STATUS_COLORS` (an Image layer of a few hundred pixels is cheap to
    add and to update while tiles land; a Labels layer costs a second to add).
    """
    lut = np.zeros((256, 4), dtype=np.uint8)
    for code, rgba in STATUS_COLORS.items():
        lut[code] = np.round(np.asarray(rgba) * 255)
    return lut[np.asarray(status, dtype=np.uint8)]


def status_placement(image_layer: Any, grid: TileGrid) -> dict[str, Any]:
    """Scale and translate that lay one status pixel over each ZoR of ``grid``.

    A status pixel ``k`` covers image pixels ``k*Z .. (k+1)*Z - 1`` (Z the ZoR size); the
    last row and column reach past the image edge by what the F-padding adds.
    """
    place = placement(image_layer, grid.ndim)
    zor = np.asarray(grid.zor_size, dtype=float)
    scale = np.asarray(place["scale"], dtype=float)
    translate = np.asarray(place["translate"], dtype=float) + (zor / 2.0 - 0.5) * scale
    return {"scale": tuple(zor * scale), "translate": tuple(translate)}


def line_width_for(image_layer: Any) -> float:
    """Overlay line width in data pixels for ``image_layer`` (1 px when there is none)."""
    if image_layer is None:
        return 1.0
    shape = image_layer.data[0].shape if image_layer.multiscale else image_layer.data.shape
    return _width(shape)


def metrics_text(result_name: str, ref: Any, report: Any) -> str:
    """The metrics panel: reference, RMSE / ME / NME (paper Eqs. 3-5), max |diff|, runtime."""
    c = report.comparison
    if ref.whole:
        where = "whole image"
    else:
        where = "region " + ",".join(f"{s.start}:{s.stop}" for s in ref.region)
    runtime = report.relative_runtime
    rel = "n/a" if not np.isfinite(runtime) else f"{runtime:.2f}x"
    if not ref.whole and np.isfinite(runtime):
        rel += " (reference scaled by pixels)"
    verdict = "EXACT: equals whole-image inference" if c.exact else f"NOT EXACT: ME {c.me}"
    return (
        f"{result_name}\nvs reference on {where} ({c.pixels} px)\n"
        f"RMSE {c.rmse:.3g}   ME {c.me}   NME {c.nme:.3g}\n"
        f"max |diff| {c.max_abs:.3g}\nruntime {rel} of whole-image\n{verdict}"
    )
