"""Instance labels from semantic labels, tile by tile, equal to whole-image labelling.

A semantic result (0 = background, 1 = nucleus, ...) says which pixels are objects; an
instance result gives each object its own integer. Both methods here work on the ZoR
tiles of an inference run (or any grid of ZoRs from the origin with stride = ZoR) and give
the same partition of the image as labelling the whole image at once: the labels may be
numbered differently, the objects are the same (:func:`~napari_seamless.qa.same_partition`).

``method="components"``
    Connected components of the foreground with full connectivity (8-neighbourhood in 2D,
    26 in 3D). Each ZoR is labelled on its own with :func:`scipy.ndimage.label`; the
    labels of every pair of foreground pixels that touch across a ZoR border (diagonal
    touches included) are joined with a union-find, and the result is renumbered 1..N.
    Objects of any size.

``method="watershed"``
    The components, each split along the watershed lines of its distance transform, for
    touching nuclei (:func:`watershed_labels`). Every step depends on one component alone:
    the distance of a pixel to the nearest pixel outside its component (the image is
    surrounded by background), the peaks of that distance within ``min_distance`` pixels
    *inside the component*, and a flood from those peaks that never leaves it. So a tile
    is exact as soon as its window holds, whole, every component that meets its ZoR: the
    window grows from ``ZoR + 32`` px on each side, doubling, until it does, and a component
    that reaches more than ``max_object`` px past a ZoR is refused
    (:class:`ObjectTooLargeError`). An instance computed in several tiles is found again
    by its first pixel in raster order, so it gets one label.

One axis of a tile, image coordinates (pixels)::

    0      w0           z0          z1           w1                 n
    |------[------------|###########|------------]------------------|
           ^ window (grown until every component meeting the ZoR is inside it)
                        ^ ZoR: the labels written for this tile

Only numpy and :mod:`scipy.ndimage`; no torch, no Qt. The input may be a numpy array or a
zarr array (read one window at a time), the output a numpy or zarr array written one ZoR
at a time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from .errors import ArgumentError, ArgumentTypeError, SeamlessError
from .grid import TileGrid

__all__ = [
    "InstanceError",
    "InstanceResult",
    "ObjectTooLargeError",
    "label_instances",
    "watershed_labels",
]

Method = Literal["components", "watershed"]
METHODS = ("components", "watershed")

#: default ``min_distance`` of the watershed (pixels): peaks of the distance transform
#: closer than this (per axis) within one component seed one object
MIN_DISTANCE = 7
#: default ``max_object`` (pixels): how far a component may reach past a ZoR
MAX_OBJECT = 1024
#: the first halo of a watershed window (pixels per side); doubled while too small
FIRST_HALO = 32


class InstanceError(SeamlessError, ValueError):
    """Instance labels cannot be computed as asked; the message says why and what to do."""


class ObjectTooLargeError(InstanceError):
    """A component reaches further past its ZoR than the watershed's window may grow."""


@dataclass(frozen=True)
class InstanceResult:
    """Instance labels and how they were made (see :func:`label_instances`).

    Attributes
    ----------
    labels : array
        Shape ``(Y, X)`` or ``(Z, Y, X)`` as the input; 0 = background, objects 1..N.
        The ``out`` array when one was given, else a new ``uint32`` numpy array.
    count : int
        N, the number of objects.
    method : {"components", "watershed"}
        How the foreground was split into objects.
    zor : tuple of int
        ZoR size per axis in pixels (the whole image for a single tile).
    tiles : int
        Number of ZoR tiles.
    largest_window : tuple of int
        The largest window read for one tile, pixels per axis: the ZoR for
        ``"components"``, the ZoR plus the halo the objects needed for ``"watershed"``.
    """

    labels: Any
    count: int
    method: str
    zor: tuple[int, ...]
    tiles: int
    largest_window: tuple[int, ...]


# --------------------------------------------------------------------------- checks


