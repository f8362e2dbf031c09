"""A tiled, pyramidal BigTIFF streamed from a multiscale pyramid (e.g. OME-Zarr levels).

Every TIFF napari-seamless writes can carry its record, the marker that says what it is:
level 0's ImageDescription is tifffile's shaped JSON, to which the package adds its own key
(:data:`~napari_seamless.io.OWNER_KEY`)::

    {"shape": [2048, 2048], "axes": "YX",
     "napari_seamless": {"record_version": 1, "kind": "labels", "settings": {...}}}

:func:`read_tiff_record` reads it back from the first page alone (no pixels), so the
napari reader can tell its own label TIFFs from every other TIFF at once.

No torch, no Qt.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArgumentError
from ..io import OWNER_KEY

__all__ = ["TIFF_RECORD_VERSION", "plain_json", "read_tiff_record", "write_tiff_pyramid"]

#: version of the record written under :data:`~napari_seamless.io.OWNER_KEY`
TIFF_RECORD_VERSION = 1


def plain_json(value: Any) -> Any:
    """``value`` as plain JSON data, never failing: what a record can hold.

    Mappings become dicts with string keys, tuples and sets lists, numpy scalars numbers,
    small arrays (up to 64 elements) lists, paths strings, non-finite floats strings, and
    anything else its ``str``.

    Parameters
    ----------
    value : object
        Settings to record, e.g. a run's settings or a layer's metadata.

    Returns
    -------
    object
        JSON-serialisable data (dict, list, str, int, float, bool or None).
    """
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_json(v) for v in value]
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return plain_json(value.item())
    if isinstance(value, np.ndarray):
        if value.size <= 64:
            return plain_json(value.tolist())
        return f"array of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def read_tiff_record(path: str | Path) -> dict[str, Any] | None:
    """The napari-seamless record of a TIFF, or None when it has none (or is no TIFF).

    Only the file header and the first page are read, never pixels, so this is cheap
    enough to ask of any TIFF a user opens.

    Parameters
    ----------
    path : str or Path
        A file.

    Returns
    -------
    dict or None
        ``{"record_version": 1, "kind": "labels" | "image", "settings": {...}}`` as
        :func:`write_tiff_pyramid` wrote it; None for any other file, including an
        unreadable one (this function never raises).
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            description = tif.pages.first.description
    except Exception:  # noqa: BLE001 - not a TIFF, truncated, unreadable: no record
        return None
    if not description.lstrip().startswith("{"):
        return None
    try:
        meta = json.loads(description)
    except ValueError:
        return None
    record = meta.get(OWNER_KEY) if isinstance(meta, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        return None
    return record


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
    kind: str | None = None,
    settings: Mapping[str, Any] | None = None,
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
    kind : {"labels", "image"}, optional
        Write the package's record (the marker, see the module docstring) into level 0's
        description: ``"labels"`` makes the napari reader open the file as a Labels layer.
        None writes no record.
    settings : mapping, optional
        Settings recorded with ``kind`` (converted by :func:`plain_json`).

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
    first_meta = dict(common)
    if kind is not None:
        record = {"record_version": TIFF_RECORD_VERSION, "kind": str(kind)}
        record["settings"] = plain_json(dict(settings or {}))
        first_meta["metadata"] = {"axes": axes.upper(), OWNER_KEY: record}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(
            _tiles(first, tile_t),
            shape=shape,
            subifds=len(levels) - 1,
            **first_meta,
        )
        for level in levels[1:]:
            tw.write(
                _tiles(level, tile_t),
                shape=tuple(int(s) for s in level.shape),
                subfiletype=1,
                **common,
            )
    return path
