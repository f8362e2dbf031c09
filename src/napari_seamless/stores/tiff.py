"""A tiled, pyramidal BigTIFF streamed from a multiscale pyramid (e.g. OME-Zarr levels).

No torch, no Qt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArgumentError

__all__ = ["write_tiff_pyramid"]


def _tiles(level: Any, tile: tuple[int, int]) -> Iterator[np.ndarray]:
    """Tiles of ``level`` (``(*lead, Y, X)``) plane by plane, row-major, zero-padded.

    Reads one row of tiles (``tile[0]`` rows, the full width) of one plane at a time.
    """
    *lead, ny, nx = level.shape
    ty, tx = tile
    for idx in np.ndindex(*lead):
        for y0 in range(0, ny, ty):
            row = np.asarray(level[(*idx, slice(y0, min(y0 + ty, ny)), slice(None))])
            for x0 in range(0, nx, tx):
                part = row[:, x0 : x0 + tx]
                if part.shape == (ty, tx):
                    yield np.ascontiguousarray(part)
                else:
                    full = np.zeros((ty, tx), row.dtype)
                    full[: part.shape[0], : part.shape[1]] = part
                    yield full


def write_tiff_pyramid(
    levels: Sequence[Any],
    path: str | Path,
    *,
    axes: str,
    compression: str | None = "zlib",
    tile: Sequence[int] = (256, 256),
) -> Path:
    """Write a pyramid as a tiled BigTIFF, level 0 as the image and the rest as SubIFDs.

    Tiles are read from ``levels`` and handed to tifffile one at a time; at most one row of
    tiles (``tile[0]`` rows by the full width of one plane) is in memory, never a level.
    Level 0 is the main image (its planes are pages, one per leading index, e.g. one per
    channel); levels ``1..`` are the SubIFDs of each page with ``subfiletype=1`` (reduced
    resolution), as in tifffile's pyramid example. The axes are recorded in the image
    description, so ``tifffile.TiffFile(path).series[0].axes`` reads them back and
    ``series[0].levels`` lists the pyramid.

    Parameters
    ----------
    levels : sequence of array-like
        The pyramid, level 0 first, each of shape ``(*lead, Y_k, X_k)`` with the same
        leading axes (``()`` for labels, ``(C,)`` for probabilities, ``(Z,)`` for a
        volume written plane by plane) and one dtype; zarr or numpy arrays. A 3D
        pyramid that also halves Z does not fit: pass its level 0 alone. tifffile reads
        the levels back as one series for ``"yx"`` and ``"cyx"``.
    path : str or Path
        The TIFF file to write (replaced if it exists).
    axes : str
        Axis letters of level 0, e.g. ``"yx"``, ``"cyx"``, ``"zyx"`` (case-insensitive,
        ending in ``"yx"``).
    compression : str or None
        A tifffile compression (``"zlib"``, ``"zstd"``, ``"lzw"``, ...) or ``None``.
    tile : sequence of int
        TIFF tile shape ``(rows, columns)`` in pixels, multiples of 16.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ArgumentError
        If ``levels`` is empty, the levels disagree on leading axes or dtype, ``axes``
        does not fit, or ``tile`` is not two multiples of 16 (a :class:`ValueError` too).
    """
    import tifffile

    if not levels:
        raise ArgumentError("a TIFF pyramid needs at least one level")
    path = Path(path)
    first = levels[0]
    shape = tuple(int(s) for s in first.shape)
    dtype = np.dtype(first.dtype)
    if len(axes) != len(shape) or not axes.lower().endswith("yx"):
        raise ArgumentError(
            f"axes {axes!r} do not fit level 0 of shape {shape}: one letter per axis, "
            "ending in 'yx'"
        )
    lead = shape[:-2]
    for k, level in enumerate(levels):
        if tuple(level.shape[:-2]) != lead or np.dtype(level.dtype) != dtype:
            raise ArgumentError(
                f"level {k} has shape {tuple(level.shape)} and dtype {level.dtype}; every "
                f"level must have leading axes {lead} and dtype {dtype}"
            )
    tile_t = tuple(int(t) for t in tile)
    if len(tile_t) != 2 or any(t < 16 or t % 16 for t in tile_t):
        raise ArgumentError(f"tile must be two multiples of 16 (rows, columns), got {tile!r}")

    common = {
        "dtype": dtype,
        # every level carries the axes: tifffile reads SubIFD levels of a shaped series
        # only when each has its own shaped description
        "metadata": {"axes": axes.upper()},
        "tile": tile_t,
        "compression": compression,
        "photometric": "minisblack",
    }
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(
            _tiles(first, tile_t),
            shape=shape,
            subifds=len(levels) - 1,
            **common,
        )
        for level in levels[1:]:
            tw.write(
                _tiles(level, tile_t),
                shape=tuple(int(s) for s in level.shape),
                subfiletype=1,
                **common,
            )
    return path