def _check_semantic(semantic: Any) -> Any:
    """``semantic`` as an array-like with ``shape``, ``dtype``, ``ndim`` and slicing."""
    if isinstance(semantic, (str, bytes)) or not hasattr(semantic, "__getitem__"):
        raise ArgumentTypeError(
            f"semantic must be an integer array (numpy or zarr), got {type(semantic).__name__}"
        )
    if not all(hasattr(semantic, a) for a in ("shape", "dtype", "ndim")):
        semantic = np.asarray(semantic)
    dtype = np.dtype(semantic.dtype)
    if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise ArgumentTypeError(
            f"semantic labels must be integers or booleans, got {dtype}: pass class labels "
            "(e.g. from segment()), not scores or probabilities"
        )
    if semantic.ndim not in (2, 3):
        raise ArgumentError(
            f"semantic must be 2D (Y, X) or 3D (Z, Y, X), got shape {tuple(semantic.shape)}"
        )
    if any(int(n) < 1 for n in semantic.shape):
        raise ArgumentError(f"semantic has an empty axis: shape {tuple(semantic.shape)}")
    return semantic


def _check_zor(zor: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The ZoR per axis, clipped to the image; ``None`` is the whole image."""
    if zor is None:
        return shape
    values = (zor,) * len(shape) if np.isscalar(zor) else tuple(zor)
    if len(values) != len(shape) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
    ):
        raise ArgumentError(
            f"zor must be a positive integer or one per axis ({len(shape)} axes), got {zor!r}"
        )
    if any(v < 1 for v in values):
        raise ArgumentError(f"zor must be positive pixels per axis, got {zor!r}")
    return tuple(min(int(v), n) for v, n in zip(values, shape, strict=True))


def _check_out(out: Any, shape: tuple[int, ...]) -> Any:
    if out is None:
        return np.zeros(shape, dtype=np.uint32)
    if not all(hasattr(out, a) for a in ("shape", "dtype", "__setitem__", "__getitem__")):
        raise ArgumentTypeError(
            f"out must be a writable array (numpy or zarr), got {type(out).__name__}"
        )
    dtype = np.dtype(out.dtype)
    if tuple(out.shape) != shape:
        raise ArgumentError(
            f"out has shape {tuple(out.shape)} but the image has {shape}; give an array "
            "of the image's shape"
        )
    if not np.issubdtype(dtype, np.integer) or dtype.itemsize < 4:
        raise ArgumentError(
            f"out has dtype {dtype}, which cannot hold the labels; use uint32 (or int32, "
            "uint64, int64)"
        )
    return out


def _foreground(block: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    block = np.asarray(block)
    return block > 0 if classes is None else np.isin(block, classes)


def _structure(ndim: int) -> np.ndarray:
    """Full connectivity: every pixel of the 3^ndim cube is a neighbour."""
    return np.ones((3,) * ndim, dtype=bool)


# --------------------------------------------------------------------------- public


def label_instances(
    semantic: Any,
    zor: int | Sequence[int] | None = None,
    *,
    method: Method = "components",
    foreground: Iterable[int] | None = None,
    min_distance: int = MIN_DISTANCE,
    max_object: int = MAX_OBJECT,
    out: Any = None,
    progress: Callable[[int, int], Any] | None = None,
) -> InstanceResult:
    """Instance labels of the foreground of ``semantic``, computed one ZoR tile at a time.

    The result is the same partition as labelling the whole image at once (``zor=None``),
    whatever the ZoR: only the numbering of the objects may differ.

    Parameters
    ----------
    semantic : array-like, shape (Y, X) or (Z, Y, X)
        Semantic labels, integer or boolean (numpy, or zarr read one window at a time).
    zor : int or sequence of int, optional
        ZoR size in pixels (one value, or one per axis), normally the ZoR of the inference
        run (``grid.zor_size``). The tiles are laid out from the origin with stride = ZoR;
        the image need not be a multiple of it. ``None`` (default): one tile, the whole
        image.
    method : {"components", "watershed"}
        ``"components"``: connected components with full connectivity (8 neighbours in
        2D, 26 in 3D). ``"watershed"``: each component split along the watershed lines
        of its Euclidean distance transform, for touching objects (see
        :func:`watershed_labels`).
    foreground : iterable of int, optional
        The classes that are objects; default every label > 0.
    min_distance : int
        Watershed only: a pixel seeds an object when its distance to the background is
        the largest within ``min_distance`` pixels along every axis (a cube of side
        ``2 * min_distance + 1``) inside its component (default 7). Larger values split
        less.
    max_object : int
        Watershed only: how far, in pixels per axis, a component may reach past a ZoR
        (default 1024).
        The window of a tile grows (doubling from 32 px) until it holds every component
        that meets the ZoR, up to this halo.
    out : array, optional
        Writable integer array of the image's shape (numpy or zarr), at least 32 bits,
        written one ZoR at a time. Default: a new ``uint32`` numpy array. With
        ``"components"`` it first holds provisional labels and is rewritten in a second
        pass.
    progress : callable, optional
        Called as ``progress(done, total)`` after each step: one per tile for
        ``"watershed"``, two per tile (label, renumber) for ``"components"``. An
        exception raised in it stops the labelling (``out`` is then partly written).

    Returns
    -------
    InstanceResult
        ``labels`` (0 = background, objects 1..N consecutive) and ``count`` (N).

    Raises
    ------
    ArgumentTypeError
        If ``semantic`` is not an integer or boolean array, or ``out`` is not an array.
    ArgumentError
        If ``semantic`` is not 2D or 3D, or ``zor``, ``method``, ``min_distance``,
        ``max_object`` or ``out`` cannot work.
    ObjectTooLargeError
        Watershed only: a component reaches more than ``max_object`` pixels past a ZoR.

    Examples
    --------
    >>> import numpy as np
    >>> semantic = np.zeros((6, 9), np.uint8)
    >>> semantic[1:5, 1:3] = semantic[2, 4:8] = 1
    >>> result = label_instances(semantic, zor=4)
    >>> result.count, result.labels.dtype
    (2, dtype('uint32'))
    """
    semantic = _check_semantic(semantic)
    shape = tuple(int(n) for n in semantic.shape)
    if method not in METHODS:
        raise ArgumentError(f"method must be 'components' or 'watershed', got {method!r}")
    zor_t = _check_zor(zor, shape)
    for name, value in (("min_distance", min_distance), ("max_object", max_object)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ArgumentError(f"{name} must be a positive number of pixels, got {value!r}")
    classes = None if foreground is None else np.asarray(list(foreground))
    out = _check_out(out, shape)
    grid = TileGrid(shape, tile=zor_t, halo=0, factor=1)
    if method == "components":
        count = _components(semantic, grid, classes, out, progress)
        largest = zor_t
    else:
        count, largest = _watershed_tiles(
            semantic, grid, classes, int(min_distance), int(max_object), out, progress
        )
    return InstanceResult(
        labels=out,
        count=count,
        method=method,
        zor=zor_t,
        tiles=len(grid),
        largest_window=largest,
    )


def watershed_labels(mask: np.ndarray, *, min_distance: int = MIN_DISTANCE) -> np.ndarray:
    """Split the components of a boolean mask along their distance watershed, in one go.

    The whole-array form of ``label_instances(method="watershed")`` (which calls it on
    windows that hold every component they label whole). Four steps, each confined to
    one connected component (full connectivity):

    1. ``d2``: squared Euclidean distance (pixels^2) of each foreground pixel to the
       nearest background pixel, the array being surrounded by background
       (:func:`scipy.ndimage.distance_transform_edt` on the mask padded by one pixel).
       The nearest pixel outside a component is always background, so ``d2`` of a
       component depends on that component alone.
    2. Peaks: pixels whose ``d2`` is the largest of their component within a cube of side
       ``2 * min_distance + 1`` (:func:`scipy.ndimage.maximum_filter` of the component's
       ``d2`` alone). Every component has at least one (its highest pixel).
    3. Markers: connected groups of peaks, numbered in raster order of their first pixel.
    4. Flood: descending ``d2`` level by level; at each level the unlabelled pixels at or
       above it take, round after round until nothing changes, the label of their
       labelled neighbour of highest ``d2`` (ties: the first neighbour in a fixed order of
       offsets). The flood stays in its component, and the result depends neither on
       where the component sits nor on the other components.

    Parameters
    ----------
    mask : numpy.ndarray of bool, shape (Y, X) or (Z, Y, X)
        Foreground.
    min_distance : int
        Half-size of the peak neighbourhood in pixels (>= 1).

    Returns
    -------
    numpy.ndarray of int32, same shape
        0 = background, objects 1..K in raster order of their marker's first pixel.

    Raises
    ------
    ArgumentError
        If ``mask`` is not 2D or 3D, or ``min_distance`` is not a positive integer.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim not in (2, 3):
        raise ArgumentError(f"mask must be 2D (Y, X) or 3D (Z, Y, X), got shape {mask.shape}")
    if not isinstance(min_distance, (int, np.integer)) or min_distance < 1:
        raise ArgumentError(
            f"min_distance must be a positive number of pixels, got {min_distance!r}"
        )
    components, n = ndimage.label(mask, structure=_structure(mask.ndim))
    if n == 0:
        return np.zeros(mask.shape, np.int32)
    d2 = _squared_distance(mask)
    markers = _markers(d2, components, int(min_distance))
    return _flood(d2, markers, mask)


# --------------------------------------------------------------------------- components


def _components(
    semantic: Any,
    grid: TileGrid,
    classes: np.ndarray | None,
    out: Any,
    progress: Callable[[int, int], Any] | None,
) -> int:
    """Connected components tile by tile: label, join across borders, renumber."""
    ndim, total = grid.ndim, 2 * len(grid)
    structure = _structure(ndim)
    # faces[tile][axis] = (first plane, last plane) of the tile's provisional labels
    faces: dict[tuple[int, ...], list[tuple[np.ndarray, np.ndarray]]] = {}
    offset = 0
    for step, tile in enumerate(grid, 1):
        mask = _foreground(semantic[tile.zor], classes)
        lab, n = ndimage.label(mask, structure=structure)
        lab = lab.astype(np.int64)
        lab[lab > 0] += offset
        offset += n
        out[tile.zor] = lab
        faces[tile.grid_index] = [
            (np.take(lab, 0, axis=a), np.take(lab, -1, axis=a)) for a in range(ndim)
        ]
        if progress is not None:
            progress(step, total)
    parent = np.arange(offset + 1, dtype=np.int64)
    for a, b in _border_pairs(grid, faces):
        _union(parent, a, b)
    roots = _roots(parent)
    # renumber 1..N by the smallest provisional label of each object (0 stays 0)
    is_root = roots == np.arange(offset + 1)
    is_root[0] = False
    number = np.zeros(offset + 1, dtype=np.int64)
    number[is_root] = np.arange(1, int(is_root.sum()) + 1)
    lut = number[roots].astype(np.dtype(out.dtype))
    for step, tile in enumerate(grid, len(grid) + 1):
        if offset:
            out[tile.zor] = lut[np.asarray(out[tile.zor])]
        if progress is not None:
            progress(step, total)
    return int(is_root.sum())


def _border_pairs(
    grid: TileGrid, faces: dict[tuple[int, ...], list[tuple[np.ndarray, np.ndarray]]]
) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Label pairs of foreground pixels that touch across each ZoR border.

    For every border between tile rows ``k - 1`` and ``k`` along ``axis``, the last plane
    of the tiles before it and the first plane of the tiles after it are assembled over
    the whole image; a pixel touches the pixels of the other plane at offsets
    ``{-1, 0, 1}`` along each remaining axis (full connectivity).
    """
    ndim, gshape = grid.ndim, grid.grid_shape
    for axis in range(ndim):
        others = [a for a in range(ndim) if a != axis]
        for k in range(1, gshape[axis]):

            def plane(row: int, side: int, axis: int = axis, others: list[int] = others) -> Any:
                blocks = np.empty([gshape[a] for a in others], dtype=object)
                for rest in product(*(range(gshape[a]) for a in others)):
                    gi = list(rest)
                    gi.insert(axis, row)
                    blocks[rest] = faces[tuple(gi)][axis][side]
                return np.block(blocks.tolist()) if blocks.ndim else blocks[()]

            before, after = plane(k - 1, 1), plane(k, 0)
            for shift in product((-1, 0, 1), repeat=ndim - 1):
                src = tuple(
                    slice(max(-s, 0), n - max(s, 0))
                    for s, n in zip(shift, before.shape, strict=True)
                )
                dst = tuple(
                    slice(max(s, 0), n - max(-s, 0))
                    for s, n in zip(shift, after.shape, strict=True)
                )
                a, b = before[src], after[dst]
                touch = (a > 0) & (b > 0)
                if touch.any():
                    yield a[touch], b[touch]


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the sets of every pair ``(a[i], b[i])`` (union by smaller root)."""
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    for x, y in pairs.tolist():
        rx, ry = _find(parent, x), _find(parent, y)
        if rx != ry:
            lo, hi = (rx, ry) if rx < ry else (ry, rx)
            parent[hi] = lo


def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = int(parent[root])
    while parent[x] != root:  # path compression
        parent[x], x = root, int(parent[x])
    return root


def _roots(parent: np.ndarray) -> np.ndarray:
    """The root of every element (vectorised pointer jumping)."""
    roots = parent.copy()
    while True:
        nxt = roots[roots]
        if np.array_equal(nxt, roots):
            return roots
        roots = nxt


# --------------------------------------------------------------------------- watershed


def _squared_distance(mask: np.ndarray) -> np.ndarray:
    """Squared EDT (int64, pixels^2) of ``mask``, the outside counted as background."""
    padded = np.pad(mask, 1)
    dist = ndimage.distance_transform_edt(padded)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    return np.rint(dist[inner] ** 2).astype(np.int64)


def _markers(d2: np.ndarray, components: np.ndarray, min_distance: int) -> np.ndarray:
    """Peaks of ``d2`` within ``min_distance`` inside each component, grouped and numbered."""
    peaks = np.zeros(d2.shape, dtype=bool)
    size = 2 * min_distance + 1
    for i, box in enumerate(ndimage.find_objects(components), 1):
        if box is None:
            continue
        grown = tuple(
            slice(max(s.start - min_distance, 0), min(s.stop + min_distance, n))
            for s, n in zip(box, d2.shape, strict=True)
        )
        inside = components[grown] == i
        own = np.where(inside, d2[grown], 0)
        top = ndimage.maximum_filter(own, size=size, mode="constant", cval=0)
        peaks[grown] |= inside & (own == top)
    markers, _ = ndimage.label(peaks, structure=_structure(d2.ndim))
    return markers


def _flood(d2: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grow ``markers`` over ``mask`` by descending ``d2`` (see :func:`watershed_labels`)."""
    ndim = mask.ndim
    pad = ((1, 1),) * ndim
    padded = tuple(n + 2 for n in mask.shape)
    m = np.pad(mask, pad).ravel()
    height = np.where(m, np.pad(d2, pad).ravel(), -1)
    lab = np.pad(markers.astype(np.int32), pad).ravel()
    strides = np.cumprod((1, *padded[::-1][:-1]))[::-1]
    offsets = np.array(
        [int(np.dot(o, strides)) for o in product((-1, 0, 1), repeat=ndim) if any(o)],
        dtype=np.int64,
    )
    todo = np.flatnonzero(m & (lab == 0))
    if todo.size:
        order = np.argsort(-height[todo], kind="stable")
        todo = todo[order]
        levels, starts = np.unique(-height[todo], return_index=True)
        bounds = [*starts.tolist(), todo.size]
        pending = np.empty(0, dtype=np.int64)
        for j in range(levels.size):
            pending = np.concatenate([pending, todo[bounds[j] : bounds[j + 1]]])
            while pending.size:
                near = pending[:, None] + offsets[None, :]
                near_lab = lab[near]
                near_h = np.where(near_lab > 0, height[near], -1)
                best = np.argmax(near_h, axis=1)
                rows = np.arange(pending.size)
                got = near_h[rows, best] >= 0
                if not got.any():
                    break
                lab[pending[got]] = near_lab[rows, best][got]
                pending = pending[~got]
    inner = tuple(slice(1, -1) for _ in range(ndim))
    return lab.reshape(padded)[inner]


def _watershed_tiles(
    semantic: Any,
    grid: TileGrid,
    classes: np.ndarray | None,
    min_distance: int,
    max_object: int,
    out: Any,
    progress: Callable[[int, int], Any] | None,
) -> tuple[int, tuple[int, ...]]:
    """Watershed instances tile by tile; returns the count and the largest window."""
    shape, ndim = grid.shape, grid.ndim
    structure = _structure(ndim)
    ids: dict[int, int] = {}  # first pixel (flat index in the image) -> label
    expiry: list[tuple[int, int]] = []  # (last tile, C order, it can appear in; first pixel)
    count = 0
    largest = (0,) * ndim
    dtype = np.dtype(out.dtype)
    for step, tile in enumerate(grid, 1):
        window, lab, inner = _whole_window(
            semantic, tile.zor, shape, classes, structure, max_object
        )
        largest = tuple(max(a, s.stop - s.start) for a, s in zip(largest, window, strict=True))
        crop = tuple(
            slice(z.start - w.start, z.stop - w.start)
            for z, w in zip(tile.zor, window, strict=True)
        )
        block = np.zeros(tile.zor_shape, dtype=np.int64)
        if inner.any():
            boxes = ndimage.find_objects(lab)
            keep = np.unique(lab[crop])
            keep = keep[keep > 0]
            sub_box = tuple(
                slice(
                    min(boxes[i - 1][a].start for i in keep),
                    max(boxes[i - 1][a].stop for i in keep),
                )
                for a in range(ndim)
            )
            sub = np.isin(lab[sub_box], keep)
            split = watershed_labels(sub, min_distance=min_distance)
            # each object's first pixel in raster order, in image coordinates: the same
            # in every window that holds its component whole
            values, first = np.unique(split.ravel(), return_index=True)
            values, first = values[values > 0], first[values > 0]
            coords = np.unravel_index(first, split.shape)
            corner = [w.start + s.start for w, s in zip(window, sub_box, strict=True)]
            key = np.ravel_multi_index(
                tuple(c + o for c, o in zip(coords, corner, strict=True)), shape
            )
            ends = _last_tiles(grid, split, values, corner)
            placed = np.zeros(lab.shape, dtype=split.dtype)
            placed[sub_box] = split
            here = placed[crop]
            present = np.unique(here)
            present = present[present > 0]
            present = set(present.tolist())
            lut = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=np.int64)
            for v, k, e in zip(values.tolist(), key.tolist(), ends.tolist(), strict=True):
                if k not in ids and v in present:
                    count += 1
                    ids[k] = count
                    heapq.heappush(expiry, (e, k))
                lut[v] = ids.get(k, 0)
            block = lut[here]
        out[tile.zor] = block.astype(dtype, copy=False)
        while expiry and expiry[0][0] <= tile.index:  # objects no later tile can hold
            del ids[heapq.heappop(expiry)[1]]
        if progress is not None:
            progress(step, len(grid))
    return count, largest


def _last_tiles(
    grid: TileGrid, split: np.ndarray, values: np.ndarray, corner: Sequence[int]
) -> np.ndarray:
    """Per object of ``split``: the last tile (C order) its bounding box meets."""
    boxes = ndimage.find_objects(split)
    ends = []
    for v in values.tolist():
        box = boxes[v - 1]
        last = tuple(
            min((c + s.stop - 1) // z, g - 1)
            for c, s, z, g in zip(corner, box, grid.zor_size, grid.grid_shape, strict=True)
        )
        ends.append(int(np.ravel_multi_index(last, grid.grid_shape)))
    return np.asarray(ends, dtype=np.int64)


def _whole_window(
    semantic: Any,
    zor: tuple[slice, ...],
    shape: tuple[int, ...],
    classes: np.ndarray | None,
    structure: np.ndarray,
    max_object: int,
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """The window around ``zor`` that holds whole every component meeting ``zor``.

    Returns the window (image slices), its component labels and whether each label meets
    the ZoR (a boolean per label, index 0 unused).
    """
    halo = min(FIRST_HALO, max_object)
    while True:
        window = tuple(
            slice(max(z.start - halo, 0), min(z.stop + halo, n))
            for z, n in zip(zor, shape, strict=True)
        )
        mask = _foreground(semantic[window], classes)
        lab, n = ndimage.label(mask, structure=structure)
        crop = tuple(
            slice(z.start - w.start, z.stop - w.start) for z, w in zip(zor, window, strict=True)
        )
        meets = np.zeros(n + 1, dtype=bool)
        meets[np.unique(lab[crop])] = True
        meets[0] = False
        cut = np.zeros(n + 1, dtype=bool)  # components touching a window side inside the image
        for a, (w, size) in enumerate(zip(window, shape, strict=True)):
            if w.start > 0:
                cut[np.take(lab, 0, axis=a)] = True
            if w.stop < size:
                cut[np.take(lab, -1, axis=a)] = True
        cut[0] = False
        if not (cut & meets).any():
            return window, lab, meets
        if halo >= max_object:
            where = ", ".join(f"{z.start}:{z.stop}" for z in zor)
            raise ObjectTooLargeError(
                f"a foreground component meeting the tile at {where} reaches more than "
                f"max_object={max_object} px past it, too large for the watershed; raise "
                "max_object, or use method='components' (objects of any size)"
            )
        halo = min(2 * halo, max_object)
